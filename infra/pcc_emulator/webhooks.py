"""Pipecat Cloud's organisation webhooks, as the emulator sends them (docs/operations.md; Pipecat Cloud's "Webhook
Event Reference"): the envelope `{event_type, org, created_at, data}`, signed the Standard Webhooks way with a
`whsec_` secret (`webhook-id`, `webhook-timestamp`, `webhook-signature`), at least once.

Nothing is sent until `POST /_emulator/webhooks {"url", "secret"}` names where to (`{"url": null}` stops it). Each
event is delivered in order from one background thread, tried up to ATTEMPTS times (a 2xx answer ends it), and
noted in `deliveries` (`GET /_emulator/webhooks`) with how it went, so tests count what was sent and answered.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

ATTEMPTS = 4
PAUSE_SECONDS = 0.2  # doubled after each failed attempt


class WebhookSender:
    def __init__(self, org: str) -> None:
        self.org = org
        self.lock = threading.Lock()
        self.url: str | None = None
        self.secret: str | None = None
        self.deliveries: list[dict[str, Any]] = []
        self._queue: queue.Queue[tuple[str, str, bytes, str, str]] = queue.Queue()
        threading.Thread(target=self._run, name="emulator-webhooks", daemon=True).start()

    def configure(self, url: str | None, secret: str | None) -> None:
        if url is not None and not (secret or "").startswith("whsec_"):
            raise ValueError("a webhook secret looks like whsec_<base64>")
        with self.lock:
            self.url, self.secret = url, secret

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Queue one event for delivery (nothing when no URL is configured)."""
        with self.lock:
            url, secret = self.url, self.secret
        if url is None or secret is None:
            return
        envelope = {"event_type": event_type, "org": self.org,
                    "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "data": data}
        self._queue.put((f"msg_{uuid.uuid4().hex}", event_type, json.dumps(envelope).encode(), url, secret))

    def _run(self) -> None:
        with httpx.Client(timeout=15) as client:
            while True:
                msg_id, event_type, body, url, secret = self._queue.get()
                record: dict[str, Any] = {"id": msg_id, "event_type": event_type, "attempts": 0, "status": None}
                for attempt in range(ATTEMPTS):
                    record["attempts"] = attempt + 1
                    moment = datetime.now(UTC)
                    headers = {"content-type": "application/json", "webhook-id": msg_id,
                               "webhook-timestamp": str(int(moment.timestamp())),
                               "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=moment,
                                                                         data=body.decode())}
                    try:
                        record["status"] = client.post(url, content=body, headers=headers).status_code
                    except httpx.HTTPError as exc:
                        record["status"] = type(exc).__name__
                    if isinstance(record["status"], int) and 200 <= record["status"] < 300:
                        break
                    time.sleep(PAUSE_SECONDS * 2 ** attempt)
                with self.lock:
                    self.deliveries.append(record)

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"url": self.url, "deliveries": list(self.deliveries)}
