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

Pacing (chalicelib.start.pacing): calls are spaced by an interval that adapts to the rate at which capacity
frees, and an attempt unanswered well past the refusal time counts as a success for pacing:
- a wake-up (the gateway stopped a session, reconciliation saw one end) cuts the wait short;
- PCC is never asked more than DISPATCH_CALLS_PER_SECOND times a second for the agent.
The stored interval is also the queue's ETA (position x interval). Measured in bench/queue_scale.py.

A place is passed only once its request is known to have left the queue (a successful conditional write of ours,
or a read showing it terminal). A killed run (no except or finally of ours runs) is replaced by the watchdog
message it armed when it took the lease (`arm_watchdog`). Every request transition
stays conditional (chalicelib.store.queued_starts), so a second dispatcher (one that took over an expired lease)
can never start a request twice; a bot whose answer was lost is stopped by the orphan sweeper (no record claims
it). One attempt (claim, call, outcome) is chalicelib.start.attempt; the abandonment rule,
chalicelib.start.queued_start.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from chalicelib.platform.observability import logger
from chalicelib.platform.settings import Settings
from chalicelib.start import attempt as attempts
from chalicelib.start import gates, queued_start
from chalicelib.start.attempt import CallClock, Outcome
from chalicelib.start.pacing import Pacer
from chalicelib.start.queued_start import DEADLINE_DETAIL
from chalicelib.store import agent_queue, queued_starts
from chalicelib.store.queued_starts import QueuedStart

# Leases are stored in whole seconds and expire when `lease_until < now`: 2 s after LEASE_SECONDS at most.
WATCHDOG_DELAY_SECONDS = attempts.LEASE_SECONDS + 2
ENTRY_GRACE_SECONDS = 10  # a number handed out whose entry is still missing after this was abandoned
WAKE_POLL_SECONDS = 0.1
# Attempts counted as likely started (pacing.Pacer.likely_started) are guarded: at most FORESEEN_MAX of them
# unconfirmed beyond the successes recently confirmed, and none for the rest of the run once one ends in neither a
# bot nor a 429 (Pipecat Cloud slow or failing: no flood of calls).
FORESEEN_MAX = 16


@dataclass
class Flight:
    """An attempt in flight: its place, when it was sent, and how many were in flight then (itself too)."""

    seq: int
    future: Future[tuple[Outcome, QueuedStart]]
    sent_at: float
    in_flight: int
    foreseen: bool = False  # counted as likely started while it was still in flight
    clock: CallClock = field(default_factory=CallClock)


def arm_watchdog(agent: str) -> None:
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
        self.pacer = Pacer(base=settings.queue.retry_base_seconds, cap=settings.queue.retry_cap_seconds,
                           min_gap=1.0 / settings.queue.dispatch_calls_per_second, interval=state.free_interval)
        self.wakes_seen = state.wakes
        self.missing_since: dict[int, float] = {}
        self.known: dict[int, QueuedStart] = {}  # places read and still waiting (kept across retries)
        self.flights: dict[int, Flight] = {}
        self.foresee_off = False
        self.gated = False  # a start gate this agent depends on was seen closed
        self.lease_until = time.time() + attempts.LEASE_SECONDS

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
                if self.gated:
                    return  # a gate closed: no more calls; opening it wakes a dispatcher (start.gates.reopen)
                self._step(ends)
        finally:
            while self.flights:  # every attempt sent is seen to its outcome before the lease is let go
                self._settle(block=1.0)

    # ---------------------------------------------------------------- the queue as it is now
    def _refresh(self) -> bool:
        """Read (or now and then renew) the lease and the queue state; False when the lease was lost."""
        if self.lease_until - time.time() < attempts.LEASE_SECONDS / 2:  # renew (a write) only now and then
            renewed = agent_queue.acquire(self.agent, self.owner, attempts.LEASE_SECONDS)
            if renewed is None:
                logger.error("dispatcher lost its lease", extra={"agent": self.agent})
                return False
            self.state, self.lease_until = renewed, time.time() + attempts.LEASE_SECONDS
            arm_watchdog(self.agent)
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
        if seq is None or len(self.flights) >= self.settings.queue.dispatch_max_in_flight:
            self._settle(block=WAKE_POLL_SECONDS)  # everything waiting is being tried
            return
        request = self.known.get(seq) or self._read_place(seq)
        if request is None:
            return
        self.known[seq] = request
        now = time.time()
        if now >= request.deadline:
            # (not in flight here: a STARTING request is a dead dispatcher's claim)
            states = (queued_starts.QUEUED, queued_starts.STARTING)
            if attempts.failed_for_good(request, "deadline_exceeded", DEADLINE_DETAIL, states) == "failed":
                self._leave(seq)
                self.summary["failed"] += 1
            else:
                self.known.pop(seq, None)
            return
        if request.state == queued_starts.STARTING:
            if (request.lease_until or 0) >= now:  # a dead dispatcher's attempt: let its claim expire
                self._settle(block=min(1.0, max(0.0, ends - time.monotonic())))
                self.known.pop(seq, None)
                return
        if time.monotonic() < self.pacer.next_call:
            self._wait(min(self.pacer.next_call, ends))
            return  # decide again on a fresh read (a place cancelled meanwhile is skipped)
        if self._foresight_room() <= 0:  # as far ahead of the evidence as it may go: wait for answers
            self._settle(block=WAKE_POLL_SECONDS)
            return
        if not gates.is_open(self.agent):  # read before every call: a gate closes within one attempt
            self.gated = True
            self.summary["gated"] = 1
            return
        head = queued_start.head_to_try(self.settings, request)
        if head is None:
            self.summary["abandoned"] += 1
            self.known.pop(seq, None)
            return
        request = self.known[seq] = head
        sent_at = self.pacer.called()
        in_flight = len(self.flights) + 1
        clock = CallClock()
        future = self.pool.submit(attempts.attempt, self.settings, self.agent, request, self.pacer.wait, clock)
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
        request = queued_starts.get(str(entry["request_id"])) if entry.get("request_id") else None
        if request is None or request.state in queued_starts.TERMINAL:
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
        except Exception:  # noqa: BLE001 - attempts.attempt hands every failure back; this is a bug's last resort
            logger.exception("queued start attempt raised", extra={"agent": self.agent, "seq": flight.seq})
            outcome, request = "skipped", None
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
        if outcome == "retry" and request is not None:
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
