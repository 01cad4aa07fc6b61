"""The capacity queue's dispatcher: one per agent at a time (the lease on the agent's queue,
chalicelib.store.agent_queue), trying the head of the agent's FIFO against Pipecat Cloud, in order, until the
queue is empty or its run time (DISPATCH_RUN_SECONDS) is up; then it hands over to a fresh invocation.

Pacing. Only the head waits, and only between its attempts. The wait adapts to the rate at which
capacity frees (SHRINK_* / GROW below), between 1 / DISPATCH_CALLS_PER_SECOND and RETRY_CAP_SECONDS (a few
seconds: the queue drains at the speed capacity frees, never one long backoff behind it); it starts at
RETRY_BASE_SECONDS, or from the interval between successes measured by the previous run;
- a wake-up (the gateway stopped a session, reconciliation saw one end) cuts the wait short;
- PCC is never asked more than DISPATCH_CALLS_PER_SECOND times a second for the agent.
The stored interval is also the queue's ETA (position x interval). Simulated and measured in
bench/queue_storm.py: drain time ~1.0x the ideal at ~1.2 PCC calls per started session.

A killed run (no except or finally of ours runs) is replaced by the watchdog message it armed when it
took the lease, delivered just after the lease would expire. Every request transition stays conditional
(chalicelib.store.queued_starts), so a second dispatcher that took over an expired lease can never start a
request twice; a bot whose answer was lost is stopped by the orphan sweeper (no record claims it).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.pcc.responses import client_response, is_retryable, map_pcc_error
from chalicelib.platform.observability import count, logger
from chalicelib.platform.secrets import get_secrets
from chalicelib.platform.settings import Settings, get_settings
from chalicelib.store import agent_queue
from chalicelib.store import queued_starts as start_requests
from chalicelib.store.queued_starts import QueuedStart

LEASE_SECONDS = 70  # the worker's 60 s Lambda timeout + a margin: a lease older than this was abandoned
# Leases are stored in whole seconds and expire when `lease_until < now`: 2 s after LEASE_SECONDS at most.
WATCHDOG_DELAY_SECONDS = LEASE_SECONDS + 2
ENTRY_GRACE_SECONDS = 10  # a number handed out whose entry is still missing after this was abandoned
WAKE_POLL_SECONDS = 0.1
# The head's wait: x0.95 after a success that followed a 429, x0.8 after two successes in a row (capacity
# was waiting for us), x1.5 after a 429; simulated against fixed, jittered and random free rates and
# measured in bench/queue_storm.py (drain ~1.0x the ideal at <= 1.5 PCC calls per started session).
SHRINK_AFTER_MISS, SHRINK_AFTER_SUCCESS, GROW, SMOOTHING = 0.95, 0.8, 1.5, 0.3
DEADLINE_DETAIL = "Pipecat Cloud stayed at capacity until the deadline"
ABANDONED_DETAIL = "nobody asked about it for QUEUED_ABANDON_SECONDS, so no bot was started for it"

Outcome = Literal["started", "retry", "failed", "skipped"]


@dataclass
class Pacer:
    """When the head may be tried next (monotonic clock), adapting to the rate capacity frees at."""

    base: float
    cap: float
    min_gap: float
    interval: float | None  # measured seconds between successes: the drain rate, for the ETA
    wait: float = 0.0
    last_call: float = float("-inf")
    last_success: float | None = None
    last_was_success: bool = False
    next_call: float = 0.0

    def __post_init__(self) -> None:
        self.wait = self._clamp(SHRINK_AFTER_MISS * self.interval if self.interval else self.base)
        self.next_call = time.monotonic() + self.wait  # a 429 just queued the work: not at once

    def _clamp(self, seconds: float) -> float:
        return max(self.min_gap, min(self.cap, seconds))

    def called(self) -> None:
        self.last_call = time.monotonic()

    def success(self) -> float | None:
        """Capacity was there. Two successes in a row: it was waiting for us, so shorten the wait more."""
        now = time.monotonic()
        if self.last_success is not None:
            gap = now - self.last_success
            self.interval = gap if self.interval is None else SMOOTHING * gap + (1 - SMOOTHING) * self.interval
        self.last_success = now
        self.wait = self._clamp(self.wait * (SHRINK_AFTER_SUCCESS if self.last_was_success else SHRINK_AFTER_MISS))
        self.last_was_success = True
        self.next_call = self.last_call + self.wait
        return self.interval

    def miss(self) -> None:
        self.wait = self._clamp(self.wait * GROW)
        self.last_was_success = False
        self.next_call = self.last_call + self.wait

    def moved_on(self) -> None:
        """The head left without a capacity answer (failed for good): the next may go at once."""
        self.next_call = self.last_call + self.min_gap

    def woken(self) -> None:
        self.next_call = max(time.monotonic(), self.last_call + self.min_gap)


def run(agent: str, budget_seconds: float | None = None, *, freed: bool = False) -> dict[str, int]:
    """One dispatcher run for `agent` (a worker invocation; `freed`: started because the gateway freed
    capacity, so the head is tried at once). Returns what it did."""
    settings = get_settings()
    owner = uuid.uuid4().hex
    summary = {"started": 0, "retried": 0, "failed": 0, "skipped": 0, "abandoned": 0}
    state = agent_queue.acquire(agent, owner, LEASE_SECONDS)
    if state is None:
        return {**summary, "busy": 1}  # another dispatcher serves this agent
    if state.waiting():
        _arm_watchdog(agent)
    try:
        _loop(settings, agent, owner, state, budget_seconds or settings.dispatch_run_seconds, summary, freed)
    except Exception:
        agent_queue.release(agent, owner)
        try:
            agent_queue.send_wake(agent, delay_seconds=5)  # resume soon, not after the message's visibility
        except Exception:  # noqa: BLE001 - the reconcile schedule restarts idle queues
            logger.warning("could not schedule the dispatcher's resumption", extra={"agent": agent})
        raise
    agent_queue.release(agent, owner)
    after = agent_queue.read(agent)
    if after.waiting() and not after.leased(time.time()):
        agent_queue.send_wake(agent)  # run time spent, or work arrived as the lease was let go: hand over
    return summary


def _arm_watchdog(agent: str) -> None:
    """A wake-up due just after this run's lease (and its attempt's claim) would run out. If this invocation
    is killed (no except or finally of ours runs), the next dispatcher starts then: recovery takes
    WATCHDOG_DELAY_SECONDS, not the message's visibility timeout (360 s) or the next reconcile run. A run
    that ends normally hands over first, so its watchdog finds the next run's lease and is dropped (or an
    empty queue)."""
    try:
        agent_queue.send_wake(agent, delay_seconds=WATCHDOG_DELAY_SECONDS)
    except Exception:  # noqa: BLE001 - the reconcile schedule restarts idle queues
        logger.warning("could not arm the dispatcher's watchdog", extra={"agent": agent})


def _loop(settings: Settings, agent: str, owner: str, state: agent_queue.QueueState, budget: float,
          summary: dict[str, int], freed: bool) -> None:
    ends = time.monotonic() + budget
    pacer = Pacer(base=settings.retry_base_seconds, cap=settings.retry_cap_seconds,
                  min_gap=1.0 / settings.dispatch_calls_per_second, interval=state.free_interval)
    if freed:
        pacer.woken()
    wakes_seen = state.wakes
    missing_since: dict[int, float] = {}
    head: tuple[int, QueuedStart] | None = None
    lease_until = time.time() + LEASE_SECONDS
    while time.monotonic() < ends:
        if lease_until - time.time() < LEASE_SECONDS / 2:  # renew (a write) only now and then; read otherwise
            renewed = agent_queue.acquire(agent, owner, LEASE_SECONDS)
            if renewed is None:
                logger.error("dispatcher lost its lease", extra={"agent": agent})
                return
            state, lease_until = renewed, time.time() + LEASE_SECONDS
            _arm_watchdog(agent)
        else:
            state = agent_queue.read(agent)
            if state.lease_owner != owner:
                logger.error("dispatcher lost its lease", extra={"agent": agent})
                return
        state = agent_queue.fold_head(state)
        if state.waiting() == 0:
            return
        if state.wakes != wakes_seen:
            wakes_seen = state.wakes
            pacer.woken()
        seq = state.head
        if head is None or head[0] != seq:  # a new head: read it (a retried head is kept, not re-read)
            found = _head_request(agent, seq, missing_since)
            if found is None:
                continue
            head = (seq, found)
        request = head[1]
        now = time.time()
        if now >= request["deadline"]:
            _fail(request, "deadline_exceeded", DEADLINE_DETAIL, (start_requests.QUEUED, start_requests.STARTING))
            agent_queue.advance(agent, seq)
            summary["failed"] += 1
            head = None
            continue
        if request["state"] == start_requests.STARTING and request.get("lease_until", 0) >= now:
            time.sleep(min(1.0, max(0.0, ends - time.monotonic())))  # a dead dispatcher's attempt: let it expire
            head = None
            continue
        if time.monotonic() < pacer.next_call:
            if _wait_for_wake(agent, wakes_seen, min(pacer.next_call, ends)):
                pacer.woken()
            if time.monotonic() < pacer.next_call:
                continue  # the run's time is up
        # (no re-read after the wait: the claim is conditional, so a head cancelled meanwhile is skipped)
        if _abandoned(settings, request):
            summary["abandoned"] += 1
            head = None
            continue
        outcome = _attempt(settings, agent, request, pacer)
        if outcome in ("started", "failed"):
            agent_queue.advance(agent, seq, pacer.interval if outcome == "started" else None)
        if outcome != "retry":
            head = None
        summary[{"started": "started", "retry": "retried", "failed": "failed", "skipped": "skipped"}[outcome]] += 1


def abandoned(request: QueuedStart, now: float, abandon_seconds: int) -> bool:
    """Queued, and its owner has not asked about it for `abandon_seconds` (requests without `seen_at`,
    recorded before abandonment existed, never are)."""
    return bool(abandon_seconds) and request["state"] == start_requests.QUEUED and "seen_at" in request \
        and now - float(request["seen_at"]) > abandon_seconds


def abandon(request: QueuedStart, now: float, abandon_seconds: int) -> bool:
    """Cancel an abandoned queued start (`abandoned`), freeing its slot and its place; False when its owner
    asked about it after all (conditional on `seen_at`) or it left the queue."""
    if start_requests.finish_without_session(request, start_requests.CANCELLED, "abandoned", ABANDONED_DETAIL,
                                             (start_requests.QUEUED,), abandoned_before=now - abandon_seconds):
        agent_queue.mark_gone(request["agent"], int(request["seq"]))
        count("QueuedStartsAbandoned")
        logger.info("queued start abandoned", extra={"request_id": request["request_id"]})
        return True
    return False


def _abandoned(settings: Settings, request: QueuedStart) -> bool:
    """True when the head was abandoned (nobody asked about it lately) and is now cancelled, not started.
    The head is kept across retries without a re-read, so its `seen_at` may be stale: a fresh read decides,
    and the cancel is conditional on it (an owner asking at that moment wins)."""
    limit, now = settings.queued_abandon_seconds, time.time()
    if not abandoned(request, now, limit):
        return False
    fresh = start_requests.get(request["request_id"])
    if fresh is None or not abandoned(fresh, now, limit):
        request.update(fresh or {})
        return False
    if abandon(fresh, now, limit):  # its place is marked gone: the next loop folds the head past it
        return True
    request.update(start_requests.get(request["request_id"]) or {})
    return False


def _head_request(agent: str, seq: int, missing_since: dict[int, float]) -> QueuedStart | None:
    """The request at place `seq`, or None after dealing with a place that holds none."""
    entry = agent_queue.entry(agent, seq)
    if entry is None:  # handed out, not written yet (or never will be: its Lambda died)
        first = missing_since.setdefault(seq, time.monotonic())
        if time.monotonic() - first > ENTRY_GRACE_SECONDS and agent_queue.abandon(agent, seq):
            logger.warning("queue place abandoned", extra={"agent": agent, "seq": seq})
            agent_queue.advance(agent, seq)
        else:
            time.sleep(0.05)
        return None
    request = start_requests.get(str(entry["request_id"])) if entry.get("request_id") else None
    if request is None or request["state"] in start_requests.TERMINAL:
        agent_queue.advance(agent, seq)  # cancelled, expired, or left without being folded in
        return None
    return request


def _wait_for_wake(agent: str, wakes_seen: int, until: float) -> bool:
    """Sleep until `until` (monotonic); True as soon as the gateway reports freed capacity."""
    while time.monotonic() < until:
        time.sleep(min(WAKE_POLL_SECONDS, max(0.0, until - time.monotonic())))
        if agent_queue.read(agent).wakes != wakes_seen:
            return True
    return False


def _attempt(settings: Settings, agent: str, request: QueuedStart, pacer: Pacer) -> Outcome:
    """Claim the head's next attempt, call Pipecat Cloud, record the outcome."""
    attempt = int(request["next_attempt"])
    request_id = request["request_id"]
    if not start_requests.claim(request_id, attempt, LEASE_SECONDS, time.time()):
        return "skipped"  # moved on under us (cancelled, expired): re-read
    pacer.called()
    try:
        result = pcc_client.start(agent, start_requests.pcc_request(request),
                                  get_secrets().public_key.get_secret_value())
    except PccCallError as exc:
        if not is_retryable(exc):
            error = map_pcc_error(exc)
            _fail(request, error.code, str(error.detail), (start_requests.STARTING,))
            pacer.moved_on()
            return "failed"
        pacer.miss()
        reason = "pcc_at_capacity" if exc.status == 429 else f"pcc_{exc.status or exc.kind}"
        if not start_requests.requeue(request_id, attempt, time.time() + pacer.wait, reason):
            return "skipped"
        request.update({"state": start_requests.QUEUED, "next_attempt": attempt + 1, "attempts": attempt})
        return "retry"
    except Exception:  # noqa: BLE001 - no answer to act on (e.g. the secret is unreadable)
        logger.exception("queued start attempt failed", extra={"request_id": request_id})
        return _crashed(settings, request, attempt, pacer)
    session_id = str(result["sessionId"])
    response = client_response(request["transport"], result)
    try:
        completed = start_requests.complete(request, attempt, session_id, response.as_dict())
    except Exception:
        pcc_client.stop_if_running(agent, session_id)  # never leave an unrecorded bot behind a retry
        raise
    if not completed:
        logger.error("queued start lost its claim after starting a bot; stopping it",
                     extra={"request_id": request_id, "session_id": session_id})
        pcc_client.stop_if_running(agent, session_id)
        return "skipped"
    count("QueuedStartsStarted")
    pacer.success()
    logger.info("queued start served", extra={"request_id": request_id, "session_id": session_id,
                                               "attempt": attempt})
    return "started"


