"""POST /start: validate, apply policy, take a user slot, call Pipecat Cloud, record the session."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from chalicelib.api.models import StartRequest
from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.pcc.responses import client_response, is_capacity_error, map_pcc_error, might_have_started
from chalicelib.platform import rate_limits
from chalicelib.platform.errors import Refused, TryLater
from chalicelib.platform.http import HttpResult
from chalicelib.platform.idempotency import check_key, run_once
from chalicelib.platform.observability import count, logger
from chalicelib.platform.request_parsing import parse_json_object, validation_error
from chalicelib.platform.secrets import get_secrets
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.start import budgets, capacity_queue, gates, lifecycle
from chalicelib.start.policy import PlannedStart, plan_start
from chalicelib.store import agent_queue, intents, queued_starts
from chalicelib.store.intents import StartIntent
from chalicelib.store.session_records import SessionRecord


def parse_start_request(raw_body: bytes | None) -> StartRequest:
    data = parse_json_object(raw_body, max_bytes=2 * 1024 * 1024)
    try:
        return StartRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


@dataclass(frozen=True)
class StartTerms:
    """What a start may differ in from the web's: a phone call's start (telephony) cannot wait in the queue, has its
    own session cap and timeout, and shapes its own answer; a guest's (chalicelib.guests) has a cap of its own, a
    place in its agent's guest pool, and waits behind queued starts rather than going past them."""

    limit: int | None = None  # the caller's active-session cap (None: USER_SESSION_LIMIT)
    queue_on_capacity: bool = True
    pool_limit: int | None = None  # a guest's: at most this many guests' sessions and starts per agent
    behind_queue: bool = False  # not queueable, yet refused (at capacity) while starts wait in the queue
    read_timeout: float | None = None  # Pipecat Cloud's answer (None: PCC_READ_TIMEOUT)
    shape: Callable[[str, JsonObject], HttpResult] = client_response  # the success answer from PCC's


WEB_START = StartTerms()


def execute_start(user_id: str, plan: PlannedStart, status_base: str = "/start",
                  terms: StartTerms = WEB_START) -> HttpResult:
    """Take a slot with a start intent, call PCC, record the session (chalicelib.store.intents).

    While starts wait in the agent's queue, a queueable start joins it without calling PCC (first come,
    first served); telephony (`queue_on_capacity` off) always calls PCC: a caller on the line cannot wait.
    The slot is freed at once when PCC's answer proves no bot was created; kept (intent `unknown`) when
    it does not (timeout, 5xx, connection lost after sending), until recovery has let the orphan sweeper
    stop any such bot; passed to a queued request on a capacity error (202), unless `queue_on_capacity`
    is off (telephony holds the caller instead). A Lambda that dies mid-call leaves the intent `calling`
    for recovery."""
    settings = get_settings()
    gates.check(plan.agent)  # closed: refused before anything is taken or called
    limit = terms.limit or settings.limits.user_session_limit
    lease = settings.pcc.connect_timeout + (terms.read_timeout or settings.pcc.read_timeout)
    intent = _open_intent(user_id, plan.agent, limit, lease, terms.pool_limit)
    queueable = terms.queue_on_capacity and capacity_queue.enabled()
    if queueable or terms.behind_queue:
        try:
            queue = agent_queue.read(plan.agent)
        except Exception:
            intents.settle_not_started(intent)
            raise
        if queue.waiting() > 0:
            if queueable:
                count("StartsJoinedQueue")
                return capacity_queue.enqueue(user_id, plan, status_base, intent, queue)
            intents.settle_not_started(intent)  # the capacity that frees is theirs: no call is made
            raise TryLater("pcc_at_capacity", "The agent is at capacity; try again shortly", retry_after=5)
    try:
        keys = get_secrets()
        result = pcc_client.start(plan.agent, plan.pcc_request, keys.public_key.get_secret_value(),
                                  read_timeout=terms.read_timeout)
    except PccCallError as exc:
        if is_capacity_error(exc) and queueable:
            return capacity_queue.enqueue(user_id, plan, status_base, intent)
        raise _refused_by_pcc(exc, intent) from None
    except Exception:
        intents.settle_not_started(intent)  # no call was made (e.g. the secret is unreadable)
        raise
    _record(user_id, plan, intent, str(result["sessionId"]), settings.limits.session_ttl_seconds)
    return terms.shape(plan.transport, result)


