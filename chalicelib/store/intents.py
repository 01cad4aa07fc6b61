"""Start intents: a direct start is on record, holding its slot, before Pipecat Cloud is called.

Item: PK `INTENT#{id}`, SK `META`; GSI1 `USER#{userId}#INTENTS` (slot healing counts them); sparse GSI2
`INTENTS` (recovery walks them). States: `calling` (leased for the length of the call) and `unknown`.

- open: one transaction takes the user's slot and writes the intent (`calling`, lease = the call's
  timeouts + a margin). A start that then dies with its Lambda leaves exactly this behind.
- settle_started: one transaction writes the session record and deletes the intent (the slot passes to
  the session). settle_not_started: one transaction deletes the intent and frees the slot. Each is
  conditional on the intent still being `calling`, so a slot is freed exactly once.
- mark_unknown: the answer does not prove that no bot was created (timeout, 5xx, connection lost after
  sending): the slot stays held and recovery decides.
- recover (reconcile schedule, after the orphan sweep): an intent that is `unknown`, or `calling` past its
  lease, is freed once it is older than lease + ORPHAN_GRACE_SECONDS: by then any bot its call created is
  older than the grace and the orphan sweeper has stopped it (no session record claims it). Bound: a
  crashed start holds its slot at most lease + grace + one schedule interval.
A queued start takes its slot over from the intent in the transaction that records the request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib.platform.dynamo import cancellation_codes, now_iso, plain, transact, transact_if, update_if
from chalicelib.platform.observability import count, logger
from chalicelib.platform.shapes import Item
from chalicelib.store.index import query_index_partition
from chalicelib.store.session_records import SessionRecord
from chalicelib.store.slots import (
    release_pool_updates,
    release_slot_update,
    reserve_pool_updates,
    reserve_slot_update,
)

INTENTS_INDEX_KEY = "INTENTS"
LEASE_MARGIN_SECONDS = 10


class IntentState(StrEnum):
    """calling (its Pipecat Cloud call is leased) -> unknown (the answer did not prove that no bot exists)."""

    CALLING = "calling"
    UNKNOWN = "unknown"


CALLING, UNKNOWN = IntentState.CALLING, IntentState.UNKNOWN


@dataclass(frozen=True)
class StartIntent:
    """A start on record before Pipecat Cloud is called (`INTENT#{id}` / `META`): it holds the user's slot."""

    intent_id: str
    user_id: str
    agent: str
    state: IntentState
    lease_until: int

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> StartIntent:
        values = plain(item)
        return cls(intent_id=str(values["intent_id"]), user_id=str(values["user_id"]), agent=str(values["agent"]),
                   state=IntentState(values["state"]), lease_until=int(values["lease_until"]))


def _key(intent_id: str) -> dict[str, str]:
    return {"PK": f"INTENT#{intent_id}", "SK": "META"}


def delete_update(intent: StartIntent, state: str = CALLING) -> Item:
    """Deleting the intent as a TransactWriteItems `Delete` (for chalicelib.platform.dynamo.transact_if),
    conditional on its state."""
    return {"Key": _key(intent.intent_id), "ConditionExpression": "#s = :s",
            "ExpressionAttributeNames": {"#s": "state"}, "ExpressionAttributeValues": {":s": state}}


class NoSlot(Exception):
    """No slot was taken: `pool` when the agent's guest pool is full, else the caller's own slots are all taken."""

    def __init__(self, pool: bool) -> None:
        super().__init__("guest pool full" if pool else "no slot left")
        self.pool = pool


def open_intent(user_id: str, agent: str, limit: int, lease_seconds: float,
                pool_limit: int | None = None) -> StartIntent:
    """Take a slot (and a guest's place in its agent's pool, `pool_limit`) and record the intent, together; NoSlot
    when one of them is full."""
    now = time.time()
    created = now_iso()
    intent_id = uuid.uuid4().hex
    item: Item = {
        **_key(intent_id), "type": "start_intent", "intent_id": intent_id, "user_id": user_id, "agent": agent,
        "state": CALLING, "created_at": created, "created_epoch": int(now),
        "lease_until": int(now + lease_seconds + LEASE_MARGIN_SECONDS),
        "GSI1PK": f"USER#{user_id}#INTENTS", "GSI1SK": f"{created}#{intent_id}",
        "GSI2PK": INTENTS_INDEX_KEY, "GSI2SK": created, "ttl": int(now) + 7 * 86400,
    }
    try:
        transact([{"Update": reserve_slot_update(user_id, limit)},
                  {"Put": {"Item": item, "ConditionExpression": "attribute_not_exists(PK)"}},
                  *reserve_pool_updates(user_id, agent, pool_limit)])
    except Exception as exc:
        refused = cancellation_codes(exc)
        if "ConditionalCheckFailed" not in refused:
            raise
        raise NoSlot(pool=refused[0] != "ConditionalCheckFailed") from None
    return StartIntent.from_item(item)


def settle_started(intent: StartIntent, session: SessionRecord, events: list[Item]) -> bool:
    """Record the session and retire the intent (the slot goes with it), with the session's `events`. False:
    recovery took the intent."""
    return transact_if([{"Put": {"Item": session.to_item(), "ConditionExpression": "attribute_not_exists(PK)"}},
                        {"Delete": delete_update(intent)}, *events])


def settle_not_started(intent: StartIntent, state: str = CALLING) -> bool:
    """Retire the intent and free its slot, once."""
    return transact_if([{"Delete": delete_update(intent, state)}, {"Update": release_slot_update(intent.user_id)},
                        *release_pool_updates(intent.user_id, intent.agent)])


def mark_unknown(intent: StartIntent, reason: str) -> None:
    update_if(_key(intent.intent_id), "SET #s = :u, reason = :r", condition="#s = :c", names={"#s": "state"},
              values={":u": UNKNOWN, ":r": reason, ":c": CALLING})
    count("StartsUnknown")


def recover(grace_seconds: int, now: float | None = None) -> int:
    """Free the slots of starts that died or ended unknown, once any bot of theirs had time to be swept."""
    now = time.time() if now is None else now
    freed = 0
    for intent in map(StartIntent.from_item, query_index_partition(INTENTS_INDEX_KEY, limit=10_000)):
        stale = intent.state == UNKNOWN or (intent.state == CALLING and intent.lease_until < now)
        settled_upstream = now > intent.lease_until + grace_seconds
        if stale and settled_upstream and settle_not_started(intent, intent.state):
            freed += 1
            logger.warning("start intent recovered", extra={"intent_id": intent.intent_id, "state": intent.state})
    count("StartsRecovered", freed)
    return freed
