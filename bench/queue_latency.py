"""Capacity queue: time from capacity freeing to the queued start being served (p50/p95).

Each sample: the agent (capacity 1) is busy, a start is queued (202), the busy session ends at Pipecat
Cloud after a random hold (the gateway is not told, so no wake-up helps), and we time until the request
is `started`. A worker thread plays Lambda's SQS event source (long-polling the queue, one message per
invoke). Run for two head-backoff settings in one run; the ratio to the cap shows how much of the wait
is the backoff itself.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

import boto3

from bench.harness import BenchStack, summary
from infra.sqs_poller import poll_once


def run(samples: int = 20, configs: tuple[tuple[float, int], ...] = ((0.5, 2), (1.0, 8))) -> dict[str, Any]:
    results: dict[str, Any] = {"samples_per_config": samples}
    for base, cap in configs:
        stack = BenchStack({"RETRY_BASE_SECONDS": str(base), "RETRY_CAP_SECONDS": str(cap),
                            "USER_SESSION_LIMIT": "1000"})
        try:
            results[f"base_{base}s_cap_{cap}s"] = _run_config(stack, samples, cap)
        finally:
            stack.close()
    return results


def _run_config(stack: BenchStack, samples: int, cap: int) -> dict[str, Any]:
    from chalicelib.store import queued_starts

    sqs = boto3.client("sqs")
    queue_url = stack.outputs["RetryQueueUrl"]
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            poll_once(stack.app, sqs, queue_url, wait_seconds=1)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    stack.admin("agents/my-agent", {"max_agents": 1})
    blocker = json.loads(stack.invoke("POST", "/start", user="blocker", body={})["body"])["sessionId"]
    latencies: list[float] = []
    try:
        for _ in range(samples):
            response = stack.invoke("POST", "/start", user=f"q-{uuid.uuid4().hex[:8]}", body={})
            assert response["statusCode"] == 202, response
            request_id = json.loads(response["body"])["requestId"]
            time.sleep(random.uniform(0, 3))  # the busy session ends at a random point of the backoff
            stack.admin(f"sessions/{blocker}/end")
            freed = time.perf_counter()
            while True:
                record = queued_starts.get(request_id)
                if record and record.state == "started":
                    break
                assert record and record.state in ("queued", "starting"), record
                time.sleep(0.02)
            latencies.append(time.perf_counter() - freed)
            blocker = str(record.session_id)  # the served session now holds the capacity
    finally:
        stop.set()
        thread.join(timeout=5)
    stats = summary(latencies)
    return {"freed_to_served_s": stats, "p50_over_cap": round(stats["p50"] / cap, 3),
            "p95_over_cap": round(stats["p95"] / cap, 3)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
