"""Delivery of one batch of the outbox's stream: every event to every configured sink, in stream order.

Each sink gets EVENTS_DELIVERY_ATTEMPTS tries per event, with backoff (0.5 s, 1 s, 2 s, ... between them). An
event a sink still did not take goes to the events DLQ (EVENTS_DLQ_URL: the event and the sink, for a redrive)
and that sink is skipped for the rest of the batch (its events go to the DLQ at once: a dead endpoint costs one
event's retries per batch, not the Lambda's timeout). When an event can be neither delivered nor parked in the
DLQ, the batch raises: Lambda hands the stream's batch over again (at least once; consumers dedupe on the event
id), and nothing is lost.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

from chalicelib.api.events import LifecycleEvent
from chalicelib.events.sinks import Sink, SinkError, configured_sinks, event_body
from chalicelib.platform.aws import client
from chalicelib.platform.observability import count, logger
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.store.outbox import events_of_stream

BACKOFF_FIRST_SECONDS = 0.5
MAX_PARKED_TEXT_BYTES = 200_000  # of an unreadable item, in its DLQ message (SQS takes 256 KB)


class UndeliverableBatch(RuntimeError):
    """An event was neither delivered nor parked in the DLQ: the batch must be handed over again."""


def deliver_stream_records(records: list[JsonObject], sleep: Callable[[float], None] = time.sleep
                           ) -> dict[str, int]:
    """Deliver the events in `records` (the stream's batch); a summary of what happened."""
    events, unreadable = events_of_stream(records)
    sinks = configured_sinks()
    summary = {"events": len(events), "delivered": 0, "dead_lettered": 0}
    tally: Counter[tuple[str, str]] = Counter()  # (metric, sink) -> events, sent as one metric each per batch
    try:
        for text in unreadable:  # cannot happen from our own writes: parked, so it never blocks the stream
            cut = text.encode()[:MAX_PARKED_TEXT_BYTES].decode(errors="ignore")
            _park({"sink": None, "error": "not a lifecycle event", "text": cut}, "an unreadable outbox item")
            summary["dead_lettered"] += 1
            tally["EventsFailed", "none"] += 1
        down: set[str] = set()
        for event in events:
            body = event_body(event)
            for sink in sinks:
                error = ("sink failed earlier in this batch" if sink.name in down
                         else send_with_retries(sink, event, body, sleep))
                if error is None:
                    summary["delivered"] += 1
                    tally["EventsDelivered", sink.name] += 1
                    continue
                down.add(sink.name)
                _dead_letter(event, body, sink.name, error)
                summary["dead_lettered"] += 1
                tally["EventsFailed", sink.name] += 1
    finally:
        for (metric, sink_name), value in sorted(tally.items()):
            count(metric, value, sink=sink_name)
    if events:
        logger.info("events delivered", extra=summary)
    return summary


def send_with_retries(sink: Sink, event: LifecycleEvent, body: str, sleep: Callable[[float], None]) -> str | None:
    """None once the sink took the event; else why its last try failed."""
    attempts = get_settings().events.delivery_attempts
    error = ""
    for attempt in range(attempts):
        try:
            sink.send(event, body)
            return None
        except SinkError as exc:
            error = str(exc)
            logger.warning("event delivery failed", extra={"event_id": event.id, "sink": sink.name,
                                                           "attempt": attempt + 1, "error": error})
        if attempt + 1 < attempts:
            sleep(BACKOFF_FIRST_SECONDS * 2 ** attempt)
    return error


def _dead_letter(event: LifecycleEvent, body: str, sink: str, error: str) -> None:
    _park({"sink": sink, "error": error, "event": json.loads(body)}, f"event {event.id}")
    logger.error("event dead-lettered", extra={"event_id": event.id, "sink": sink, "error": error})


def _park(message: JsonObject, what: str) -> None:
    queue_url = get_settings().events.dlq_url
    if not queue_url:
        raise UndeliverableBatch(f"{what} was not delivered and there is no EVENTS_DLQ_URL to park it in")
    try:
        client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(message, separators=(",", ":")))
    except Exception as exc:
        raise UndeliverableBatch(f"{what} could not be parked in the DLQ") from exc
