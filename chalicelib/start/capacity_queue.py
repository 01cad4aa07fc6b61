"""The capacity queue: a start refused with 429 joins its agent's FIFO (chalicelib.store.agent_queue) and is
served in arrival order by the agent's dispatcher (chalicelib.start.dispatcher) until it starts, fails for good,
is cancelled, or reaches its deadline. While anything waits for an agent, a new start joins the queue
without calling Pipecat Cloud, so a late arrival never overtakes a queued start (telephony calls, which
cannot wait, are the one documented exception: they keep trying Pipecat Cloud directly).

Nothing is lost: the request record and its queue place are written in one transaction before the
dispatcher is woken; every transition is conditional; the sweeper (reconcile schedule) restarts an idle
queue's dispatcher and fails requests past their deadline. The user's active-session slot taken by
/start is held while queued and freed on failure/cancel.
"""

from __future__ import annotations

import json
import math
import time

from chalicelib.api import answers
from chalicelib.platform import rate_limits
from chalicelib.platform.dynamo import iso_at
from chalicelib.platform.errors import Refused, TryLater
from chalicelib.platform.http import HttpResult
from chalicelib.platform.observability import count, logger
from chalicelib.platform.request_parsing import query_error
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.start import lifecycle, queued_start
from chalicelib.start.policy import PlannedStart
from chalicelib.store import agent_queue, intents, queued_starts
from chalicelib.store.intents import StartIntent
from chalicelib.store.queued_starts import QueuedStart

POLL_INTERVAL_SECONDS = 0.25
CANCEL_WAIT_SECONDS, CANCEL_POLL_SECONDS = 10.0, 0.05  # a cancel that meets an attempt in flight waits for its answer
RETRY_AFTER_MAX_SECONDS = 30
PLACE_TRIES = 3  # places a start may take when each is given up while its Lambda stalls (see enqueue)
LONG_POLL_REFUSALS = ("status_rate_limited", "too_many_long_polls")


def enabled() -> bool:
    return bool(get_settings().queue.retry_queue_url)


# ------------------------------------------------------------------ /start: joining the queue
def enqueue(user_id: str, plan: PlannedStart, status_base: str, intent: StartIntent | None = None,
            known: agent_queue.QueueState | None = None) -> HttpResult:
    """Take the next place in the agent's queue and record the start there; the request takes the slot over
    from the start intent in the same transaction, and holds it while queued. `known`: the queue state the
    caller has just read, if it has (it saves a read; the place is still taken atomically).

    A place given up while this Lambda stalled between taking it and recording the start (the dispatcher's
    ENTRY_GRACE_SECONDS) is left empty and a new one is taken at the tail, up to PLACE_TRIES places in all:
    the stall costs the start its place in line, never the start itself."""
    request_id = queued_starts.new_request_id()
    try:
        placed, request = _take_a_place(request_id, user_id, plan, intent, known)
    except Exception:
        if intent is not None:
            intents.settle_not_started(intent)  # not recorded (or the queue is full): the slot is the intent's
        raise
    try:
        agent_queue.start_dispatcher(plan.agent, known=placed)
    except Exception:  # noqa: BLE001 - cannot reach the queue: fail the request explicitly, free the slot
        logger.exception("could not wake the dispatcher", extra={"request_id": request_id})
        # The slot now belongs to the request: failing it (conditional on `queued`) frees the slot once;
        # if even that write fails, the sweeper fails the request at its deadline and frees it then.
        if queued_start.finish(request, queued_starts.FAILED, "queue_unavailable", "The start could not be queued",
                               (queued_starts.QUEUED,)):
            queued_start.left_queue(request)
        # (from here on the slot is the request's, which frees it: the intent is not settled again)
        raise Refused("queue_unavailable", "The agent is at capacity and the retry queue is unavailable",
                      retry_after=5) from None
    count("StartsQueued")
    return pending_response(request, status_base, time.time(), placed)


def _take_a_place(request_id: str, user_id: str, plan: PlannedStart, intent: StartIntent | None,
                  known: agent_queue.QueueState | None) -> tuple[agent_queue.QueueState, QueuedStart]:
    """The place taken and the start recorded there (see enqueue); 503 `queue_full`, or `queue_unavailable` once
    PLACE_TRIES places were each given up before the start could be recorded."""
    settings = get_settings()
    for attempt in range(PLACE_TRIES):
        placed = agent_queue.allocate(plan.agent, settings.queue.max_queued, known if attempt == 0 else None)
        if placed is None:
            count("StartRejected", code="queue_full")
            state = agent_queue.read(plan.agent)
            retry_after = max(1, min(RETRY_AFTER_MAX_SECONDS,
                                     math.ceil(state.free_interval or settings.queue.retry_cap_seconds)))
            raise Refused("queue_full", f"{settings.queue.max_queued} starts already wait for this agent; try "
                           "again later", retry_after=retry_after)
        request = _record_at(request_id, user_id, plan, placed.tail, intent, settings.queue.start_deadline_seconds)
        if request is not None:
            return placed, request
        agent_queue.mark_gone(plan.agent, placed.tail)  # the place stays empty: let the dispatcher pass it
        logger.warning("queue place given up while it was being taken", extra={"agent": plan.agent,
                                                                                "seq": placed.tail})
    raise _not_queued()


