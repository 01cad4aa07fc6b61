"""The error type the API answers with (ApiError: JSON `{"detail": ..., "code": ...}` and a status), and the one the
domain raises (DomainError: what went wrong, no HTTP in it; the edge's table, chalicelib.api.errors, gives each
kind its status and code)."""

from __future__ import annotations

from chalice.app import ChaliceUnhandledError

from chalicelib.platform.shapes import JsonObject


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
        extra: JsonObject | None = None,
    ) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}  # more structured fields (e.g. `errors`); `detail` stays a readable string

    def body(self) -> JsonObject:
        return {"detail": self.detail, "code": self.code, **self.extra}


class DomainError(ChaliceUnhandledError):
    """A refusal decided below the edge, free of HTTP: `kind` names it, `detail` says it to a person. The HTTP
    middleware answers it through the edge's table (chalicelib.api.errors.ERRORS: kind -> status and code).

    `retry_after`: seconds after which trying again may succeed (the edge sends it as Retry-After); `extra`:
    structured fields the answer carries beside `detail` (e.g. a validation error's `errors`).
    Subclasses ChaliceUnhandledError only so Chalice lets it reach that middleware."""

    kind: str = "domain_error"

    def __init__(self, detail: str, *, retry_after: int | None = None, extra: JsonObject | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.extra = extra or {}


class Refused(DomainError):
    """A refusal named where it is raised: `Refused("unknown_agent", "Agent 'x' is not available")`."""

    def __init__(self, kind: str, detail: str, *, retry_after: int | None = None,
                 extra: JsonObject | None = None) -> None:
        super().__init__(detail, retry_after=retry_after, extra=extra)
        self.kind = kind


class TryLater(Refused):
    """A refusal a later try may pass: at capacity, a limit or a budget reached (the edge answers 429). Callers
    that retry on their own (a phone call's start) catch this and nothing else."""
