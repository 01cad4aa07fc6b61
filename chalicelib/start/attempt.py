"""One attempt of the capacity queue's dispatcher at one queued start (on a dispatcher thread: it touches only
that request and its CallClock): claim the request's next attempt, call Pipecat Cloud, record the outcome.
"failed" only once the request is known to be terminal; a bot whose recording failed is stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.pcc.responses import client_response, is_retryable, map_pcc_error
from chalicelib.platform.observability import count, logger
from chalicelib.platform.secrets import get_secrets
from chalicelib.platform.settings import Settings
from chalicelib.start import gates, lifecycle, queued_start
from chalicelib.store import queued_starts
from chalicelib.store.queued_starts import QueuedStart
from chalicelib.store.session_records import SessionRecord

LEASE_SECONDS = 70  # the worker's 60 s Lambda timeout + a margin: a lease (or claim) older than this was abandoned

Outcome = Literal["started", "retry", "failed", "skipped"]


@dataclass
class CallClock:
    """When an attempt's Pipecat Cloud call left and was answered (monotonic), set by the attempt's thread."""

    sent: float | None = None
    answered: float | None = None
    refused: bool = False  # answered 429


def attempt(settings: Settings, agent: str, request: QueuedStart, retry_wait: float,
             clock: CallClock | None = None) -> tuple[Outcome, QueuedStart]:
    """Claim the request's next attempt, call Pipecat Cloud, record the outcome (on a dispatcher thread: it
    touches only this request and `clock`). "failed" only once the request is known to be terminal."""
    number = int(request.next_attempt)
    request_id = request.request_id
    if not queued_starts.claim(request_id, number, LEASE_SECONDS, time.time()):
        return "skipped", request  # moved on under us (cancelled, expired): re-read
    try:
        return _attempt_claimed(settings, agent, request, number, retry_wait, clock or CallClock())
    except Exception:  # noqa: BLE001 - no answer to act on (e.g. the secret is unreadable, DynamoDB failed)
        logger.exception("queued start attempt failed", extra={"request_id": request_id})
        return _crashed(settings, request, number)


def _attempt_claimed(settings: Settings, agent: str, request: QueuedStart, attempt: int, retry_wait: float,
                     clock: CallClock) -> tuple[Outcome, QueuedStart]:
    request_id = request.request_id
    try:
        payload, key = queued_starts.pcc_request(request), get_secrets().public_key.get_secret_value()
        clock.sent = time.monotonic()
        try:
            result = pcc_client.start(agent, payload, key)
        except PccCallError as exc:
            clock.refused = exc.status == 429
            raise
        finally:
            clock.answered = time.monotonic()
    except PccCallError as exc:
        billing = gates.refused_for_billing(exc)  # the gate closes; the start keeps its place
        if not is_retryable(exc) and not billing:
            error = map_pcc_error(exc)
            return failed_for_good(request, error.kind, str(error.detail), (queued_starts.STARTING,)), request
        reason = "pcc_billing" if billing else "pcc_at_capacity" if exc.status == 429 \
            else f"pcc_{exc.status or exc.kind}"
        if not queued_starts.requeue(request_id, attempt, time.time() + retry_wait, reason):
            return "skipped", request
        return "retry", replace(request, state=queued_starts.QUEUED, next_attempt=attempt + 1, attempts=attempt)
    session_id = str(result["sessionId"])
    response = client_response(request.transport, result)
    session = SessionRecord.new(user_id=request.user_id, session_id=session_id, agent=request.agent,
                                transport=request.transport, ttl_seconds=settings.limits.session_ttl_seconds,
                                request_id=request_id)
    try:
        completed = queued_starts.complete(request, attempt, session, response.as_dict(),
                                           lifecycle.session_started(session, queued=True))
    except Exception:
        pcc_client.stop_if_running(agent, session_id)  # never leave an unrecorded bot behind a retry
        raise
    if not completed:
        logger.error("queued start lost its claim after starting a bot; stopping it",
                     extra={"request_id": request_id, "session_id": session_id})
        pcc_client.stop_if_running(agent, session_id)
        return "skipped", request
    count("QueuedStartsStarted")
    logger.info("queued start served", extra={"request_id": request_id, "session_id": session_id,
                                               "attempt": attempt})
    return "started", request


def _crashed(settings: Settings, request: QueuedStart, attempt: int) -> tuple[Outcome, QueuedStart]:
    """An attempt that raised: hand it back, and fail the request once it has crashed MAX_RECEIVE_COUNT times
    (a poison request must not hold the head of the queue for ever)."""
    failures = queued_starts.release_claim(request.request_id, attempt)
    if failures >= settings.queue.max_receive_count:
        return failed_for_good(request, "worker_error", "The start could not be processed",
                                (queued_starts.QUEUED,)), request
    return "skipped", request  # re-read before the next try


def failed_for_good(request: QueuedStart, code: str, detail: str, states: tuple[str, ...]) -> Outcome:
    """Fail the request; "failed" when it is terminal now (by this write or another), else "skipped"."""
    if _fail(request, code, detail, states):
        return "failed"
    fresh = queued_starts.get(request.request_id)
    return "failed" if fresh is None or fresh.state in queued_starts.TERMINAL else "skipped"


def _fail(request: QueuedStart, code: str, detail: str, states: tuple[str, ...]) -> bool:
    if queued_start.finish(request, queued_starts.FAILED, code, detail, states):
        count("QueuedStartsFailed")
        logger.info("queued start failed", extra={"request_id": request.request_id, "code": code})
        return True
    return False
