"""The capacity queue at a given scale: capacity C, sessions freeing at r per second, Pipecat Cloud answering a
successful start L seconds after its bot exists, N starts from U users.

The capacity model is the emulator's and does not depend on the gateway:
- the agent is full while the burst of starts is sent (so every one of them queues), then its C sessions end
  1/r apart from that moment t0 (`prefill`, then `retime`);
- every session lives exactly C/r seconds from the moment its bot exists (the agent's max_session_seconds),
  so a place the gateway leaves empty frees nothing later;
- the ideal is an instant FIFO dispatcher on the same schedule: each start, in the order it was sent, takes
  the earliest free place at max(its send time, the place's free time), and holds it C/r seconds;
- with `--lengths exponential` sessions vary in length, as conversations do: each start's session lives a random
  time of mean C/r (`--seed`; the emulator's `session-lengths`), the C running sessions end at random times of
  that mean after t0, and the ideal holds each place for the same start's length (bench/probe_frontier.py gives
  what any dispatcher that cannot see capacity can achieve on each kind).
Every figure is counted from the sources of truth: the emulator's bots (when each exists, and the `n` its
body carries) and calls (`/_emulator/start-calls`), and the request records in DynamoDB.

Printed, one JSON object per run:
- drain_over_ideal: (last bot started - t0) / (the same for the ideal dispatcher), t0 being when capacity starts
  to free (the first start sent, with --no-prefill);
- served_per_s, freed_per_s: bots started per second over the drain; sessions that ended per second over it;
- queued_to_started_p50_s / p95_s: bot started - start sent, for the starts answered 202;
- order_inversions: pairs of queued starts whose bots started in the opposite order of their queue places
  outside the dispatcher's rule (docs/capacity-queue.md; bench/order_rule.py): the later one is excused only when
  a refused (429) call of the earlier one was in flight together with the later one's successful call, as the
  gateway made them; plus starts sent after a 202 came back that got a bot before it;
- pcc_calls_per_served: POST .../start calls the emulator received / bots it started;
- dynamodb_calls_per_queued_start and queue_state_calls_per_queued_start: every DynamoDB call this process made
  during the run, and those on the agent's `QUEUE#` STATE item, divided by the starts answered 202 (null when none was);

- harness_ceiling_per_s: starts per second the harness itself sustains on this machine (moto and the emulator
  under the same calls per start, the same threads, no gateway logic: `harness_ceiling`), and
  drain_over_ceiling: the drain over the larger of the ideal drain and (starts served / that ceiling).

Usage: `python -m bench.queue_scale --capacity 50 --end-rate 10 --latency 1.5`
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness import BenchStack, percentile
from bench.order_rule import AttemptLog, unexplained_inversions

WORKERS = 5  # the worker's SQS event source maximum concurrency (infra/template.yaml)
BURST_THREADS = 16
AGENT = "my-agent"


class CallCounter:
    """Counts this process's DynamoDB calls (all, and those on a QUEUE# STATE item) while it is on."""

    def __init__(self) -> None:
        self.calls = self.state_calls = 0
        self.on = False
        self._lock = threading.Lock()
        self.local = threading.local()  # `.mute`: the benchmark's own reads (its wait for the outcomes)

    def install(self) -> None:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        counter = self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if counter.on and client.meta.service_model.service_name == "dynamodb" \
                    and not getattr(counter.local, "mute", False):
                with counter._lock:
                    counter.calls += 1
                    counter.state_calls += _touches_queue_state(params)
            return original(client, operation, params)

        BaseClient._make_api_call = counted  # type: ignore[method-assign]


def _touches_queue_state(params: dict[str, Any]) -> int:
    keys = [params.get("Key")] + [item.get(op, {}).get("Key") or item.get(op, {}).get("Item")
                                  for item in params.get("TransactItems", []) for op in item]
    return sum(1 for key in keys if isinstance(key, dict) and _plain(key.get("SK")) == "STATE"
               and str(_plain(key.get("PK"))).startswith("QUEUE#"))


def _plain(value: Any) -> Any:
    return value.get("S") if isinstance(value, dict) else value