def _not_queued() -> Refused:
    return Refused("queue_unavailable", "The start could not be queued; try again", retry_after=1)


def _record_at(request_id: str, user_id: str, plan: PlannedStart, seq: int, intent: StartIntent | None,
               deadline_seconds: float) -> QueuedStart | None:
    """Record the start at place `seq` (taking the slot over from `intent`); None when the place was given up
    as abandoned meanwhile (nothing was written). Any other refusal (the intent was recovered: the slot is no
    longer this start's) raises 503."""
    now = time.time()
    try:
        return queued_starts.create(
            request_id=request_id, user_id=user_id, agent=plan.agent, transport=plan.transport,
            pcc_request=plan.pcc_request, deadline=now + deadline_seconds, next_attempt_at=now,
            seq=seq, entry=agent_queue.entry_put(plan.agent, seq, request_id), intent=intent,
            events=lifecycle.start_queued(user_id, plan.agent, request_id, plan.transport))
    except queued_starts.RecordRefused as refusal:
        if refusal.refused == {"entry"}:
            return None  # only the entry's condition: the dispatcher gave the place up
        agent_queue.mark_gone(plan.agent, seq)
        logger.warning("a queued start was refused", extra={"request_id": request_id, "reasons": refusal.reasons})
        raise _not_queued() from None
    except Exception as exc:  # noqa: BLE001 - perhaps recorded with its answer lost: see below
        return _recorded_all_the_same(request_id, plan.agent, seq, exc)


def _recorded_all_the_same(request_id: str, agent: str, seq: int, error: Exception) -> QueuedStart:
    """The transaction recording a queued start raised without DynamoDB refusing it (every attempt's answer
    lost, e.g. read timeouts on a loaded network): it may have committed all the same. Read it back: recorded, it
    is queued at its place and the caller answers 202 (an error for a request that exists would leave a start
    waiting whose place was passed: answered with an error, then served by nobody); not recorded, its place is
    passed and the error stands. Unreadable: the error stands and the place is left as it is (an entry that
    never comes is given up after the dispatcher's grace; a request that exists is served, or cancelled as
    abandoned since nobody asks about it)."""
    try:
        found = queued_starts.get(request_id)
    except Exception:  # noqa: BLE001 - unknown either way: see above
        raise error from None
    if found is None:
        agent_queue.mark_gone(agent, seq)
        raise error
    logger.warning("a queued start was recorded though the answer was lost", extra={"request_id": request_id})
    return found


def pending_response(request: QueuedStart, status_base: str, now: float,
                     state: agent_queue.QueueState | None = None) -> HttpResult:
    """202: the exact place in the agent's queue and an ETA from the measured rate capacity frees at
    (`state`: the queue as just read or written, else it is read)."""
    settings = get_settings()
    status_url = f"{status_base.rstrip('/')}/{request.request_id}"
    state = state or agent_queue.read(request.agent)
    position = state.position(request.seq) if request.seq is not None else state.waiting()
    eta = state.eta_seconds(position, settings.queue.retry_cap_seconds)
    retry_after = max(1, min(retry_after_cap(settings.queue.queued_abandon_seconds), math.ceil(eta)))
    body = answers.QueuedStart(requestId=request.request_id, status="queued", statusUrl=status_url,
                               retryAfter=retry_after, attempts=request.attempts, position=position,
                               etaSeconds=math.ceil(eta), nextAttemptAt=iso_at(now + eta)).model_dump()
    return HttpResult(202, body, {"Location": status_url, "Retry-After": str(retry_after)})


