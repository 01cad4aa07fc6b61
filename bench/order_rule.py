"""The capacity queue's order rule (docs/capacity-queue.md), checked on the calls the gateway made: attempts start
in queue order, so a later place may get its bot before an earlier one only when both were being tried together
and the earlier one's attempt was refused (429). Shared by bench/queue_scale.py and the storm test.

`AttemptLog` records each Pipecat Cloud start call of this process with the marker `body.n` the caller put in the
start: a dispatcher's call timed as the dispatcher saw its attempt (sent to outcome recorded), a direct start's
call as the call itself. "Being tried together" is the overlap of two such intervals, not a guess from the
times Pipecat Cloud saw the calls arrive."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Attempt:
    marker: Hashable
    sent: float  # time.monotonic() of this process
    answered: float
    status: int  # 200, or the status Pipecat Cloud refused it with (0: no answer)


@dataclass
class AttemptLog:
    attempts: list[Attempt] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, marker: Hashable) -> list[Attempt]:
        with self._lock:
            return [a for a in self.attempts if a.marker == marker]

    @contextmanager
    def recording(self) -> Iterator[AttemptLog]:
        """Records every `chalicelib.pcc.client.start` call made while the block runs, on the monotonic clock. A
        call the dispatcher makes is timed as the dispatcher sees its attempt: from the moment it sent the attempt
        (its claim included) to the moment it recorded the outcome, both on the dispatcher's own thread, so "in
        flight together" is exactly the dispatcher's view and no race between threads can blur it."""
        from chalicelib.pcc import client
        from chalicelib.start import attempt as attempts
        from chalicelib.start import dispatcher

        real_start, real_attempt, real_record = client.start, attempts.attempt, dispatcher.Run._record
        local, outcomes = threading.local(), {}

        def start(agent: str, payload: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
            body = payload.get("body") if isinstance(payload, dict) else None
            marker = body.get("n") if isinstance(body, dict) else None
            sent, status = time.monotonic(), 0
            try:
                result = real_start(agent, payload, *args, **kwargs)
                status = 200
                return result
            except client.PccCallError as exc:
                status = exc.status or 0
                raise
            finally:
                if isinstance(marker, Hashable) and marker is not None:
                    if getattr(local, "clock", None) is not None:
                        outcomes[id(local.clock)] = (marker, status)
                    else:  # a direct start (POST /start, telephony): the call is the attempt
                        self._add(Attempt(marker, sent, time.monotonic(), status))

        def attempt(*args: Any, **kwargs: Any) -> Any:
            clock = kwargs.get("clock", args[4] if len(args) > 4 else None)
            local.clock = clock
            try:
                return real_attempt(*args, **kwargs)
            finally:
                local.clock = None

        def record(run: Any, flight: Any) -> None:
            found = outcomes.pop(id(flight.clock), None)
            if found is not None:
                self._add(Attempt(found[0], flight.sent_at, time.monotonic(), found[1]))
            real_record(run, flight)

        client.start, attempts.attempt, dispatcher.Run._record = start, attempt, record  # type: ignore[assignment,method-assign]
        try:
            yield self
        finally:
            client.start, attempts.attempt, dispatcher.Run._record = real_start, real_attempt, real_record  # type: ignore[method-assign]

    def _add(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)


def unexplained_inversions(places: Sequence[tuple[int, float, Hashable]],
                           log: AttemptLog) -> list[tuple[Hashable, Hashable]]:
    """`places`: (queue place, when its bot started, marker) of the queued starts that got a bot. The pairs
    (earlier, later) whose bots started against the queue order outside the rule: excused only when a refused
    (429) call of the earlier place was in flight together with the later place's successful call."""
    with log._lock:
        calls: dict[Hashable, list[Attempt]] = {}
        for attempt in log.attempts:
            calls.setdefault(attempt.marker, []).append(attempt)
    ordered = sorted(places, key=lambda p: p[0])
    found = []
    for i, (_, bot_i, earlier) in enumerate(ordered):
        refused = [a for a in calls.get(earlier, []) if a.status == 429]
        for _, bot_j, later in ordered[i + 1:]:
            if bot_j >= bot_i:
                continue
            won = [a for a in calls.get(later, []) if a.status == 200]
            if not any(r.sent <= w.answered and r.answered >= w.sent for r in refused for w in won):
                found.append((earlier, later))
    return found