def _crashed(settings: Settings, request: QueuedStart, attempt: int, pacer: Pacer) -> Outcome:
    """An attempt that raised: hand it back, and fail the request once it has crashed MAX_RECEIVE_COUNT times
    (a poison request must not hold the head of the queue for ever)."""
    pacer.miss()
    failures = start_requests.release_claim(request["request_id"], attempt)
    if failures >= settings.max_receive_count:
        _fail(request, "worker_error", "The start could not be processed", (start_requests.QUEUED,))
        return "failed"
    return "skipped"  # re-read before the next try


def _fail(request: QueuedStart, code: str, detail: str, states: tuple[str, ...]) -> None:
    if start_requests.finish_without_session(request, start_requests.FAILED, code, detail, states):
        count("QueuedStartsFailed")
        logger.info("queued start failed", extra={"request_id": request["request_id"], "code": code})


def handle_message(body: str) -> dict[str, int]:
    """One worker message: `{"kind": "dispatch", "agent": ...}` (or a request message of the previous
    design, which names its agent). Raises on a malformed message (redelivered, then the DLQ)."""
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("agent"), str):
        logger.error("malformed queue message: left for the DLQ")
        raise ValueError("a queue message names its agent")
    agent = message["agent"]
    if agent not in get_settings().agents:
        logger.error("queue message for an unknown agent: dropped", extra={"agent": agent[:100]})
        return {}
    return run(agent, freed=message.get("freed") is True)
