"""bench/probe_frontier.py: the capacity model and the probe schedules it compares."""

from __future__ import annotations

from bench.probe_frontier import frontier, probe


def test_a_refused_call_is_followed_after_the_wait_and_a_started_one_at_once() -> None:
    # one place, busy until 1 s: refused at 0 (wait 0.4 + 0.1 call), refused at 0.5, started at 1.0; then busy for
    # 5 s: the follow-up at 1.1 is refused, and the tries every 0.5 s find the place free at 6.1
    last, calls = probe([1.0], [5.0, 5.0], end_rate=1.0, after_429=0.4, after_200=0.0, overhead=0.1)
    assert round(last, 6) == 6.1
    assert calls == 3 + 11


def test_fixed_lengths_let_a_dispatcher_that_knows_the_rate_call_once_per_bot() -> None:
    """The benchmark's sessions all last C / r seconds: calling exactly every 1 / r seconds lands on every end."""
    result = frontier(5, 2.0, "fixed", starts=200, seeds=2, overhead=0.0)
    exact = next(p for p in result["points"] if p["after_429_wait_x_end_interval"] == 1.0
                 and p["after_200_wait_x_end_interval"] == 1.0)
    assert exact["drain_over_ideal"] == 1.0 and exact["calls_per_bot"] == 1.0


def test_with_varied_lengths_no_schedule_drains_within_1_10_at_capacity_5_on_1_34_calls() -> None:
    """The figure docs/performance.md quotes: capacity 5, sessions of varied length."""
    small = frontier(5, 2.0, "exponential", starts=400, seeds=10)
    assert small["best_calls_at_drain_1_10"] is not None and small["best_calls_at_drain_1_10"] > 1.34
    large = frontier(50, 10.0, "exponential", starts=400, seeds=10)
    assert large["best_calls_at_drain_1_10"] is not None and large["best_calls_at_drain_1_10"] <= 1.34