def _open_intent(user_id: str, agent: str, limit: int, lease: float, pool_limit: int | None) -> StartIntent:
    try:
        return intents.open_intent(user_id, agent, limit, lease, pool_limit)
    except intents.NoSlot as full:
        if full.pool:
            count("StartRejected", code="guest_capacity_reached")
            raise TryLater("guest_capacity_reached", "Guests are using all the places this agent has for them; "
                           "try again shortly", retry_after=30) from None
        count("StartRejected", code="user_session_limit")
        raise TryLater("user_session_limit", f"You already have {limit} active sessions; stop one first") from None


def _refused_by_pcc(exc: PccCallError, intent: StartIntent) -> Refused:
    """Pipecat Cloud refused the start (or its answer was lost): the slot is freed when no bot can exist, kept
    for recovery (intent `unknown`) when one might."""
    if gates.refused_for_billing(exc):  # no bot: the slot is freed, and the caller told why
        intents.settle_not_started(intent)
        gates.check(intent.agent)
    error = map_pcc_error(exc)
    if might_have_started(exc):
        intents.mark_unknown(intent, error.kind)
    else:
        intents.settle_not_started(intent)
    count("StartRejected", code=error.kind)
    return error


def _record(user_id: str, plan: PlannedStart, intent: StartIntent, session_id: str, ttl_seconds: int) -> None:
    """Record the started session (retiring the intent); a bot that cannot be recorded is stopped: 503."""
    item = SessionRecord.new(user_id=user_id, session_id=session_id, agent=plan.agent, transport=plan.transport,
                             ttl_seconds=ttl_seconds, call_id=plan.call_id, provider=plan.provider)
    try:
        recorded = intents.settle_started(intent, item, lifecycle.session_started(item, queued=False))
    except Exception:  # noqa: BLE001 - storage refused: stop the bot; recovery frees the slot
        logger.exception("recording the session failed; stopping it", extra={"session_id": session_id})
        recorded = False
    if not recorded:
        pcc_client.stop_if_running(plan.agent, session_id)
        raise Refused("record_failed", "The session could not be recorded; try again")
    count("SessionsStarted")
    logger.info("session started", extra={"session_id": session_id, "agent": plan.agent,
                                          "transport": plan.transport, "user_id": user_id})


def start(user_id: str, raw_body: bytes | None, idempotency_key: str | None, *,
          status_base: str = "/start", wait: int = 0, tiers: frozenset[str] = frozenset(),
          terms: StartTerms = WEB_START) -> HttpResult:
    """POST /start. With `wait` > 0 a queued start is long-polled for up to `wait` seconds. `tiers`: the caller's
    token groups and scopes (their usage budget's tier). A start over budget is refused before anything is
    taken; the replay of an idempotent start that was made is answered as it was. `terms`: a guest's
    (chalicelib.guests)."""
    settings = get_settings()
    rate_limits.take(f"start#{user_id}", settings.limits.start_rate_per_minute, 60, kind="start_rate_limited",
                     what="Starts")
    request = parse_start_request(raw_body)
    plan = plan_start(settings, request, user_id)

    def fresh() -> HttpResult:
        budgets.check_start(user_id, tiers)
        return execute_start(user_id, plan, status_base, terms)

    if not idempotency_key:
        result = fresh()
    else:
        result = HttpResult.from_dict(run_once(
            user_id,
            check_key(idempotency_key),
            request.model_dump(mode="json"),
            lambda: fresh().as_dict(),
        ))
    if result.status == 202 and wait:
        return capacity_queue.long_poll_after_start(user_id, result, status_base, wait)
    if result.status == 202 and idempotency_key:  # a retry of a queued start: its owner still asks for it
        queued_starts.seen(str(result.body["requestId"]), time.time())
    return result