@dataclass
class Lengths:
    """How long sessions live: `fixed` (C/r each, the prefilled ones ending 1/r apart) or `exponential` (drawn)."""

    kind: str = "fixed"
    first_ends: list[float] = field(default_factory=list)  # seconds after t0 the prefilled sessions end
    by_start: dict[int, float] = field(default_factory=dict)  # each start's (its body's `n`) session length

    @classmethod
    def draw(cls, kind: str, capacity: int, end_rate: float, starts: int, seed: int) -> Lengths:
        mean = capacity / end_rate
        if kind == "fixed":
            return cls(kind, [(k + 1) / end_rate for k in range(capacity)], dict.fromkeys(range(starts), mean))
        rng = random.Random(seed)
        return cls(kind, sorted(rng.expovariate(1 / mean) for _ in range(capacity)),
                   {n: rng.expovariate(1 / mean) for n in range(starts)})


def ideal_served(sent: dict[int, float], capacity: int, end_rate: float, t0: float | None,
                 lengths: Lengths | None = None) -> list[float]:
    """When an instant FIFO dispatcher would start each start (`n` -> when it was sent; served in send order) on
    the model's schedule (`t0`: when the prefilled sessions start to end; None: the agent starts empty)."""
    lengths = lengths or Lengths.draw("fixed", capacity, end_rate, max(sent, default=-1) + 1, 0)
    free = [t0 + end if t0 is not None else float("-inf") for end in lengths.first_ends]
    heapq.heapify(free)
    served = []
    for n, at in sorted(sent.items(), key=lambda item: item[1]):
        start = max(at, heapq.heappop(free))
        served.append(start)
        heapq.heappush(free, start + lengths.by_start[n])
    return served


def run(capacity: int, end_rate: float, latency: float, starts: int | None = None, users: int | None = None,
        arrival_rate: float = 0.0, prefill: bool = True, extra_env: dict[str, str] | None = None,
        refuse_first: int = 0, lengths: str = "fixed", seed: int = 0) -> dict[str, Any]:
    starts = starts if starts is not None else max(100, 3 * capacity)
    users = users or starts
    shape = Lengths.draw(lengths, capacity, end_rate, starts, seed)
    counter = CallCounter()
    counter.install()
    env = {"USER_SESSION_LIMIT": "10", "START_DEADLINE_SECONDS": "900", "QUEUED_ABANDON_SECONDS": "0",
           "MAX_QUEUED": str(max(1000, 2 * starts)), "START_RATE_PER_MINUTE": "1000",
           # the operator's setting for an agent whose capacity frees this fast (docs/capacity-queue.md)
           "DISPATCH_CALLS_PER_SECOND": str(max(20, round(2 * end_rate))), **(extra_env or {})}
    stack = BenchStack(env)
    try:
        with AttemptLog().recording() as attempts:
            if refuse_first:  # the first N start calls are refused (429) whatever the capacity: one bad moment
                stack.admin("faults", {"start": [{"when": "before", "kind": "429"}] * refuse_first})
            figures = _run(stack, counter, attempts, capacity, end_rate, latency, starts, users, arrival_rate,
                           prefill, shape)
            return {**figures, "lengths": lengths, **({"seed": seed} if lengths != "fixed" else {})}
    finally:
        stack.close()


