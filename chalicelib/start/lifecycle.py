"""Which lifecycle event each transition of a start or a session writes (docs/events.md): chosen here, written by
the store in the transition's own transaction (chalicelib.store.outbox builds the write; `[]` when events are off).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.platform.dynamo import iso_epoch
from chalicelib.platform.shapes import Item, JsonObject
from chalicelib.start.billing import billed_seconds
from chalicelib.store.outbox import event_writes
from chalicelib.store.queued_starts import FAILED, QueuedStart
from chalicelib.store.session_records import STOPPED, SessionRecord

# A session we stopped, by the reason we stopped it; anything else we stopped is `session.stopped`.
END_EVENTS = {"stopped_by_user": "session.stopped", "hard_cap": "session.capped", "usage_budget": "session.capped",
              "guest_session_max": "session.capped", "guest_budget": "session.capped"}
DETAIL_FIELDS = ("createdAt", "endedAt", "completionStatus", "botStartSeconds", "coldStart")


def start_queued(user_id: str, agent: str, request_id: str, transport: str) -> list[Item]:
    return event_writes("start.queued", user_id=user_id, agent=agent, request_id=request_id,
                        data={"transport": transport})


def start_finished(request: QueuedStart, state: str, code: str, detail: str) -> list[Item]:
    """A queued start that ends without a session: failed, abandoned by its owner, or cancelled."""
    event_type = "start.failed" if state == FAILED else "start.abandoned" if code == "abandoned" else "start.cancelled"
    return event_writes(event_type, user_id=request.user_id, agent=request.agent,
                        request_id=request.request_id, data={"code": code, "detail": detail[:1000]})


def session_started(record: SessionRecord, queued: bool) -> list[Item]:
    """`session.started`, and `call.started` for a telephony call's bot."""
    def event(event_type: str, data: JsonObject) -> list[Item]:
        return event_writes(event_type, user_id=record.user_id, agent=record.agent, session_id=record.session_id,
                            request_id=record.request_id, call_id=record.call_id, data=data)

    writes = event("session.started", {"transport": record.transport, "queued": queued})
    if record.provider:
        writes += event("call.started", {"provider": record.provider})
    return writes


def session_left(record: SessionRecord, status: str, reason: str, details: Mapping[str, Any] | None) -> list[Item]:
    """An active session leaving `active`: stopped through our API, capped, or seen ended at Pipecat Cloud
    (`details`: what its private API said of the session, when known)."""
    event_type = END_EVENTS.get(reason, "session.stopped") if status == STOPPED else "session.ended"
    data: JsonObject = {"reason": reason}
    if details:
        data.update({k: details.get(k) for k in DETAIL_FIELDS})
        created, ended = iso_epoch(details.get("createdAt")), iso_epoch(details.get("endedAt"))
        data["durationSeconds"] = None if created is None or ended is None else billed_seconds(created, ended)
    return event_writes(event_type, user_id=record.user_id, agent=record.agent, session_id=record.session_id,
                        request_id=record.request_id, call_id=record.call_id, data=data)
