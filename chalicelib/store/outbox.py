"""The events outbox: each lifecycle event is an item of the events table (EVENTS_TABLE_NAME), written in the same
DynamoDB transaction as the state change it reports, so an event exists exactly when its change committed. The
table's stream hands it to chalicelib.events for delivery.

Item: PK `EVENTS#{userId}` (`EVENTS#-` for an orphan bot, which no user owns), SK `{time}#{eventId}` (one
partition per user: the stream keeps a user's events, and so each session's, in the order they were written),
`event` (the JSON the sinks get), `ttl` (7 days).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

from chalicelib.platform.auth import is_guest_id
from chalicelib.platform.dynamo import events_table_name, now_iso, transact
from chalicelib.platform.shapes import Item, JsonObject

if TYPE_CHECKING:
    from chalicelib.api.events import LifecycleEvent

OUTBOX_TTL_SECONDS = 7 * 86400
# chalicelib.api.events.EventType's names (a unit test keeps them equal): checked when an event is written, so a
# misspelt type fails the change in tests instead of reaching the stream
EVENT_TYPE_NAMES = frozenset({
    "start.queued", "start.failed", "start.cancelled", "start.abandoned", "session.started", "session.stopped",
    "session.ended", "session.capped", "session.orphan_stopped", "call.started", "gate.closed", "gate.opened",
    "account.spend_threshold", "admin.action"})


def event_writes(event_type: str, *, user_id: str | None, agent: str, session_id: str | None = None,
                 request_id: str | None = None, call_id: str | None = None,
                 data: JsonObject | None = None) -> list[JsonObject]:
    """The event as TransactWriteItems entries to add to the state change's transaction: `[]` when events are
    off (no EVENTS_TABLE_NAME), else one `Put` into the events table. The envelope is chalicelib.api.events'
    LifecycleEvent (built here as plain JSON: its model costs every cold start ~8 ms; delivery parses with it)."""
    if event_type not in EVENT_TYPE_NAMES:
        raise ValueError(f"unknown event type {event_type!r}")
    table_name = events_table_name()
    if not table_name:
        return []
    event_id, occurred = f"evt_{uuid.uuid4().hex}", now_iso()
    envelope = {"id": event_id, "type": event_type, "time": occurred, "userId": user_id, "agent": agent,
                **({"guest": True} if is_guest_id(user_id) else {}),
                **{k: v for k, v in (("sessionId", session_id), ("requestId", request_id), ("callId", call_id)) if v},
                "data": {k: v for k, v in (data or {}).items() if v is not None}}
    item = {"PK": f"EVENTS#{user_id or '-'}", "SK": f"{occurred}#{event_id}", "type": "event",
            "event_type": event_type, "event": json.dumps(envelope, separators=(",", ":")),
            "ttl": int(time.time()) + OUTBOX_TTL_SECONDS}
    return [{"Put": {"TableName": table_name, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}]


def event_of_item(item: Item) -> LifecycleEvent | None:
    """The event an outbox item (plain values) holds; None for an item that is not one."""
    from chalicelib.api.events import LifecycleEvent  # noqa: PLC0415 - the delivery function's alone

    if item.get("type") != "event" or not isinstance(item.get("event"), str):
        return None
    return LifecycleEvent.model_validate_json(item["event"])


def record_event(event_type: str, *, user_id: str | None, agent: str, session_id: str | None = None,
                 data: JsonObject | None = None) -> None:
    """An event that reports no change of ours (an orphan bot stopped at Pipecat Cloud), written alone."""
    writes = event_writes(event_type, user_id=user_id, agent=agent, session_id=session_id, data=data)
    if writes:
        transact(writes)


def events_of_stream(records: list[Item]) -> tuple[list[LifecycleEvent], list[str]]:
    """The events a batch of the events table's stream records brings, in stream order (each INSERT of an outbox
    item; its TTL removal and any other record are not events), and the text of any outbox item that does not
    parse as one (to be parked, never to block the stream: Lambda would hand the batch over for ever)."""
    from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415 - boto3 is imported lazily
    from pydantic import ValidationError  # noqa: PLC0415

    deserialize = TypeDeserializer().deserialize
    events, unreadable = [], []
    for record in records:
        image = (record.get("dynamodb") or {}).get("NewImage")
        if record.get("eventName") != "INSERT" or not isinstance(image, dict):
            continue
        item = {k: deserialize(v) for k, v in image.items()}
        try:
            event = event_of_item(item)
        except ValidationError:
            unreadable.append(str(item.get("event")))
            continue
        if event is not None:
            events.append(event)
    return events, unreadable