def retry_after_cap(abandon_seconds: int) -> int:
    """The longest Retry-After of a queued start: a client that follows it asks at least 3 times before its
    start would count as abandoned."""
    return min(RETRY_AFTER_MAX_SECONDS, abandon_seconds // 3) if abandon_seconds else RETRY_AFTER_MAX_SECONDS


# ------------------------------------------------------------------ GET / DELETE /start/{id}
def _owned(user_id: str, request_id: str) -> QueuedStart:
    request = queued_starts.get(request_id) if request_id.startswith("req_") and len(request_id) < 64 else None
    if request is None or request.user_id != user_id:
        raise Refused("start_request_not_found", "No such start request")
    return request


def outcome(request: QueuedStart, status_base: str, now: float) -> HttpResult:
    """200 with the body a direct success would have had, 202 while pending, or a terminal error."""
    state = request.state
    if state == queued_starts.STARTED:
        return HttpResult.from_dict(json.loads(request.result or "{}"))
    ids = {"requestId": request.request_id, "reason": (request.error_code or state)}
    if state == queued_starts.FAILED:
        raise Refused("start_failed", f"The queued start failed for good ({ids['reason']}): "
                                            f"{(request.error_detail or '')}", extra=ids)
    if state == queued_starts.CANCELLED:
        detail = "The queued start was cancelled" + (
            f": {queued_start.ABANDONED_DETAIL}" if ids["reason"] == "abandoned" else "")
        raise Refused("start_cancelled", detail, extra=ids)
    return pending_response(request, status_base, now)


def wait_for(request: QueuedStart, seconds: float) -> QueuedStart:
    """Long-poll: re-read the request until it leaves the queue or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while request.state not in queued_starts.TERMINAL and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_SECONDS)
        request = queued_starts.get(request.request_id) or request
    return request


def status(user_id: str, request_id: str, status_base: str, wait: int = 0) -> HttpResult:
    settings = get_settings()
    rate_limits.take(f"status#{user_id}", settings.limits.status_rate_per_minute, 60, kind="status_rate_limited",
                     what="Status polls")
    now = time.time()
    request = queued_start.expire_if_overdue(_owned(user_id, request_id), now)
    if request.state not in queued_starts.TERMINAL and float(request.seen_at or 0) < int(now + wait):
        queued_starts.seen(request_id, now + wait)  # a long-poll: its owner waits until it ends
    if wait and request.state not in queued_starts.TERMINAL:
        with rate_limits.concurrent(f"longpoll#{user_id}", settings.limits.long_polls_per_user, wait + 5,
                                    kind="too_many_long_polls", what="Long-polls"):
            request = wait_for(request, wait)
    return outcome(request, status_base, time.time())


def long_poll_after_start(user_id: str, queued: HttpResult, status_base: str, wait: int) -> HttpResult:
    """`POST /start?wait=N` that was queued: long-poll it. The request exists, so a long-poll that cannot be
    granted (the status rate or the long-poll seats are spent) answers the plain 202, never an error."""
    try:
        return status(user_id, str(queued.body["requestId"]), status_base, wait)
    except TryLater as exc:
        if exc.kind not in LONG_POLL_REFUSALS:
            raise
        count("LongPollsRefused", code=exc.kind)
        return queued


def list_pending(user_id: str, status_base: str) -> JsonObject:
    """GET /start: the caller's queued and starting requests (a client that lost a requestId finds it here
    to cancel it). Listing does not count as asking about them (chalicelib.start.queued_start.abandoned)."""
    settings = get_settings()
    since = iso_at(time.time() - settings.queue.start_deadline_seconds - queued_start.SWEEP_GRACE_SECONDS)
    found = queued_starts.user_pending(user_id, since)
    base = status_base.rstrip("/")
    return answers.PendingStarts(starts=[
        answers.PendingStart(requestId=r.request_id, status=str(r.state), agent=r.agent, createdAt=r.created_at,
                             statusUrl=f"{base}/{r.request_id}") for r in found]).model_dump()


def cancel(user_id: str, request_id: str) -> HttpResult:
    """Cancel a queued start. While an attempt is in flight (`starting`), its answer decides, so the cancel waits
    for it up to CANCEL_WAIT_SECONDS: a refusal puts the start back in the queue and the cancel takes it; a bot
    makes it started (409, stop the session instead). A cancel whose write lost the race to an attempt that was
    then refused tries again: 200 means cancelled, never a start still queued."""
    request = _owned(user_id, request_id)
    waited_until = time.monotonic() + CANCEL_WAIT_SECONDS
    while True:
        if request.state == queued_starts.QUEUED and queued_start.finish(
                request, queued_starts.CANCELLED, "cancelled", "Cancelled by the user", (queued_starts.QUEUED,)):
            queued_start.left_queue(request)
        request = queued_starts.get(request_id) or request
        if request.state not in (queued_starts.QUEUED, queued_starts.STARTING) \
                or time.monotonic() >= waited_until:
            break
        time.sleep(CANCEL_POLL_SECONDS)  # an attempt in flight, or one that took it back from under our write
    if request.state in (queued_starts.QUEUED, queued_starts.STARTING, queued_starts.STARTED):
        raise Refused("not_cancellable", "The session is already starting or running; stop it instead")
    return HttpResult(200, answers.CancelResult(requestId=request_id, status=str(request.state)).model_dump())


def parse_wait(raw: str | None) -> int:
    if raw in (None, ""):
        return 0
    settings = get_settings()
    try:
        wait = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise query_error("wait", "must be a whole number of seconds") from None
    if not 0 <= wait <= settings.queue.long_poll_max_seconds:
        raise query_error("wait", f"must be between 0 and {settings.queue.long_poll_max_seconds}")
    return wait
