"""The capacity queue: a start refused with 429 is queued in SQS and retried until it starts, fails
for good, is cancelled, or reaches its deadline. Nothing is lost:

- the request record (chalicelib.start_requests) is written before the message is sent;
- every transition is conditional, so duplicate/stale messages are acknowledged without effect;
- a message that keeps crashing the worker marks the request failed on its last receive, then goes to
  the DLQ; the sweeper (run by the reconcile schedule) re-sends lost messages and fails expired ones.
The user's active-session slot taken by /start is held while queued and freed on failure/cancel.
"""

from __future__ import annotations

import json
import math
import random
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from . import pcc_client, start_requests
from .aws import client
from .errors import ApiError
from .observability import count, logger
from .pcc_client import PccCallError
from .pcc_responses import HttpResult, client_response, is_retryable, map_pcc_error
from .secrets_store import get_secrets
from .sessions_service import stop_quietly
from .settings import Settings, get_settings
from .start_policy import PlannedStart

LEASE_SECONDS = 60  # the worker's Lambda timeout: a claim older than this was abandoned
SWEEP_GRACE_SECONDS = 120
POLL_INTERVAL_SECONDS = 0.25
DEADLINE_DETAIL = "Pipecat Cloud stayed at capacity until the deadline"


class QueueMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requestId: str
    userId: str
    agent: str
    transport: str
    pccRequest: dict[str, Any] | None = None  # no longer sent: the worker reads the request's record
    attempt: int


class SlotHandedOver(ApiError):
    """The start failed after its slot passed to a queued request, which frees it (exactly once)."""


def enabled() -> bool:
    return bool(get_settings().retry_queue_url)


def backoff_seconds(settings: Settings, attempt: int) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    ceiling = min(float(settings.retry_cap_seconds), settings.retry_base_seconds * (2 ** min(attempt, 30)))
    return random.uniform(0, ceiling)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _send(request: dict[str, Any], attempt: int, delay: float) -> None:
    message = QueueMessage(
        requestId=request["request_id"], userId=request["user_id"], agent=request["agent"],
        transport=request["transport"], attempt=attempt)
    client("sqs").send_message(
        QueueUrl=get_settings().retry_queue_url,
        MessageBody=message.model_dump_json(exclude_none=True),
        DelaySeconds=max(0, min(900, math.ceil(delay))),
    )
    start_requests.mark_enqueued(request["request_id"], attempt)


# ------------------------------------------------------------------ /start on 429
def enqueue(user_id: str, plan: PlannedStart, status_base: str, intent: dict[str, Any] | None = None) -> HttpResult:
    """Record a queued start and send its first message. The request takes the slot over from the start
    intent in the same transaction, and holds it while queued."""
    settings = get_settings()
    now = time.time()
    delay = backoff_seconds(settings, 0)
    request = start_requests.create(
        request_id=start_requests.new_request_id(), user_id=user_id, agent=plan.agent,
        transport=plan.transport, pcc_request=plan.pcc_request,
        deadline=now + settings.start_deadline_seconds, next_attempt_at=now + delay, intent=intent)
    try:
        _send(request, 1, delay)
    except Exception:  # noqa: BLE001 - cannot queue: fail the request explicitly, free the slot
        logger.exception("could not enqueue a start", extra={"request_id": request["request_id"]})
        # The slot now belongs to the request: failing it (conditional on `queued`) frees the slot once;
        # if even that write fails, the sweeper fails the request at its deadline and frees it then.
        start_requests.finish_without_session(request, start_requests.FAILED, "queue_unavailable",
                                              "The start could not be queued", (start_requests.QUEUED,))
        raise SlotHandedOver(503, "queue_unavailable", "The agent is at capacity and the retry queue is "
                             "unavailable", headers={"Retry-After": "5"}) from None
    count("StartsQueued")
    return pending_response(request, status_base, now)


def pending_response(request: dict[str, Any], status_base: str, now: float) -> HttpResult:
    status_url = f"{status_base.rstrip('/')}/{request['request_id']}"
    retry_after = max(1, math.ceil(int(request["next_attempt_at"]) - now))
    body = {
        "requestId": request["request_id"],
        "status": "queued",
        "statusUrl": status_url,
        "retryAfter": retry_after,
        "attempts": int(request["attempts"]),
        "nextAttemptAt": _iso(int(request["next_attempt_at"])),
        "position": start_requests.position(request),
    }
    return HttpResult(202, body, {"Location": status_url, "Retry-After": str(retry_after)})


