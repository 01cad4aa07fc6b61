"""Where events go: an EventBridge bus (`source` pipecat-gateway, `detail-type` the event type) and a webhook
signed the Standard Webhooks way (headers `webhook-id` = the event id, `webhook-timestamp`, `webhook-signature`;
signed with the `standardwebhooks` library a receiver verifies with). A sink's `send` raises SinkError when the
event was not taken."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from functools import cache
from typing import Protocol

import httpx

from chalicelib.api.events import LifecycleEvent
from chalicelib.platform.aws import client
from chalicelib.platform.secrets import get_secrets
from chalicelib.platform.settings import get_settings

EVENT_SOURCE = "pipecat-gateway"
USER_AGENT = "pipecat-gateway-events/1"


class SinkError(Exception):
    """The sink did not take the event (the message says why, without secrets)."""


class Sink(Protocol):
    name: str

    def send(self, event: LifecycleEvent, body: str) -> None: ...


class EventBridgeSink:
    name = "eventbridge"

    def __init__(self, bus: str) -> None:
        self.bus = bus

    def send(self, event: LifecycleEvent, body: str) -> None:
        try:
            answer = client("events").put_events(Entries=[{
                "Source": EVENT_SOURCE, "DetailType": event.type, "Detail": body, "EventBusName": self.bus,
                "Resources": [], "Time": datetime.fromisoformat(event.time.replace("Z", "+00:00"))}])
        except Exception as exc:  # noqa: BLE001 - any SDK failure is a failed delivery
            raise SinkError(f"PutEvents failed: {type(exc).__name__}") from None
        if answer.get("FailedEntryCount"):
            entry = (answer.get("Entries") or [{}])[0]
            raise SinkError(f"PutEvents refused the entry: {entry.get('ErrorCode')}")


@cache
def _http() -> httpx.Client:
    settings = get_settings()
    return httpx.Client(timeout=httpx.Timeout(settings.events.webhook_timeout_seconds, connect=2.0),
                        follow_redirects=False, headers={"User-Agent": USER_AGENT})


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, event: LifecycleEvent, body: str) -> None:
        from standardwebhooks.webhooks import Webhook  # noqa: PLC0415 - only the events function needs it

        secret = get_secrets().events_webhook_secret
        if secret is None:  # fail closed: never send an unsigned event
            raise SinkError("the gateway's secret has no events_webhook_secret (an event is never sent unsigned)")
        now = datetime.fromtimestamp(time.time(), UTC)
        signature = Webhook(secret.get_secret_value()).sign(msg_id=event.id, timestamp=now, data=body)
        headers = {"content-type": "application/json", "webhook-id": event.id,
                   "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}
        try:
            answer = _http().post(self.url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            raise SinkError(f"webhook unreachable: {type(exc).__name__}") from None
        if not 200 <= answer.status_code < 300:
            raise SinkError(f"webhook answered {answer.status_code}")


def configured_sinks() -> list[Sink]:
    settings = get_settings()
    sinks: list[Sink] = []
    if settings.events.bus_name:
        sinks.append(EventBridgeSink(settings.events.bus_name))
    if settings.events.webhook_url:
        sinks.append(WebhookSink(settings.events.webhook_url))
    return sinks


def event_body(event: LifecycleEvent) -> str:
    """The JSON every sink gets for `event` (the same bytes are signed and sent)."""
    return json.dumps(event.envelope(), separators=(",", ":"))


def reset_sinks() -> None:
    _http.cache_clear()
