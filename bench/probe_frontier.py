"""What any dispatcher that cannot see capacity can achieve: the trade between drain and Pipecat Cloud calls.

Pipecat Cloud does not say when a session ends, so a dispatcher learns that a place freed only by calling `/start`
and being answered 200 instead of 429. This model (no gateway code, no servers: pure arithmetic, seconds to run)
gives the best case of that: the rate at which places free is known exactly, and every call costs only
`--overhead` seconds. The capacity model is bench/queue_scale.py's: the agent is full at t=0, its C sessions end
1/r apart, every queued start's session lives C/r seconds (`--lengths fixed`, the benchmark) or a random time
of that mean (`--lengths exponential`: sessions whose lengths vary, as people's conversations do), a place left
empty frees nothing later, and the ideal is an instant first-in-first-out dispatcher on the same lengths.

The probe schedules tried: after a 429 the next call goes `a` / r seconds later, after a 200 `b` / r later (0: at
once, there may be more places free), for every pair of `a` in FACTORS and `b` in FOLLOW_FACTORS. For each pair
the run prints the drain over the ideal and the calls per started bot (the dispatcher's calls only:
bench/queue_scale.py also counts the burst's own direct tries, 16 per 100 starts there), and
`best_calls_at_drain_1_10`: the fewest calls per bot among the schedules that drain within 1.10x the ideal.

Why capacity 5 is the hard row: every place is refilled C/r seconds after it was filled, so a place found d
seconds late delays each later session of that place by d, and the drain grows by about d x r / C. At capacity 5
and 2 ends a second that is 0.4 per second of delay, ten times capacity 50's rate at 10 ends a second per place.

`python -m bench.probe_frontier --capacity 5 --end-rate 2 --lengths exponential` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from bench.queue_scale import Lengths, ideal_served

FACTORS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
FOLLOW_FACTORS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5)


def probe(first_ends: list[float], lengths: list[float], end_rate: float, after_429: float, after_200: float,
          overhead: float) -> tuple[float, int]:
    """(when the last start got its bot, calls made) for one probe schedule: each call takes `overhead` seconds,
    then the next waits `after_429` or `after_200` intervals between ends (1 / `end_rate`)."""
    capacity, running = len(first_ends), list(first_ends)
    now, served, calls, last = 0.0, 0, 0, 0.0
    while served < len(lengths):
        calls += 1
        running = [end for end in running if end > now]
        if len(running) < capacity:
            running.append(now + lengths[served])
            served, last = served + 1, now
            now += overhead + after_200 / end_rate
        else:
            now += overhead + after_429 / end_rate
    return last, calls


def frontier(capacity: int, end_rate: float, lengths: str, starts: int = 400, seeds: int = 20,
             overhead: float = 0.03) -> dict[str, Any]:
    points = []
    shapes = [Lengths.draw(lengths, capacity, end_rate, starts, seed) for seed in range(seeds)]
    # every start queued before the places start to free (t0 = 0), served in the order of their numbers
    ideals = [max(ideal_served(dict.fromkeys(range(starts), -1.0), capacity, end_rate, 0.0, shape)) for shape in shapes]
    for after_429 in FACTORS:
        for after_200 in FOLLOW_FACTORS:
            drains, calls = [], []
            for shape, ideal in zip(shapes, ideals, strict=True):
                last, made = probe(shape.first_ends, [shape.by_start[n] for n in range(starts)], end_rate,
                                   after_429, after_200, overhead)
                drains.append(last / ideal)
                calls.append(made / starts)
            points.append({"after_429_wait_x_end_interval": after_429, "after_200_wait_x_end_interval": after_200,
                           "drain_over_ideal": round(statistics.mean(drains), 3),
                           "calls_per_bot": round(statistics.mean(calls), 2)})
    within = [p["calls_per_bot"] for p in points if p["drain_over_ideal"] <= 1.10]
    return {"capacity": capacity, "end_rate_per_s": end_rate, "lengths": lengths, "starts": starts, "seeds": seeds,
            "points": points, "best_calls_at_drain_1_10": min(within) if within else None}


def summary() -> dict[str, Any]:
    """`make bench`'s rows: the fewest calls per bot within 1.10x of the ideal drain, per shape."""
    return {f"capacity_{c}_{kind}_lengths_best_calls_at_drain_1_10": frontier(c, rate, kind)["best_calls_at_drain_1_10"]
            for c, rate in ((5, 2.0), (50, 10.0)) for kind in ("fixed", "exponential")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=5)
    parser.add_argument("--end-rate", type=float, default=2.0, help="sessions ending per second")
    parser.add_argument("--lengths", choices=("fixed", "exponential"), default="exponential")
    parser.add_argument("--starts", type=int, default=400)
    parser.add_argument("--overhead", type=float, default=0.03, help="seconds one call takes to answer")
    args = parser.parse_args(argv)
    print(json.dumps(frontier(args.capacity, args.end_rate, args.lengths, args.starts, overhead=args.overhead)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
