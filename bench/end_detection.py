"""Ended at Pipecat Cloud -> `session.ended` delivered to the webhook: how long, and what bounds it.

Sessions of many users run at the emulator and end at random moments (the emulator records when); the `detect_ended`
handler runs on a fixed period (its schedule runs every 60 s in Lambda; here `--period` seconds of real time so a
run takes a minute, not an hour), and the outbox's stream is fed to `deliver_events` continuously, as Lambda's event
source does. A receiver verifies each webhook's signature and notes when it arrived.

Each end's latency splits into the wait for the run that saw it (set by the schedule's period and the phase: up to
one period, whatever the gateway does) and the processing from that run's start, or from the end if it came during
the run (listing, details, the transaction, the stream, the webhook): that part is the gateway's. Which run saw it
is read from the event itself: its `time` is when the gateway recorded the end. Reported: both, p50 / p95 / max, and
the bound at the deployed 60 s period = 60 s + the processing max. The yardstick is the schedule's period, fixed in
advance, not anything the gateway measured.

    python -m bench.end_detection --sessions 200 --users 100 --period 3 --latency 0.5
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx

from bench.harness import BenchStack, summary

DEPLOYED_PERIOD_SECONDS = 60  # app.py: the detect_ended schedule


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Receiver:
    def __init__(self, secret: str) -> None:
        from standardwebhooks.webhooks import Webhook

        self.arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self.bad_signatures = 0
        webhook, receiver, lock = Webhook(secret), self, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length") or 0))
                now = time.time()
                try:
                    event = webhook.verify(data, {k: v for k, v in self.headers.items()})
                except Exception:
                    with lock:
                        receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with lock:
                    receiver.arrived.setdefault(event["id"], (now, event))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"


def run(sessions: int = 200, users: int = 100, period: float = 3.0, spread: float = 30.0,
        latency: float = 0.0) -> dict[str, Any]:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    receiver = Receiver(secret)
    stack = BenchStack({"USER_SESSION_LIMIT": "1000", "EVENTS_WEBHOOK_URL": receiver.url})
    try:
        return _run(stack, receiver, secret, sessions, users, period, spread, latency)
    finally:
        receiver.server.shutdown()
        stack.close()


def _run(stack: BenchStack, receiver: Receiver, secret: str, sessions: int, users: int, period: float,
         spread: float, latency: float) -> dict[str, Any]:
    from chalicelib.platform.secrets import reset_secret_cache
    from chalicelib.upkeep import reconcile
    from infra.sqs_poller import StreamPoller

    secrets = boto3.client("secretsmanager")
    name = stack.outputs["SecretName"]
    value = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps({**value, "events_webhook_secret": secret}))
    reset_secret_cache()
    ids = []
    for i in range(sessions):
        answer = stack.invoke("POST", "/start", user=f"end-{i % users}", body={"transport": "daily"})
        assert answer["statusCode"] == 200, answer
        ids.append(json.loads(answer["body"])["sessionId"])
    stack.admin("knobs", {"latency_ms": int(latency * 1000)})  # every Pipecat Cloud call from now on
    poller = StreamPoller(stack.app, stack.outputs["EventsStreamArn"])
    stop = threading.Event()

    def deliver() -> None:
        while not stop.is_set():
            if not poller.poll_once():
                time.sleep(0.05)

    ticks: list[float] = []

    def schedule() -> None:
        while not stop.is_set():
            ticks.append(time.time())
            reconcile.detect_ended()
            time.sleep(max(0.0, ticks[-1] + period - time.time()))

    threads = [threading.Thread(target=deliver), threading.Thread(target=schedule)]
    for thread in threads:
        thread.start()
    begun = time.time()
    order = random.sample(ids, len(ids))
    moments = sorted(random.uniform(0, spread) for _ in order)
    for session_id, at in zip(order, moments, strict=True):
        time.sleep(max(0.0, begun + at - time.time()))
        httpx.post(f"{stack.emulator_url}/_emulator/sessions/{session_id}/end", json={"status": "ended"})
    deadline = time.time() + spread + 10 * period + 60
    while time.time() < deadline:
        ended = {e["sessionId"] for _, e in receiver.arrived.values() if e["type"] == "session.ended"}
        if ended >= set(ids):
            break
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    total, waited, processing = [], [], []
    for arrived_at, event in receiver.arrived.values():
        if event["type"] != "session.ended":
            continue
        ended_at = _epoch(event["data"]["endedAt"])  # Pipecat Cloud's (the emulator's) end
        recorded_at = _epoch(event["time"])  # when the gateway recorded it: inside the run that saw it
        tick = max(t for t in ticks if t <= recorded_at)  # that run's start
        total.append(arrived_at - ended_at)
        waited.append(max(0.0, tick - ended_at))  # an end during a run's listing may be seen by that run
        processing.append(arrived_at - max(tick, ended_at))
    delivered = len(total)
    return {
        "sessions": sessions, "users": users, "period_s": period, "pcc_latency_s": latency,
        "ended_and_delivered": delivered, "missing": sessions - delivered, "bad_signatures": receiver.bad_signatures,
        "end_to_delivered_s": {**summary(total), "max": round(max(total), 2)} if total else {},
        "wait_for_tick_s": {**summary(waited), "max": round(max(waited), 2)} if waited else {},
        "processing_after_tick_s": {**summary(processing), "max": round(max(processing), 2)} if processing else {},
        "max_over_period": round(max(total) / period, 3) if total else None,
        "bound_at_deployed_period_s": round(DEPLOYED_PERIOD_SECONDS + max(processing), 1) if processing else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--period", type=float, default=3.0, help="detect_ended's period here (60 s deployed)")
    parser.add_argument("--spread", type=float, default=30.0, help="ends fall at random within this many seconds")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="how long Pipecat Cloud (the emulator) takes to answer each call, in seconds")
    args = parser.parse_args()
    print(json.dumps(run(args.sessions, args.users, args.period, args.spread, args.latency)))


if __name__ == "__main__":
    main()