# ------------------------------------------------------------------ GET / DELETE /start/{id}
def _owned(user_id: str, request_id: str) -> dict[str, Any]:
    request = start_requests.get(request_id) if request_id.startswith("req_") and len(request_id) < 64 else None
    if request is None or request["user_id"] != user_id:
        raise ApiError(404, "start_request_not_found", "No such start request")
    return request


def _expire_if_overdue(request: dict[str, Any], now: float) -> dict[str, Any]:
    if request["state"] in (start_requests.QUEUED, start_requests.STARTING) \
            and now > request["deadline"] + SWEEP_GRACE_SECONDS \
            and (request["state"] == start_requests.QUEUED or request.get("lease_until", 0) < now):
        start_requests.finish_without_session(
            request, start_requests.FAILED, "deadline_exceeded", DEADLINE_DETAIL,
            (start_requests.QUEUED, start_requests.STARTING))
        return start_requests.get(request["request_id"]) or request
    return request


def outcome(request: dict[str, Any], status_base: str, now: float) -> HttpResult:
    """200 with the body a direct success would have had, 202 while pending, or a terminal error."""
    state = request["state"]
    if state == start_requests.STARTED:
        return HttpResult.from_dict(json.loads(request["result"]))
    if state == start_requests.FAILED:
        reason = request.get("error_code", "failed")
        raise ApiError(410, "start_failed", f"The queued start failed for good ({reason}): "
                                            f"{request.get('error_detail', '')}")
    if state == start_requests.CANCELLED:
        raise ApiError(409, "start_cancelled", "The queued start was cancelled")
    return pending_response(request, status_base, now)


def wait_for(request: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Long-poll: re-read the request until it leaves the queue or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while request["state"] not in start_requests.TERMINAL and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_SECONDS)
        request = start_requests.get(request["request_id"]) or request
    return request


def status(user_id: str, request_id: str, status_base: str, wait: int = 0) -> HttpResult:
    request = _expire_if_overdue(_owned(user_id, request_id), time.time())
    if wait:
        request = wait_for(request, wait)
    return outcome(request, status_base, time.time())


def cancel(user_id: str, request_id: str) -> HttpResult:
    request = _owned(user_id, request_id)
    if request["state"] == start_requests.QUEUED:
        start_requests.finish_without_session(request, start_requests.CANCELLED, "cancelled",
                                              "Cancelled by the user", (start_requests.QUEUED,))
        request = start_requests.get(request_id) or request
    if request["state"] in (start_requests.STARTING, start_requests.STARTED):
        raise ApiError(409, "not_cancellable", "The session is already starting or running; stop it instead")
    return HttpResult(200, {"requestId": request_id, "status": request["state"]})


def parse_wait(raw: str | None) -> int:
    if raw in (None, ""):
        return 0
    settings = get_settings()
    try:
        wait = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise ApiError(422, "validation_error", "wait must be a whole number of seconds") from None
    if not 0 <= wait <= settings.long_poll_max_seconds:
        raise ApiError(422, "validation_error", f"wait must be between 0 and {settings.long_poll_max_seconds}")
    return wait


# ------------------------------------------------------------------ the worker
def handle_message(body: str, receive_count: int) -> None:
    """One SQS message (batch_size=1). Raises only when the message must be redelivered."""
    try:
        message = QueueMessage.model_validate_json(body)
    except ValidationError:
        logger.error("malformed queue message: left for the DLQ")
        raise
    try:
        _process(message)
    except Exception:
        if receive_count >= get_settings().max_receive_count:
            # This delivery is the last before the DLQ: make the failure visible to the user.
            request = start_requests.get(message.requestId)
            if request is not None:
                start_requests.finish_without_session(
                    request, start_requests.FAILED, "worker_error", "The start could not be processed",
                    (start_requests.QUEUED, start_requests.STARTING))
            count("QueuedStartsFailed")
        raise


