"""The capacity queue's dispatcher: one per agent at a time (the lease on the agent's queue,
chalicelib.store.agent_queue), trying the agent's FIFO against Pipecat Cloud until the queue is empty or its run
time (DISPATCH_RUN_SECONDS) is up; then it hands over to a fresh invocation.

Pipelined. Pipecat Cloud takes seconds to answer a start (the bot is starting), so one attempt at a time would
cap the queue at 1 / (that round trip) starts a second whatever capacity frees. The dispatcher keeps up to
DISPATCH_MAX_IN_FLIGHT attempts in flight, on consecutive places, and its order rule is:
- places are tried in queue order: a new attempt is always for the earliest place still waiting that is not
  already being tried (a place refused with a 429 is tried again before any later place is tried at all);
- so a later place gets its bot before an earlier one only when both were being tried together and the
  earlier one's attempt was refused (429): capacity that freed went to the attempt that reached it.
bench/queue_scale.py counts the pairs outside that rule (`order_inversions`).

Pacing. Calls are spaced by an interval that adapts to the rate at which capacity frees (SHRINK_* / GROW
below), between 1 / DISPATCH_CALLS_PER_SECOND and RETRY_CAP_SECONDS; it starts at RETRY_BASE_SECONDS, or from
the interval between successes measured by the previous run (Pacer: the rate of recent successes sets it once
calls are being refused; a refusal's growth is spread over the attempts in flight, so it moves as much per
round trip at any latency, as TCP grows its window by 1/w per ACK). A refusal is Pipecat Cloud's quick capacity
check while a success waits for the bot, so an attempt unanswered well past the refusal time counts as a success
for pacing (Pacer.likely_started): the pace follows capacity, not the bot's start time.
- a wake-up (the gateway stopped a session, reconciliation saw one end) cuts the wait short;
- PCC is never asked more than DISPATCH_CALLS_PER_SECOND times a second for the agent.
The stored interval is also the queue's ETA (position x interval). Measured in bench/queue_scale.py.

A place is passed only once its request is known to have left the queue (a successful conditional write of ours,
or a read showing it terminal). A killed run (no except or finally of ours runs) is replaced by the watchdog
message it armed when it took the lease, delivered just after the lease would expire. Every request transition
stays conditional (chalicelib.store.queued_starts), so a second dispatcher (one that took over an expired lease)
can never start a request twice; a bot whose answer was lost is stopped by the orphan sweeper (no record claims
it).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal

from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.pcc.responses import client_response, is_retryable, map_pcc_error
from chalicelib.platform.observability import count, logger, untag_request
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
# Pacing (Pacer): the wait halves with each success while every recent answer is one, grows x1.5 per round
# trip of refusals, and otherwise spaces calls at TARGET_SUCCESS x the interval between recent successes;
# tuned on the capacity model of bench/queue_scale.py (drain <= 1.10x the ideal at <= 1.5 calls per bot).
SHRINK_AFTER_SUCCESS, GROW, TARGET_SUCCESS, SMOOTHING = 0.5, 1.5, 0.85, 0.3
HISTORY_MIN, RATE_SAMPLES, STREAK, HISTORY_SECONDS = 12, 4, 2, 3.0
# A refusal (429) is Pipecat Cloud's quick capacity check; a success waits for the bot to start (0.5-3 s). So an
# attempt still unanswered SLOW_FACTOR x the measured refusal time after it was sent (and at least SLOW_MIN_SECONDS)
# has very likely found capacity: the next place goes then, not one bot start later (Pacer.likely_started).
# Guarded: at most FORESEEN_MAX such attempts unconfirmed beyond the successes recently confirmed, and none for the
# rest of the run once one ends in neither a bot nor a 429 (Pipecat Cloud slow or failing: no flood of calls).
SLOW_FACTOR, SLOW_MIN_SECONDS, REFUSAL_SMOOTHING, FORESEEN_MAX = 3.0, 0.2, 0.2, 16
DEADLINE_DETAIL = "Pipecat Cloud stayed at capacity until the deadline"
ABANDONED_DETAIL = "nobody asked about it for QUEUED_ABANDON_SECONDS, so no bot was started for it"

Outcome = Literal["started", "retry", "failed", "skipped"]


@dataclass
class Pacer:
    """When the next attempt may be sent (monotonic clock), adapting to the rate at which capacity frees.

    From the last answers (HISTORY_MIN, or twice the attempts in flight, sent within HISTORY_SECONDS of the
    newest):
    - all of them successes, or STREAK successes in a row: capacity was waiting for us (or has started to free
      again after a long refusal), so the next place goes at once and the wait halves with each success;
    - refusals among them, and enough answers to measure: calls go at 1 / TARGET_SUCCESS times the rate of
      successes they show (while some calls are refused, successes come at the rate capacity frees), so about
      1 call in 6 is refused and a place that frees waits a fraction of the interval for the next call;
    - too few answers yet, or only refusals: the wait grows by GROW per round trip of refusals.
    """

    base: float
    cap: float
    min_gap: float
    interval: float | None  # measured seconds between successes: the drain rate, for the ETA
    wait: float = 0.0
    last_call: float = float("-inf")
    last_success: float | None = None
    next_call: float = 0.0
    streak: int = 0  # successes since the last refusal
    history: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=HISTORY_MIN))
    refusal_seconds: float | None = None  # smoothed send -> answer time of refused attempts

    def __post_init__(self) -> None:
        self.wait = self._clamp(TARGET_SUCCESS * self.interval if self.interval else self.base)
        self.next_call = time.monotonic() + self.wait  # a 429 just queued the work: not at once

    def _clamp(self, seconds: float) -> float:
        return max(self.min_gap, min(self.cap, seconds))

    def called(self) -> float:
        """An attempt is sent now; returns its send time (hand it back with its answer)."""
        self.last_call = time.monotonic()
        self.next_call = self.last_call + self.wait
        return self.last_call

    def success(self, sent_at: float | None = None, in_flight: int = 1, *, foreseen: bool = False) -> float | None:
        """Capacity was there (`foreseen`: likely_started already acted on it). Returns the measured interval
        between successes (the ETA's drain rate)."""
        now = time.monotonic()
        if self.last_success is not None:
            gap = now - self.last_success
            self.interval = gap if self.interval is None else SMOOTHING * gap + (1 - SMOOTHING) * self.interval
        self.last_success = now
        self._answered(self.last_call if sent_at is None else sent_at, True, in_flight, foreseen=foreseen)
        return self.interval

    def miss(self, sent_at: float | None = None, in_flight: int = 1, took: float | None = None) -> None:
        """Refused (429); `took`: how long Pipecat Cloud took to refuse (its call alone), else since `sent_at`."""
        sent = self.last_call if sent_at is None else sent_at
        took = max(0.0, time.monotonic() - sent if took is None else took)
        self.refusal_seconds = took if self.refusal_seconds is None else \
            REFUSAL_SMOOTHING * took + (1 - REFUSAL_SMOOTHING) * self.refusal_seconds
        self._answered(sent, False, in_flight)

    def slow_after(self) -> float | None:
        """How long an attempt may stay unanswered before it counts as likely started (None: no refusal measured
        yet, so nothing to compare with)."""
        if self.refusal_seconds is None:
            return None
        return max(SLOW_MIN_SECONDS, SLOW_FACTOR * self.refusal_seconds)

    def likely_started(self) -> None:
        """An attempt is unanswered past slow_after(): it is starting a bot. It counts in the streak of successes
        at once (its real answer is recorded later with foreseen=True and does not count twice), and moves the
        pace as a success would where that is clear: capacity starting to free after refusals only (no success
        among the recent answers), or STREAK successes in a row: the next place goes at once, the wait shrinks.
        Amid a mix of answers, pacing stays on the measured rate."""
        self.streak += 1
        successes = sum(1 for _, ok in self.history if ok)
        if successes == 0 or successes == len(self.history) or self.streak >= STREAK:
            self.wait = self._clamp(self.wait * SHRINK_AFTER_SUCCESS)
            self.next_call = time.monotonic()

    def _answered(self, sent_at: float, ok: bool, in_flight: int, *, foreseen: bool = False) -> None:
        size = max(HISTORY_MIN, 2 * in_flight)
        if self.history.maxlen != size:
            self.history = deque(self.history, maxlen=size)
        self.history.append((sent_at, ok))
        while len(self.history) > RATE_SAMPLES and self.history[0][0] < sent_at - HISTORY_SECONDS:
            self.history.popleft()  # the news of a few seconds ago, not of a long refusal before
        self.streak = (self.streak if foreseen else self.streak + 1) if ok else 0
        successes = sum(1 for _, success in self.history if success)
        span = max(t for t, _ in self.history) - min(t for t, _ in self.history)
        if successes == len(self.history) or self.streak >= STREAK:
            if not foreseen:
                self.wait = self._clamp(self.wait * SHRINK_AFTER_SUCCESS)
                self.next_call = time.monotonic()  # capacity is there: the next place goes at once
            return
        if successes and len(self.history) >= RATE_SAMPLES and span > 0:
            self.wait = self._clamp(TARGET_SUCCESS * span / successes)
        elif not ok:
            self.wait = self._clamp(self.wait * GROW ** (1 / max(1, in_flight)))
        self.next_call = self.last_call + self.wait

    def moved_on(self) -> None:
        """A place left without a capacity answer (failed for good): the next may go at once."""
        self.next_call = self.last_call + self.min_gap

    def woken(self) -> None:
        self.next_call = max(time.monotonic(), self.last_call + self.min_gap)


@dataclass
class CallClock:
    """When an attempt's Pipecat Cloud call left and was answered (monotonic), set by the attempt's thread."""

    sent: float | None = None
    answered: float | None = None
    refused: bool = False  # answered 429


@dataclass
class Flight:
    """An attempt in flight: its place, when it was sent, and how many were in flight then (itself too)."""

    seq: int
    future: Future[tuple[Outcome, QueuedStart]]
    sent_at: float
    in_flight: int
    foreseen: bool = False  # counted as likely started while it was still in flight
    clock: CallClock = field(default_factory=CallClock)


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
        with ThreadPoolExecutor(max_workers=settings.dispatch_max_in_flight,
                                thread_name_prefix="dispatch") as pool:
            Run(settings, agent, owner, state, pool, summary).loop(
                budget_seconds or settings.dispatch_run_seconds, freed)
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
    """A wake-up due just after this run's lease (and its attempts' claims) would run out. If this invocation
    is killed (no except or finally of ours runs), the next dispatcher starts then: recovery takes
    WATCHDOG_DELAY_SECONDS, not the message's visibility timeout (360 s) or the next reconcile run. A run
    that ends normally hands over first, so its watchdog finds the next run's lease and is dropped (or an
    empty queue)."""
    try:
        agent_queue.send_wake(agent, delay_seconds=WATCHDOG_DELAY_SECONDS)
    except Exception:  # noqa: BLE001 - the reconcile schedule restarts idle queues
        logger.warning("could not arm the dispatcher's watchdog", extra={"agent": agent})


class Run:
    """One dispatcher run's loop: the main thread reads the queue, decides and records; attempts run on
    `pool` (each claims its place's request, calls Pipecat Cloud and writes the outcome, nothing else)."""

    def __init__(self, settings: Settings, agent: str, owner: str, state: agent_queue.QueueState,
                 pool: ThreadPoolExecutor, summary: dict[str, int]) -> None:
        self.settings, self.agent, self.owner, self.state, self.pool = settings, agent, owner, state, pool
        self.summary = summary
        self.pacer = Pacer(base=settings.retry_base_seconds, cap=settings.retry_cap_seconds,
                           min_gap=1.0 / settings.dispatch_calls_per_second, interval=state.free_interval)
        self.wakes_seen = state.wakes
        self.missing_since: dict[int, float] = {}
        self.known: dict[int, QueuedStart] = {}  # places read and still waiting (kept across retries)
        self.flights: dict[int, Flight] = {}
        self.foresee_off = False
        self.lease_until = time.time() + LEASE_SECONDS

    def loop(self, budget: float, freed: bool) -> None:
        if freed:
            self.pacer.woken()
        ends = time.monotonic() + budget
        try:
            while time.monotonic() < ends:
                self._settle(block=0.0)
                if not self._refresh():
                    return
                if self.state.waiting() == 0 and not self.flights:
                    return
                self._step(ends)
        finally:
            while self.flights:  # every attempt sent is seen to its outcome before the lease is let go
                self._settle(block=1.0)

    # ---------------------------------------------------------------- the queue as it is now
    def _refresh(self) -> bool:
        """Read (or now and then renew) the lease and the queue state; False when the lease was lost."""
        if self.lease_until - time.time() < LEASE_SECONDS / 2:  # renew (a write) only now and then
            renewed = agent_queue.acquire(self.agent, self.owner, LEASE_SECONDS)
            if renewed is None:
                logger.error("dispatcher lost its lease", extra={"agent": self.agent})
                return False
            self.state, self.lease_until = renewed, time.time() + LEASE_SECONDS
            _arm_watchdog(self.agent)
        else:
            self.state = agent_queue.read(self.agent)
            if self.state.lease_owner != self.owner:
                logger.error("dispatcher lost its lease", extra={"agent": self.agent})
                return False
        self.state = agent_queue.fold_head(self.state)
        for seq in [s for s in self.known if s < self.state.head or s in self.state.gone]:
            del self.known[seq]  # left the queue (e.g. cancelled by its owner)
        if self.state.wakes != self.wakes_seen:
            self.wakes_seen = self.state.wakes
            self.pacer.woken()
        return True

    def _next_place(self) -> int | None:
        """The earliest place still waiting that no attempt of ours is trying."""
        seq = self.state.head
        while seq <= self.state.tail:
            if seq not in self.state.gone and seq not in self.flights:
                return seq
            seq += 1
        return None

    # ---------------------------------------------------------------- one decision
    def _step(self, ends: float) -> None:
        seq = self._next_place()
        if seq is None or len(self.flights) >= self.settings.dispatch_max_in_flight:
            self._settle(block=WAKE_POLL_SECONDS)  # everything waiting is being tried
            return
        request = self.known.get(seq) or self._read_place(seq)
        if request is None:
            return
        self.known[seq] = request
        now = time.time()
        if now >= request["deadline"]:
            # (not in flight here: a STARTING request is a dead dispatcher's claim)
            states = (start_requests.QUEUED, start_requests.STARTING)
            if _failed_for_good(request, "deadline_exceeded", DEADLINE_DETAIL, states) == "failed":
                self._leave(seq)
                self.summary["failed"] += 1
            else:
                self.known.pop(seq, None)
            return
        if request["state"] == start_requests.STARTING:
            if request.get("lease_until", 0) >= now:  # a dead dispatcher's attempt: let its claim expire
                self._settle(block=min(1.0, max(0.0, ends - time.monotonic())))
                self.known.pop(seq, None)
                return
        if time.monotonic() < self.pacer.next_call:
            self._wait(min(self.pacer.next_call, ends))
            return  # decide again on a fresh read (a place cancelled meanwhile is skipped)
        if self._foresight_room() <= 0:  # as far ahead of the evidence as it may go: wait for answers
            self._settle(block=WAKE_POLL_SECONDS)
            return
        if _abandoned(self.settings, request):
            self.summary["abandoned"] += 1
            self.known.pop(seq, None)
            return
        sent_at = self.pacer.called()
        in_flight = len(self.flights) + 1
        clock = CallClock()
        future = self.pool.submit(_attempt, self.settings, self.agent, dict(request), self.pacer.wait,  # type: ignore[arg-type]
                                  clock)
        self.flights[seq] = Flight(seq, future, sent_at, in_flight, clock=clock)

    def _read_place(self, seq: int) -> QueuedStart | None:
        """The request at place `seq`, or None after dealing with a place that holds none."""
        entry = agent_queue.entry(self.agent, seq)
        if entry is None:  # handed out, not written yet (or never will be: its Lambda died)
            first = self.missing_since.setdefault(seq, time.monotonic())
            if time.monotonic() - first > ENTRY_GRACE_SECONDS and agent_queue.abandon(self.agent, seq):
                logger.warning("queue place abandoned", extra={"agent": self.agent, "seq": seq})
                self._leave(seq)
            else:
                self._settle(block=0.05)
            return None
        request = start_requests.get(str(entry["request_id"])) if entry.get("request_id") else None
        if request is None or request["state"] in start_requests.TERMINAL:
            self._leave(seq)  # cancelled, expired, or left without being folded in (or an abandoned number)
            return None
        return request

    def _wait(self, until: float) -> None:
        """Until `until` (monotonic), an attempt's answer, or a wake-up from the gateway (freed capacity)."""
        while time.monotonic() < until:
            if self._settle(block=min(WAKE_POLL_SECONDS, max(0.0, until - time.monotonic()))):
                return
            if agent_queue.read(self.agent).wakes != self.wakes_seen:
                return  # _refresh sees the change and cuts the wait short

    # ---------------------------------------------------------------- outcomes
    def _settle(self, block: float) -> bool:
        """Record the outcomes of the attempts that have answered (waiting up to `block` seconds for one);
        True when at least one did."""
        flights = {f.future: f for f in self.flights.values()}
        if not flights:
            if block:
                time.sleep(block)
            return False
        foresee = self._foresee()
        if foresee is not None:
            block = min(block, foresee)
        done, _ = wait(flights, timeout=block, return_when=FIRST_COMPLETED)
        for future in done:
            self._record(flights[future])
        return bool(done) or foresee == 0.0 or self._foresee() == 0.0

    def _foresight_room(self) -> int:
        """How many more attempts may be counted as likely started: FORESEEN_MAX beyond the successes recently
        confirmed, less those counted so and still unanswered."""
        unconfirmed = sum(1 for f in self.flights.values() if f.foreseen)
        return FORESEEN_MAX + sum(1 for _, ok in self.pacer.history if ok) - unconfirmed

    def _foresee(self) -> float | None:
        """Count the attempts unanswered past the pacer's slow_after() as likely started (0.0 when one is now);
        else the seconds until the next one would be (None: none will)."""
        slow_after = self.pacer.slow_after()
        if slow_after is None or self.foresee_off:
            return None
        now, soonest, noted = time.monotonic(), None, False
        room = self._foresight_room()
        for flight in sorted(self.flights.values(), key=lambda f: f.seq):
            called = flight.clock.sent
            if flight.foreseen or called is None or flight.clock.answered is not None:
                continue
            due = called + slow_after - now
            if due <= 0 and room > 0:
                flight.foreseen = noted = True
                room -= 1
                self.pacer.likely_started()
            elif due > 0 and (soonest is None or due < soonest):
                soonest = due
        return 0.0 if noted else soonest

    def _record(self, flight: Flight) -> None:
        del self.flights[flight.seq]
        try:
            outcome, request = flight.future.result()
        except Exception:  # noqa: BLE001 - _attempt hands every failure back; this is a bug's last resort
            logger.exception("queued start attempt raised", extra={"agent": self.agent, "seq": flight.seq})
            outcome, request = "skipped", {}
        if flight.foreseen and outcome != "started" and not flight.clock.refused and not self.foresee_off:
            self.foresee_off = True  # slow for another reason than a bot starting: stop guessing this run
            self.pacer.wait = self.pacer.cap  # and undo what the guesses did to the pace
            logger.warning("a start foreseen as a success was not one; pacing on answers only",
                           extra={"agent": self.agent})
        if outcome == "started":
            self.pacer.success(flight.sent_at, flight.in_flight, foreseen=flight.foreseen)
            self._leave(flight.seq, self.pacer.interval)
        elif outcome == "failed":
            self.pacer.moved_on()
            self._leave(flight.seq)
        elif outcome == "retry":
            clock = flight.clock
            took = clock.answered - clock.sent if clock.sent is not None and clock.answered is not None else None
            self.pacer.miss(flight.sent_at, flight.in_flight, took=took)
        if outcome == "retry":
            self.known[flight.seq] = request  # the retried place is kept, not re-read
        else:
            self.known.pop(flight.seq, None)
        self.summary[{"started": "started", "retry": "retried", "failed": "failed", "skipped": "skipped"}[outcome]] += 1

    def _leave(self, seq: int, free_interval: float | None = None) -> None:
        """Place `seq` has left the queue, its request known to be terminal: pass it."""
        if seq == self.state.head:
            agent_queue.advance(self.agent, seq, free_interval)
        else:
            agent_queue.mark_gone(self.agent, seq)
        self.state.gone.add(seq)
        self.known.pop(seq, None)

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


def _attempt(settings: Settings, agent: str, request: QueuedStart, retry_wait: float,
             clock: CallClock | None = None) -> tuple[Outcome, QueuedStart]:
    """Claim the request's next attempt, call Pipecat Cloud, record the outcome (on a dispatcher thread: it
    touches only this request and `clock`). "failed" only once the request is known to be terminal."""
    attempt = int(request["next_attempt"])
    request_id = request["request_id"]
    if not start_requests.claim(request_id, attempt, LEASE_SECONDS, time.time()):
        return "skipped", request  # moved on under us (cancelled, expired): re-read
    try:
        return _attempt_claimed(agent, request, attempt, retry_wait, clock or CallClock())
    except Exception:  # noqa: BLE001 - no answer to act on (e.g. the secret is unreadable, DynamoDB failed)
        logger.exception("queued start attempt failed", extra={"request_id": request_id})
        return _crashed(settings, request, attempt)


def _attempt_claimed(agent: str, request: QueuedStart, attempt: int, retry_wait: float,
                     clock: CallClock) -> tuple[Outcome, QueuedStart]:
    request_id = request["request_id"]
    try:
        payload, key = start_requests.pcc_request(request), get_secrets().public_key.get_secret_value()
        clock.sent = time.monotonic()
        try:
            result = pcc_client.start(agent, payload, key)
        except PccCallError as exc:
            clock.refused = exc.status == 429
            raise
        finally:
            clock.answered = time.monotonic()
    except PccCallError as exc:
        if not is_retryable(exc):
            error = map_pcc_error(exc)
            return _failed_for_good(request, error.code, str(error.detail), (start_requests.STARTING,)), request
        reason = "pcc_at_capacity" if exc.status == 429 else f"pcc_{exc.status or exc.kind}"
        if not start_requests.requeue(request_id, attempt, time.time() + retry_wait, reason):
            return "skipped", request
        request.update({"state": start_requests.QUEUED, "next_attempt": attempt + 1, "attempts": attempt})
        return "retry", request
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
        return "skipped", request
    count("QueuedStartsStarted")
    logger.info("queued start served", extra={"request_id": request_id, "session_id": session_id,
                                               "attempt": attempt})
    return "started", request


def _crashed(settings: Settings, request: QueuedStart, attempt: int) -> tuple[Outcome, QueuedStart]:
    """An attempt that raised: hand it back, and fail the request once it has crashed MAX_RECEIVE_COUNT times
    (a poison request must not hold the head of the queue for ever)."""
    failures = start_requests.release_claim(request["request_id"], attempt)
    if failures >= settings.max_receive_count:
        return _failed_for_good(request, "worker_error", "The start could not be processed",
                                (start_requests.QUEUED,)), request
    return "skipped", request  # re-read before the next try


def _failed_for_good(request: QueuedStart, code: str, detail: str, states: tuple[str, ...]) -> Outcome:
    """Fail the request; "failed" when it is terminal now (by this write or another), else "skipped"."""
    if _fail(request, code, detail, states):
        return "failed"
    fresh = start_requests.get(request["request_id"])
    return "failed" if fresh is None or fresh["state"] in start_requests.TERMINAL else "skipped"


def _fail(request: QueuedStart, code: str, detail: str, states: tuple[str, ...]) -> bool:
    if start_requests.finish_without_session(request, start_requests.FAILED, code, detail, states):
        count("QueuedStartsFailed")
        logger.info("queued start failed", extra={"request_id": request["request_id"], "code": code})
        return True
    return False


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
    untag_request("user_id")  # a dispatcher run serves many users (where a thread also served a request)
    agent = message["agent"]
    if agent not in get_settings().agents:
        logger.error("queue message for an unknown agent: dropped", extra={"agent": agent[:100]})
        return {}
    return run(agent, freed=message.get("freed") is True)
