"""Capacity queue under a storm: 200 starts from 67 users against an agent of capacity 5 whose sessions
end at Pipecat Cloud one every 0.5 s (the gateway is not told: no wake-up helps), plus 40 more starts
arriving one a second during the drain. Five worker threads play Lambda's SQS event source (the retry
worker's maximum concurrency).

Reported, from the source of truth (the emulator's sessions and the DynamoDB request records):
- drain_over_ideal: (last queued start served - first queued) / (the N-th session end after the first was
  queued - first queued), for N queued starts: 1.0 is serving each queued start the moment a place frees;
- queued_to_started_s: p50/p95 of (record finished_at - created_at) for queued starts;
- order_inversions: pairs of queued starts served in the opposite order of their queue places, plus
  starts served before a queued start whose 202 had come back before they were even sent;
- pcc_calls_per_started_session: every POST .../start the emulator received / bots it started.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3

from bench.harness import BenchStack, summary
from infra.sqs_poller import poll_once

if TYPE_CHECKING:
    from chalicelib.store.queued_starts import QueuedStart

WORKERS = 5
BURST_THREADS = 8
CAPACITY = 5
END_INTERVAL = 0.5


def run(starts: int = 200, users: int = 67, late_arrivals: int = 40,
        end_interval: float = END_INTERVAL) -> dict[str, Any]:
    stack = BenchStack({"USER_SESSION_LIMIT": "10", "START_DEADLINE_SECONDS": "900",
                        "QUEUED_ABANDON_SECONDS": "0"})  # its clients wait without polling
    try:
        return _storm(stack, starts, users, late_arrivals, end_interval)
    finally:
        stack.close()


def _epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() if "+" in iso else \
        datetime.strptime(iso.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _storm(stack: BenchStack, starts: int, users: int, late_arrivals: int, end_interval: float) -> dict[str, Any]:
    from chalicelib.store import queued_starts

    sqs = boto3.client("sqs")
    queue_url = stack.outputs["RetryQueueUrl"]
    stop = threading.Event()
    stack.admin("agents/my-agent", {"max_agents": CAPACITY})

    def worker() -> None:
        while not stop.is_set():
            poll_once(stack.app, sqs, queue_url, wait_seconds=1)

    def ender() -> None:  # sessions end at Pipecat Cloud at a fixed rate, oldest first
        tick = time.monotonic()
        while not stop.is_set():
            tick += end_interval
            time.sleep(max(0.0, tick - time.monotonic()))
            sessions = _active(stack)
            if sessions:
                stack.admin(f"sessions/{sessions[0]}/end")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    threads.append(threading.Thread(target=ender, daemon=True))
    for thread in threads:
        thread.start()
    answers: list[Answer] = []
    lock = threading.Lock()

    def submit(index: int) -> None:
        user = f"storm-{index % users}"
        sent = time.time()
        response = stack.invoke("POST", "/start", user=user, body={"transport": "daily"})
        answer = Answer(user, int(response["statusCode"]), json.loads(response["body"] or "{}"), sent, time.time())
        with lock:
            answers.append(answer)

    try:
        with ThreadPoolExecutor(max_workers=BURST_THREADS) as pool:
            list(pool.map(submit, range(starts)))
        for index in range(late_arrivals):  # new arrivals while the queue drains
            time.sleep(1.0)
            submit(starts + index)
        queued_ids = [a.body["requestId"] for a in answers if a.status == 202]
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if all(_request(r).state in queued_starts.TERMINAL for r in queued_ids):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=70)
    return _figures(stack, answers, [_request(r) for r in queued_ids], users, end_interval)


class Answer:
    def __init__(self, user: str, status: int, body: dict[str, Any], sent: float, answered: float) -> None:
        self.user, self.status, self.body, self.sent, self.answered = user, status, body, sent, answered


def _request(request_id: str) -> QueuedStart:
    from chalicelib.store import queued_starts

    record = queued_starts.get(request_id)
    assert record is not None, request_id
    return record


def _figures(stack: BenchStack, answers: list[Answer], records: list[QueuedStart], users: int,
             end_interval: float) -> dict[str, Any]:
    statuses = [a.status for a in answers]
    started = [r for r in records if r.state == "started"]
    stats = stack.stats()
    bots = _bot_start_times(stack)  # session id -> when the emulator started the bot
    served_at = {r.request_id: bots[str(r.session_id)] for r in started}
    created = {r.request_id: _epoch(r.created_at) for r in records}
    answered = {a.body["requestId"]: a.answered for a in answers if a.status == 202}
    # Order: (1) queued starts served against their queue places; (2) any start, direct or queued, served
    # before a queued start whose 202 had come back before it was even sent (it arrived later).
    by_place = sorted(started, key=lambda r: int(r.seq or 0))
    place_inversions = sum(1 for i, a in enumerate(by_place) for b in by_place[i + 1:]
                           if served_at[b.request_id] < served_at[a.request_id])
    served_of = {a.body["requestId"]: served_at.get(a.body["requestId"]) for a in answers if a.status == 202}
    served_of.update({a.body["sessionId"]: bots.get(a.body["sessionId"]) for a in answers if a.status == 200})
    arrivals = [(a.sent, served_of.get(a.body.get("requestId") or a.body.get("sessionId", ""))) for a in answers]
    overtakes = sum(1 for rid, answered_at in answered.items() for sent, served in arrivals
                    if sent > answered_at and served is not None and served_at.get(rid) is not None
                    and served < served_at[rid])
    first_queued = min(created.values())
    drain = max(served_at.values()) - first_queued
    # The ideal: every queued start served the moment a place freed, i.e. at the N-th session end after
    # the first start was queued (the ends the emulator actually recorded, not the ender's nominal rate).
    ends = sorted(e for e in _bot_end_times(stack) if e >= first_queued)
    ideal = (ends[len(records) - 1] if len(ends) >= len(records) else first_queued + len(records) * end_interval) \
        - first_queued
    latencies = [served_at[r.request_id] - created[r.request_id] for r in started]
    return {
        "starts": len(answers), "users": users, "direct_200": statuses.count(200), "queued_202": len(records),
        "other_answers": {str(s): statuses.count(s) for s in sorted(set(statuses)) if s not in (200, 202)},
        "served_from_queue": len(started), "failed_from_queue": sum(1 for r in records if r.state == "failed"),
        "drain_s": round(drain, 1), "ideal_drain_s": round(ideal, 1),
        "session_end_interval_s": round((ends[-1] - ends[0]) / (len(ends) - 1), 3) if len(ends) > 1 else None,
        "drain_over_ideal": round(drain / ideal, 3),
        "queued_to_started_s": summary(latencies),
        "order_inversions": place_inversions + overtakes,
        "pcc_start_calls": stats["startCalls"], "bots_started": stats["started"],
        "pcc_calls_per_started_session": round(stats["startCalls"] / max(1, stats["started"]), 3),
        "max_attempts": max((int(r.attempts) for r in records), default=0),
    }


def _active(stack: BenchStack) -> list[str]:
    """Active session ids at the emulator, oldest first."""
    import httpx

    listed = httpx.get(f"{stack.emulator_url}/_emulator/sessions").json()
    sessions = [s for s in listed.get("sessions", []) if s.get("active")]
    return [str(s["sessionId"]) for s in sorted(sessions, key=lambda s: s.get("createdEpoch", 0))]


def _bot_end_times(stack: BenchStack) -> list[float]:
    import httpx

    listed = httpx.get(f"{stack.emulator_url}/_emulator/sessions").json()
    return [float(s["endedEpoch"]) for s in listed.get("sessions", []) if s.get("endedEpoch")]


def _bot_start_times(stack: BenchStack) -> dict[str, float]:
    import httpx

    listed = httpx.get(f"{stack.emulator_url}/_emulator/sessions").json()
    return {str(s["sessionId"]): float(s.get("createdEpoch", 0)) for s in listed.get("sessions", [])}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