def _run(stack: BenchStack, counter: CallCounter, attempts: AttemptLog, capacity: int, end_rate: float,
         latency: float, starts: int, users: int, arrival_rate: float, prefill: bool,
         lengths: Lengths) -> dict[str, Any]:
    import boto3

    from infra.sqs_poller import poll_once

    lifetime = capacity / end_rate
    stack.admin(f"agents/{AGENT}", {"max_agents": capacity, "max_session_seconds": lifetime})
    if lengths.kind != "fixed":
        stack.admin("session-lengths", {"by_marker": {str(n): v for n, v in lengths.by_start.items()}})
    stack.admin("knobs", {"start_latency_ms": latency * 1000})
    sqs, queue_url = boto3.client("sqs"), stack.outputs["RetryQueueUrl"]
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            poll_once(stack.app, sqs, queue_url, wait_seconds=1)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for thread in workers:
        thread.start()
    sent: dict[int, float] = {}
    answers: dict[int, tuple[int, dict[str, Any]]] = {}
    lock = threading.Lock()

    def submit(n: int) -> None:
        with lock:
            sent[n] = time.time()
        response = stack.invoke("POST", "/start", user=f"scale-{n % users}", body={"transport": "daily",
                                                                                   "body": {"n": n}})
        with lock:
            answers[n] = (int(response["statusCode"]), json.loads(response["body"] or "{}"))
            answers[n][1]["answered"] = time.time()

    if prefill:  # full until the burst is sent (this harness sends ~15 starts a second), then as the model says
        stack.admin(f"agents/{AGENT}/prefill", {"ends_in": [3600.0] * capacity})
    t0 = time.time()
    counter.on = True
    try:
        burst = starts if not arrival_rate else 0
        with ThreadPoolExecutor(max_workers=BURST_THREADS) as pool:
            list(pool.map(submit, range(burst)))
            t0 = time.time()
            if prefill:
                stack.admin(f"agents/{AGENT}/prefill", {"ends_in": lengths.first_ends,
                                                        "retime": True})
            tick = time.monotonic()
            for n in range(burst, starts):  # a steady stream instead of a burst
                tick += 1 / arrival_rate
                time.sleep(max(0.0, tick - time.monotonic()))
                pool.submit(submit, n)
        queued = {n: body["requestId"] for n, (status, body) in answers.items() if status == 202}
        deadline = time.monotonic() + 900
        counter.local.mute = True
        while time.monotonic() < deadline and not _all_terminal(list(queued.values())):
            time.sleep(0.25)
        counter.local.mute = False
    finally:
        counter.on = False
        stop.set()
        for thread in workers:
            thread.join(timeout=70)
    return _figures(stack, counter, attempts, capacity, end_rate, latency, users, t0, prefill, sent, answers,
                    queued, lengths)


def harness_ceiling(stack: BenchStack, dynamodb_calls: int, latency: float, starts: int = 240) -> float:
    """Starts per second this machine's harness sustains with no gateway logic: per start, `dynamodb_calls`
    DynamoDB calls (consistent reads and conditional updates, as the queue makes) against the same moto, and one
    POST .../start to the same emulator (answering `latency` late), on as many threads as the dispatcher uses."""
    from chalicelib.platform.dynamo import table
    from chalicelib.platform.settings import get_settings

    ddb, keys = table(), stack.keys
    stack.admin("agents/ceiling", {"max_agents": 100_000})
    client = httpx.Client(limits=httpx.Limits(max_connections=200))

    def one(n: int) -> None:
        key = {"PK": f"CEILING#{n}", "SK": "META"}
        for call in range(dynamodb_calls):
            if call % 2:
                ddb.update_item(Key=key, UpdateExpression="ADD n :one", ConditionExpression="attribute_not_exists(x)",
                                ExpressionAttributeValues={":one": 1})
            else:
                ddb.get_item(Key=key, ConsistentRead=True)
        client.post(f"{stack.emulator_url}/v1/public/ceiling/start", json={"createDailyRoom": True},
                    headers={"authorization": f"Bearer {keys['public_key']}"}, timeout=30)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=get_settings().queue.dispatch_max_in_flight) as pool:
        list(pool.map(one, range(starts)))
    client.close()
    return starts / (time.monotonic() - began)


def _all_terminal(request_ids: list[str]) -> bool:
    from chalicelib.store import queued_starts

    for request_id in request_ids:
        record = queued_starts.get(request_id)
        if record is None or record.state not in queued_starts.TERMINAL:
            return False
    return True