def _process(message: QueueMessage) -> None:
    settings = get_settings()
    request = start_requests.get(message.requestId)
    if request is None or request["state"] in start_requests.TERMINAL:
        return  # unknown (expired) or finished: nothing to do
    now = time.time()
    if request["next_attempt"] != message.attempt:
        # A stale or duplicate message. If the message for the current attempt was never sent, send it.
        if request["state"] == start_requests.QUEUED and request["enqueued_attempt"] < request["next_attempt"]:
            _send(request, request["next_attempt"], max(0, request["next_attempt_at"] - now))
        return
    if now >= request["deadline"]:
        _fail(request, "deadline_exceeded", DEADLINE_DETAIL)
        return
    if not start_requests.claim(message.requestId, message.attempt, LEASE_SECONDS, now):
        return  # another delivery owns it (or it moved on); an abandoned claim is re-sent by the sweeper
    try:
        _attempt(settings, request, message)
    except Exception:
        # No outcome was recorded: hand the attempt back so the redelivered message can claim it again.
        start_requests.release_claim(message.requestId, message.attempt)
        raise


def _attempt(settings: Settings, request: dict[str, Any], message: QueueMessage) -> None:
    """One claimed attempt: call Pipecat Cloud and record the outcome (started / re-queued / failed)."""
    pcc_request = start_requests.pcc_request(request)
    try:
        result = pcc_client.start(request["agent"], pcc_request, get_secrets().public_key.get_secret_value())
    except PccCallError as exc:
        if not is_retryable(exc):
            error = map_pcc_error(exc)
            _fail(request, error.code, str(error.detail), from_starting=True)
            return
        now = time.time()
        remaining = request["deadline"] - now
        if remaining < 1:
            _fail(request, "deadline_exceeded", DEADLINE_DETAIL,
                  from_starting=True)
            return
        delay = min(backoff_seconds(settings, message.attempt), remaining)
        reason = "pcc_at_capacity" if exc.status == 429 else f"pcc_{exc.status or exc.kind}"
        if start_requests.requeue(message.requestId, message.attempt, now + delay, reason):
            request = start_requests.get(message.requestId) or request
            _send(request, message.attempt + 1, delay)
        return
    session_id = str(result["sessionId"])
    response = client_response(request["transport"], result)
    try:
        completed = start_requests.complete(request, message.attempt, session_id, response.as_dict())
    except Exception:
        stop_quietly(request["agent"], session_id)  # never leave an unrecorded bot behind a retry
        raise
    if completed:
        count("QueuedStartsStarted")
        logger.info("queued start served", extra={"request_id": message.requestId, "session_id": session_id,
                                                   "attempt": message.attempt})
        return
    logger.error("queued start lost its claim after starting a bot; stopping it",
                 extra={"request_id": message.requestId, "session_id": session_id})
    stop_quietly(request["agent"], session_id)


def _fail(request: dict[str, Any], code: str, detail: str, from_starting: bool = False) -> None:
    states = (start_requests.STARTING,) if from_starting else (start_requests.QUEUED, start_requests.STARTING)
    if start_requests.finish_without_session(request, start_requests.FAILED, code, detail, states):
        count("QueuedStartsFailed")
        logger.info("queued start failed", extra={"request_id": request["request_id"], "code": code})


# ------------------------------------------------------------------ the sweeper
def sweep(now: float | None = None) -> dict[str, int]:
    """Re-send lost messages and fail expired requests (run from the reconcile schedule)."""
    now = now or time.time()
    summary = {"pending": 0, "resent": 0, "expired": 0}
    if not enabled():
        return summary
    for request in start_requests.pending():
        summary["pending"] += 1
        if request["state"] not in (start_requests.QUEUED, start_requests.STARTING):
            continue
        before = request["state"]
        request = _expire_if_overdue(request, now)
        if request["state"] != before:
            summary["expired"] += 1
            continue
        overdue = now > request["next_attempt_at"] + SWEEP_GRACE_SECONDS
        lease_gone = request["state"] == start_requests.STARTING and request.get("lease_until", 0) < now
        # queued and overdue: its message was never sent or got lost; starting: its worker died
        if overdue and (request["state"] == start_requests.QUEUED or lease_gone):
            _send(request, request["next_attempt"], 0)
            summary["resent"] += 1
    return summary
