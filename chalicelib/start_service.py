"""POST /start: validate, apply policy, take a user slot, call Pipecat Cloud, record the session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from . import pcc_client, session_store
from .errors import ApiError
from .idempotency import check_key, run_once
from .models import StartRequest
from .observability import count, logger
from .pcc_client import PccCallError
from .request_parsing import parse_json_object, validation_detail
from .secrets_store import get_secrets
from .settings import get_settings
from .start_policy import PlannedStart, plan_start

SESSION_ID_HEADER = "X-Session-Id"


@dataclass
class HttpResult:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "headers": self.headers}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HttpResult:
        return cls(int(data["status"]), data["body"], dict(data.get("headers") or {}))


def parse_start_request(raw_body: bytes | None) -> StartRequest:
    data = parse_json_object(raw_body, max_bytes=2 * 1024 * 1024)
    try:
        return StartRequest.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", validation_detail(exc)) from None


def map_pcc_error(exc: PccCallError) -> ApiError:
    """Translate a failed PCC call into our error (status kept where the client can act on it)."""
    if exc.kind == "timeout":
        return ApiError(504, "upstream_timeout", "Pipecat Cloud did not answer in time")
    if exc.kind in ("unreachable", "invalid") or exc.status is None:
        return ApiError(502, "upstream_unavailable", "Pipecat Cloud could not be reached")
    if exc.status == 401:
        # Our key is wrong or revoked: an operator problem, not the caller's.
        logger.error("Pipecat Cloud rejected the gateway's key (401): check the secret")
        return ApiError(502, "upstream_auth_failed", "The gateway is misconfigured")
    if exc.status == 400 and exc.pcc_code == "PCC-1001":
        return ApiError(400, "agent_not_ready", exc.message)
    if exc.status == 400:
        return ApiError(400, "upstream_bad_request", exc.message)
    if exc.status == 404:
        return ApiError(404, "agent_not_found", exc.message)
    if exc.status == 413:
        return ApiError(413, "body_too_large", exc.message)
    if exc.status == 429:
        return ApiError(429, "pcc_at_capacity", "The agent is at capacity; try again shortly",
                        headers={"Retry-After": "5"})
    if exc.status >= 500:
        return ApiError(502, "upstream_error", f"Pipecat Cloud answered {exc.status}")
    return ApiError(502, "upstream_error", exc.message)


def client_response(transport: str, pcc: dict[str, Any]) -> HttpResult:
    """The body each transport's client accepts as-is (see ../shared/REFERENCE.md)."""
    session_id = str(pcc["sessionId"])
    headers = {SESSION_ID_HEADER: session_id}
    if transport == "websocket":
        ws_url = str(pcc["wsUrl"])
        if pcc.get("body"):
            ws_url += ("&" if "?" in ws_url else "?") + "body=" + quote(str(pcc["body"]), safe="")
        return HttpResult(200, {"wsUrl": ws_url, "token": pcc["token"]}, headers)
    body: dict[str, Any] = {"sessionId": session_id}
    if transport == "daily":
        body["dailyRoom"] = pcc.get("dailyRoom")
        body["dailyToken"] = pcc.get("dailyToken")
    if pcc.get("iceConfig"):
        body["iceConfig"] = pcc["iceConfig"]
    return HttpResult(200, body, headers)


def execute_start(user_id: str, plan: PlannedStart) -> HttpResult:
    """Take a slot, call PCC, record the session. The slot is given back on any failure."""
    settings = get_settings()
    if not session_store.reserve_slot(user_id, settings.user_session_limit):
        count("StartRejected", code="user_session_limit")
        raise ApiError(429, "user_session_limit",
                       f"You already have {settings.user_session_limit} active sessions; stop one first")
    try:
        keys = get_secrets()
        try:
            result = pcc_client.start(plan.agent, plan.pcc_request, keys.public_key.get_secret_value())
        except PccCallError as exc:
            error = map_pcc_error(exc)
            count("StartRejected", code=error.code)
            raise error from None
        session_id = str(result["sessionId"])
        try:
            session_store.record_session(
                user_id=user_id, session_id=session_id, agent=plan.agent, transport=plan.transport
            )
        except Exception:  # noqa: BLE001 - any storage failure: undo the start, nothing half-done
            logger.exception("recording the session failed; stopping it", extra={"session_id": session_id})
            _stop_quietly(plan.agent, session_id)
            raise ApiError(503, "record_failed", "The session could not be recorded; try again") from None
    except BaseException:
        session_store.release_slot(user_id)
        raise
    count("SessionsStarted")
    logger.info("session started", extra={"session_id": session_id, "agent": plan.agent,
                                          "transport": plan.transport, "user_id": user_id})
    return client_response(plan.transport, result)


def _stop_quietly(agent: str, session_id: str) -> None:
    try:
        private = get_secrets().private_key
        if private is not None:
            pcc_client.stop_session(agent, session_id, private.get_secret_value())
    except Exception:  # noqa: BLE001 - best effort; the reconciler and max duration are the backstop
        logger.warning("could not stop unrecorded session", extra={"session_id": session_id})


def start(user_id: str, raw_body: bytes | None, idempotency_key: str | None,
          lambda_context: Any = None) -> HttpResult:
    request = parse_start_request(raw_body)
    plan = plan_start(get_settings(), request, user_id)
    if not idempotency_key:
        return execute_start(user_id, plan)
    stored = run_once(
        user_id,
        check_key(idempotency_key),
        request.model_dump(mode="json"),
        lambda: execute_start(user_id, plan).as_dict(),
        lambda_context,
    )
    return HttpResult.from_dict(stored)
