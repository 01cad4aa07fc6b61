"""The edge's one table from a domain error's kind to what the caller sees: status and code (the detail, Retry-After
and extra fields are the error's own). Codes are the API's contract (docs/api.md, the OpenAPI document): a kind
moves here, never its code. Only this module and the HTTP middleware build an ApiError."""

from __future__ import annotations

from chalicelib.platform.errors import ApiError, DomainError

# kind -> (status, code); a kind differs from its code where one code answers two situations with two statuses
ERRORS: dict[str, tuple[int, str]] = {
    "agent_not_ready": (400, "agent_not_ready"),
    "invalid_call_id": (400, "invalid_webhook"),
    "invalid_cursor": (400, "invalid_cursor"),
    "invalid_header": (400, "invalid_header"),
    "invalid_idempotency_key": (400, "invalid_idempotency_key"),
    "invalid_json": (400, "invalid_json"),
    "invalid_offer": (400, "invalid_offer"),
    "invalid_path": (400, "invalid_path"),
    "invalid_webhook": (400, "invalid_webhook"),
    "upstream_bad_request": (400, "upstream_bad_request"),
    "websocket_body_not_allowed": (400, "websocket_body_not_allowed"),
    "unauthorized": (401, "unauthorized"),
    "caller_id_not_allowed": (403, "caller_id_not_allowed"),
    "destination_not_allowed": (403, "destination_not_allowed"),
    "dialout_not_allowed": (403, "dialout_not_allowed"),
    "invalid_signature": (403, "invalid_signature"),
    "path_not_allowed": (403, "path_not_allowed"),
    "agent_not_found": (404, "agent_not_found"),
    "session_not_found": (404, "session_not_found"),
    "start_request_not_found": (404, "start_request_not_found"),
    "unknown_agent": (404, "unknown_agent"),
    "call_replayed": (409, "call_replayed"),
    "idempotency_in_progress": (409, "idempotency_in_progress"),
    "not_cancellable": (409, "not_cancellable"),
    "start_cancelled": (409, "start_cancelled"),
    "start_failed": (410, "start_failed"),
    "body_too_large": (413, "body_too_large"),
    "request_too_large": (413, "request_too_large"),
    "agent_required": (422, "agent_required"),
    "idempotency_key_reused": (422, "idempotency_key_reused"),
    "invalid_sip_uri": (422, "invalid_sip_uri"),
    "offer_request_data_not_allowed": (422, "offer_request_data_not_allowed"),
    "property_not_allowed": (422, "property_not_allowed"),
    "reserved_body_key": (422, "reserved_body_key"),
    "transport_not_allowed": (422, "transport_not_allowed"),
    "validation_error": (422, "validation_error"),
    "details_rate_limited": (429, "details_rate_limited"),
    "dialout_rate_limited": (429, "dialout_rate_limited"),
    "pcc_at_capacity": (429, "pcc_at_capacity"),
    "proxy_rate_limited": (429, "proxy_rate_limited"),
    "start_rate_limited": (429, "start_rate_limited"),
    "status_rate_limited": (429, "status_rate_limited"),
    "too_many_long_polls": (429, "too_many_long_polls"),
    "usage_budget_exceeded": (429, "usage_budget_exceeded"),
    "user_session_limit": (429, "user_session_limit"),
    "upstream_auth_failed": (502, "upstream_auth_failed"),
    "upstream_error": (502, "upstream_error"),
    "upstream_unavailable": (502, "upstream_unavailable"),
    "auth_unavailable": (503, "auth_unavailable"),
    "call_at_capacity": (503, "pcc_at_capacity"),
    "gateway_misconfigured": (503, "gateway_misconfigured"),
    "private_key_missing": (503, "private_key_missing"),
    "queue_full": (503, "queue_full"),
    "queue_unavailable": (503, "queue_unavailable"),
    "record_failed": (503, "record_failed"),
    "secret_unavailable": (503, "secret_unavailable"),
    "telephony_not_configured": (503, "telephony_not_configured"),
    "upstream_timeout": (504, "upstream_timeout"),
}
ERRORS.update({  # guests (docs/guests.md)
    "guest_access_disabled": (403, "guest_access_disabled"),
    "origin_not_allowed": (403, "origin_not_allowed"),
    "human_check_failed": (403, "human_check_failed"),
    "human_check_replayed": (403, "human_check_replayed"),
    "guest_not_allowed": (403, "guest_not_allowed"),
    "guest_tokens_rate_limited": (429, "guest_tokens_rate_limited"),
    "guest_starts_rate_limited": (429, "guest_starts_rate_limited"),
    "guest_budget_exceeded": (429, "guest_budget_exceeded"),
    "guest_capacity_reached": (429, "guest_capacity_reached"),
    "human_check_unavailable": (503, "human_check_unavailable"),
    "guest_access_misconfigured": (503, "guest_access_misconfigured"),
    "pcc_webhook_unverified": (401, "invalid_signature"),  # Pipecat Cloud's webhooks (docs/operations.md)
    "spend_limit_reached": (503, "spend_limit_reached"),  # the start gates (docs/operations.md)
    "billing_not_set": (503, "billing_not_set"),
    "agent_suspended": (503, "agent_suspended"),
    "starts_closed": (503, "starts_closed"),
    "admin_only": (403, "admin_only"),  # the admin API (docs/operations.md)
    "user_blocked": (403, "user_blocked"),
})
HEADERS: dict[str, dict[str, str]] = {"unauthorized": {"WWW-Authenticate": "Bearer"}}


def to_api_error(error: DomainError) -> ApiError:
    """The answer to a domain error; a kind the table lacks is a bug of ours: 500."""
    status, code = ERRORS.get(error.kind, (500, "internal_error"))
    if status >= 500 and error.kind not in ERRORS:
        return ApiError(500, "internal_error", "Internal error")
    headers = dict(HEADERS.get(error.kind, {}))
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return ApiError(status, code, error.detail, headers=headers, extra=error.extra)
