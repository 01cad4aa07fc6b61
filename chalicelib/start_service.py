"""POST /start: validate, apply policy, take a user slot, call Pipecat Cloud, record the session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from . import capacity_queue, pcc_client, session_store
from .errors import ApiError
from .idempotency import check_key, run_once
from .models import StartRequest
from .observability import count, logger
from .pcc_client import PccCallError
from .pcc_responses import HttpResult, client_response, is_capacity_error, map_pcc_error
from .request_parsing import parse_json_object, validation_error
from .secrets_store import get_secrets
from .sessions_service import stop_quietly
from .settings import get_settings
from .start_policy import PlannedStart, plan_start


def parse_start_request(raw_body: bytes | None) -> StartRequest:
    data = parse_json_object(raw_body, max_bytes=2 * 1024 * 1024)
    try:
        return StartRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def execute_start(
    user_id: str,
    plan: PlannedStart,
    status_base: str = "/start",
    *,
    limit: int | None = None,
    queue_on_capacity: bool = True,
    shape: Callable[[str, dict[str, Any]], HttpResult] = client_response,
    read_timeout: float | None = None,
) -> HttpResult:
    """Take a slot, call PCC, record the session. The slot is given back on any failure; on a
    capacity error (429) the start is queued and keeps the slot (202), unless `queue_on_capacity` is
    off (telephony holds the caller instead). `shape` builds the success answer from PCC's."""
    settings = get_settings()
    limit = limit or settings.user_session_limit
    if not session_store.reserve_slot(user_id, limit):
        count("StartRejected", code="user_session_limit")
        raise ApiError(429, "user_session_limit",
                       f"You already have {limit} active sessions; stop one first")
    slot_ours = True
    try:
        keys = get_secrets()
        try:
            result = pcc_client.start(plan.agent, plan.pcc_request, keys.public_key.get_secret_value(),
                                      read_timeout=read_timeout)
        except PccCallError as exc:
            if is_capacity_error(exc) and queue_on_capacity and capacity_queue.enabled():
                try:
                    return capacity_queue.enqueue(user_id, plan, status_base)
                except capacity_queue.SlotHandedOver:
                    slot_ours = False  # the queued request frees it
                    raise
            error = map_pcc_error(exc)
            count("StartRejected", code=error.code)
            raise error from None
        session_id = str(result["sessionId"])
        try:
            session_store.record_session(session_store.session_item(
                user_id=user_id, session_id=session_id, agent=plan.agent, transport=plan.transport,
                extra=plan.record_extra or None))
        except Exception:  # noqa: BLE001 - any storage failure: undo the start, nothing half-done
            logger.exception("recording the session failed; stopping it", extra={"session_id": session_id})
            stop_quietly(plan.agent, session_id)
            raise ApiError(503, "record_failed", "The session could not be recorded; try again") from None
    except BaseException:
        if slot_ours:
            session_store.release_slot(user_id)
        raise
    count("SessionsStarted")
    logger.info("session started", extra={"session_id": session_id, "agent": plan.agent,
                                          "transport": plan.transport, "user_id": user_id})
    return shape(plan.transport, result)


def start(user_id: str, raw_body: bytes | None, idempotency_key: str | None, *,
          status_base: str = "/start", wait: int = 0) -> HttpResult:
    """POST /start. With `wait` > 0 a queued start is long-polled for up to `wait` seconds."""
    request = parse_start_request(raw_body)
    plan = plan_start(get_settings(), request, user_id)
    if not idempotency_key:
        result = execute_start(user_id, plan, status_base)
    else:
        result = HttpResult.from_dict(run_once(
            user_id,
            check_key(idempotency_key),
            request.model_dump(mode="json"),
            lambda: execute_start(user_id, plan, status_base).as_dict(),
        ))
    if result.status == 202 and wait:
        return capacity_queue.status(user_id, str(result.body["requestId"]), status_base, wait)
    return result