def _figures(stack: BenchStack, counter: CallCounter, attempts: AttemptLog, capacity: int, end_rate: float,
             latency: float, users: int, t0: float, prefill: bool, sent: dict[int, float],
             answers: dict[int, tuple[int, dict[str, Any]]], queued: dict[int, str],
             lengths: Lengths) -> dict[str, Any]:
    from chalicelib.store import queued_starts

    listed = httpx.get(f"{stack.emulator_url}/_emulator/sessions").json()["sessions"]
    bots = {s["body"]["n"]: float(s["createdEpoch"]) for s in listed if isinstance(s.get("body"), dict)
            and "n" in s["body"]}
    ends = [float(s["endedEpoch"]) for s in listed if s.get("endedEpoch")]
    stats = stack.stats()
    records = {n: queued_starts.get(rid) for n, rid in queued.items()}
    # drains are measured from the moment capacity starts to free (the burst sent, the agent full meanwhile), or
    # from the first start sent to an agent that starts empty
    first = t0 if prefill else min(sent.values())
    served = [bots[n] for n in sent if n in bots]
    drain = max(served) - first if served else float("nan")
    ideal = ideal_served(sent, capacity, end_rate, t0 if prefill else None, lengths)
    ideal_drain = max(ideal) - first
    last = max(served) if served else first
    freed = sum(1 for e in ends if first <= e <= last)
    # per served start, the DynamoDB calls the run made (all of them, over the starts it served): with no start
    # queued, dividing by the queued ones would ask the harness for every call of the run per start
    ceiling = harness_ceiling(stack, max(1, round(counter.calls / max(1, len(queued) or len(served)))), latency)
    at_ceiling = max(ideal_drain, sum(1 for s in served if s >= first) / ceiling)
    places = [(int(r.seq or 0), bots[n], n) for n, r in records.items() if r and r.state == "started" and n in bots]
    waits = [bots[n] - sent[n] for n in queued if n in bots]
    answered_202 = {n: body["answered"] for n, (status, body) in answers.items() if status == 202}
    overtakes = sum(1 for i, answered_at in answered_202.items() for j in sent
                    if sent[j] > answered_at and j in bots and i in bots and bots[j] < bots[i])
    statuses = [status for status, _ in answers.values()]
    return {
        "capacity": capacity, "end_rate_per_s": end_rate, "latency_s": latency, "starts": len(sent), "users": users,
        "direct_200": statuses.count(200), "queued_202": len(queued),
        "other_answers": {str(s): statuses.count(s) for s in sorted(set(statuses)) if s not in (200, 202)},
        "served": len(served), "not_served": len(sent) - len(served),
        "drain_s": round(drain, 2), "ideal_drain_s": round(ideal_drain, 2),
        "drain_over_ideal": round(drain / ideal_drain, 3),
        "harness_ceiling_per_s": round(ceiling, 1), "drain_over_ceiling": round(drain / at_ceiling, 3),
        "served_per_s": round(len(served) / drain, 2) if drain else None,
        "freed_per_s": round(freed / (last - first), 2) if last > first else None,
        "queued_to_started_p50_s": round(percentile(waits, 50), 2),
        "queued_to_started_p95_s": round(percentile(waits, 95), 2),
        "ideal_wait_p50_s": round(percentile([s - a for s, a in zip(ideal, sorted(sent.values()), strict=True)],
                                             50), 2),
        "order_inversions": len(unexplained_inversions(places, attempts)) + overtakes,
        "pcc_calls_per_served": round(stats["startCalls"] / max(1, stats["started"]), 3),
        "dynamodb_calls_per_queued_start": round(counter.calls / len(queued), 2) if queued else None,
        "queue_state_calls_per_queued_start": round(counter.state_calls / len(queued), 2) if queued else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=50)
    parser.add_argument("--end-rate", type=float, default=10.0, help="sessions ending per second")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds Pipecat Cloud takes to answer a start")
    parser.add_argument("--starts", type=int, default=None, help="default: max(100, 3 x capacity)")
    parser.add_argument("--users", type=int, default=None, help="default: one per start")
    parser.add_argument("--arrival-rate", type=float, default=0.0,
                        help="starts per second as a steady stream instead of one burst")
    parser.add_argument("--no-prefill", action="store_true", help="the agent starts empty instead of full")
    parser.add_argument("--refuse-first", type=int, default=0,
                        help="refuse the first N start calls (429) whatever the capacity")
    parser.add_argument("--lengths", choices=("fixed", "exponential"), default="fixed",
                        help="sessions all C/r long (default), or of random length with that mean")
    parser.add_argument("--seed", type=int, default=0, help="the random lengths' seed")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # the app's metric lines: stdout carries the one JSON object
        figures = run(args.capacity, args.end_rate, args.latency, args.starts, args.users, args.arrival_rate,
                      not args.no_prefill, refuse_first=args.refuse_first, lengths=args.lengths, seed=args.seed)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
