"""The one error type the API answers with: JSON `{"detail": ..., "code": ...}` and a status."""

from __future__ import annotations

from typing import Any

from chalice.app import ChaliceUnhandledError


class ApiError(ChaliceUnhandledError):
    """An error answered to the caller.

    Subclasses ChaliceUnhandledError so Chalice lets it reach our HTTP middleware, which turns it into
    a JSON response (see `chalicelib.platform.http`).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}  # more structured fields (e.g. `errors`); `detail` stays a readable string

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, **self.extra}
