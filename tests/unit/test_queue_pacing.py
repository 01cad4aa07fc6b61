"""The queue's arithmetic, without AWS: exact positions from (head, gone), and the dispatcher's pacing, on a clock
the tests move (the pacer's monotonic clock is replaced: no result depends on how fast the machine runs)."""

from __future__ import annotations

import itertools

import pytest

from chalicelib.start import pacing
from chalicelib.start.pacing import (
    GROW,
    SHRINK_AFTER_SUCCESS,
    SLOW_FACTOR,
    SLOW_MIN_SECONDS,
    STREAK,
    TARGET_SUCCESS,
    Pacer,
)
from chalicelib.store.agent_queue import QueueState


class Clock:
    """The pacing rule's `time`, stopped: `now` moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    stopped = Clock()
    monkeypatch.setattr(pacing, "time", stopped)
    return stopped


def test_positions_count_only_the_starts_still_waiting_ahead() -> None:
    state = QueueState("a", tail=10, head=4, gone={6, 7, 12})
    assert state.waiting() == 10 - 4 + 1 - 2  # 12 is not handed out yet: ignored
    assert [state.position(s) for s in (4, 5, 8, 9, 10)] == [1, 2, 3, 4, 5]
    assert QueueState("a").waiting() == 0


def test_eta_uses_the_measured_interval_or_the_default() -> None:
    assert QueueState("a", free_interval=0.5).eta_seconds(10, 3.0) == pytest.approx(5.0)
    assert QueueState("a").eta_seconds(10, 3.0) == pytest.approx(30.0)


def test_pacer_waits_before_the_first_try_and_backs_off_to_the_cap(clock: Clock) -> None:
    pacer = Pacer(base=0.5, cap=3.0, min_gap=0.2, interval=None)
    assert pacer.wait == 0.5 and pacer.next_call > clock.now
    pacer.called()
    waits = []
    for _ in range(6):
        pacer.miss()
        waits.append(pacer.wait)
    assert waits[0] == pytest.approx(0.5 * GROW) and waits[-1] == 3.0
    assert all(b >= a for a, b in itertools.pairwise(waits))


def test_a_refusal_among_attempts_in_flight_moves_the_wait_by_its_share() -> None:
    """Answers to attempts sent together carry one round trip's news: 4 refusals of 4 attempts in flight grow
    the wait as much as one refusal of one."""
    alone, together = (Pacer(base=1.0, cap=3.0, min_gap=0.01, interval=None) for _ in range(2))
    alone.miss(in_flight=1)
    for _ in range(4):
        together.miss(in_flight=4)
    assert together.wait == pytest.approx(alone.wait) == pytest.approx(GROW)


def test_successes_halve_the_wait_and_measure_the_drain_interval(clock: Clock) -> None:
    pacer = Pacer(base=1.0, cap=3.0, min_gap=0.01, interval=None)
    pacer.called()
    pacer.success()
    assert pacer.interval is None  # one success measures nothing yet
    assert pacer.wait == pytest.approx(1.0 * SHRINK_AFTER_SUCCESS)  # every answer so far a success
    pacer.last_success = clock.now - 1.0  # the next success comes 1 s later
    pacer.success()
    assert pacer.interval == pytest.approx(1.0)  # the drain rate, for the ETA
    assert pacer.wait == pytest.approx(SHRINK_AFTER_SUCCESS ** 2)


def test_with_refusals_calls_go_at_a_little_above_the_rate_of_successes() -> None:
    """Once some calls are refused, successes come at the rate capacity frees: the wait becomes TARGET_SUCCESS
    times the interval between them, whatever it was before."""
    pacer = Pacer(base=3.0, cap=3.0, min_gap=0.01, interval=None)
    t = 100.0
    for i in range(12):  # one call every 0.1 s, every other one refused: successes every 0.2 s
        if i % 2:
            pacer.success(sent_at=t + 0.1 * i)
        else:
            pacer.miss(sent_at=t + 0.1 * i)
    assert pacer.wait == pytest.approx(TARGET_SUCCESS * 1.1 / 6)


def test_a_run_of_successes_after_refusals_speeds_up_at_once() -> None:
    """Capacity that starts to free after a long refusal is not left waiting for the old refusals to age out
    of the history: STREAK successes in a row halve the wait with each."""
    pacer = Pacer(base=3.0, cap=3.0, min_gap=0.01, interval=None)
    for i in range(12):
        pacer.miss(sent_at=float(i))
    before = pacer.wait
    for i in range(STREAK):
        pacer.success(sent_at=12.0 + i)
    assert pacer.wait <= before * SHRINK_AFTER_SUCCESS


def test_a_new_run_starts_from_the_measured_interval() -> None:
    assert Pacer(base=1.0, cap=3.0, min_gap=0.01, interval=0.4).wait == pytest.approx(0.4 * TARGET_SUCCESS)


def test_pacer_never_calls_faster_than_the_bound_and_a_wake_cuts_the_wait(clock: Clock) -> None:
    pacer = Pacer(base=0.0001, cap=0.0001, min_gap=0.25, interval=0.001)
    assert pacer.wait == 0.25
    pacer.called()
    pacer.woken()
    assert pacer.next_call == pytest.approx(pacer.last_call + 0.25)
    slow = Pacer(base=3.0, cap=3.0, min_gap=0.1, interval=None)
    slow.woken()
    assert slow.next_call <= clock.now


def test_an_attempt_unanswered_well_past_a_refusal_counts_as_likely_started(clock: Clock) -> None:
    """Refusals are Pipecat Cloud's quick capacity check; a success waits for the bot. An attempt unanswered
    SLOW_FACTOR x the measured refusal time (at least SLOW_MIN_SECONDS) moves the pacer as a success would, once:
    its real success later does not shrink the wait a second time."""
    pacer = Pacer(base=1.0, cap=3.0, min_gap=0.01, interval=None)
    assert pacer.slow_after() is None  # nothing measured to compare with
    for _ in range(3):
        pacer.miss(sent_at=clock.now - 0.1)  # each refusal answered in 0.1 s
    assert pacer.slow_after() == pytest.approx(SLOW_FACTOR * 0.1)
    fast = Pacer(base=1.0, cap=3.0, min_gap=0.01, interval=None)
    fast.miss(sent_at=clock.now)
    assert fast.slow_after() == SLOW_MIN_SECONDS
    before = pacer.wait
    pacer.called()
    pacer.next_call = clock.now + 10
    pacer.likely_started()
    assert pacer.wait == pytest.approx(before * SHRINK_AFTER_SUCCESS) and pacer.next_call <= clock.now
    once = Pacer(base=1.0, cap=3.0, min_gap=0.01, interval=None)
    once.called()
    once.likely_started()
    once.success(once.last_call, foreseen=True)  # every answer a success, already acted on
    assert once.wait == pytest.approx(SHRINK_AFTER_SUCCESS)
    once.success(once.last_call)  # not foreseen: shrinks
    assert once.wait == pytest.approx(SHRINK_AFTER_SUCCESS ** 2)
