"""Events parked in the events DLQ, sent again to the sink that did not take them (once it is back).

Each DLQ message names its sink and holds the event as it was. A message is deleted only once that sink took the
event again; one that fails again stays, visible again when the run ends, for the next run. An unreadable outbox
item, or a message for a sink no longer configured, is left in the queue and counted. Run by an operator:
`python -m infra.redrive_events --stage prod` (infra/redrive_events.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from chalicelib.api.events import LifecycleEvent
from chalicelib.events.delivery import send_with_retries
from chalicelib.events.sinks import configured_sinks, event_body
from chalicelib.platform.aws import client
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject

RECEIVE_BATCH = 10


def redrive(max_messages: int = 1000, sleep: Callable[[float], None] = time.sleep) -> dict[str, int]:
    """Send the parked events again, up to `max_messages` messages; a summary of what happened."""
    queue_url = get_settings().events.dlq_url
    sinks = {sink.name: sink for sink in configured_sinks()}
    summary = {"received": 0, "redelivered": 0, "failed": 0, "left": 0}
    seen: set[str] = set()
    kept: list[str] = []  # receipt handles of the messages that stay: visible again when the run ends
    sqs = client("sqs")
    while summary["received"] < max_messages:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=RECEIVE_BATCH,
                                       VisibilityTimeout=60).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            break
        for message in fresh:
            seen.add(message["MessageId"])
            summary["received"] += 1
            outcome = _redeliver(json.loads(message["Body"]), sinks, sleep)
            summary[outcome] += 1
            if outcome == "redelivered":
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            else:
                kept.append(message["ReceiptHandle"])
    for handle in kept:  # (while the run lasts they stay hidden, so none is tried twice in one run)
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return summary


def _redeliver(parked: JsonObject, sinks: JsonObject, sleep: Callable[[float], None]) -> str:
    sink = sinks.get(str(parked.get("sink")))
    if sink is None or not isinstance(parked.get("event"), dict):
        return "left"  # an unreadable item, or a sink that is not configured any more: for a person to look at
    event = LifecycleEvent.model_validate(parked["event"])
    return "redelivered" if send_with_retries(sink, event, event_body(event), sleep) is None else "failed"
