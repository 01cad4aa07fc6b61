"""The edge's one table from a domain error's kind to what the caller sees: status and code (the detail is the
error's own). Codes are the API's contract (docs/api.md, the OpenAPI document): a kind moves here, never its code."""

from __future__ import annotations

from chalicelib.platform.errors import ApiError, DomainError

# kind -> (status, code)
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_cursor": (400, "invalid_cursor"),  # store.sessions.InvalidCursor
    "invalid_call_id": (400, "invalid_webhook"),  # store.call_records.InvalidCallId
    "call_replayed": (409, "call_replayed"),  # store.call_records.CallReplayed
}


def to_api_error(error: DomainError) -> ApiError:
    """The answer to a domain error; a kind the table lacks is a bug of ours: 500."""
    status, code = ERRORS.get(error.kind, (500, "internal_error"))
    return ApiError(status, code, error.detail if status < 500 else "Internal error")
