"""A user's active-session slots: one counter per user (PK `USER#{userId}`, SK `ACTIVE_SESSIONS`, attribute
`active`), changed only with conditional writes inside the transactions that start and end sessions, so the
per-user cap holds under races; counters that drifted upwards are healed by the reconcile schedule."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.platform.dynamo import now_iso, table, update_if
from chalicelib.platform.shapes import Item
from chalicelib.store.index import query_index_partition

SLOTS_INDEX_KEY = "SLOTS"  # GSI2 partition of the per-user slot counters (for healing)
ACTIVE_STATES = {"SESSIONS": ("status", ("active",)), "REQUESTS": ("state", ("queued", "starting")),
                 "INTENTS": ("state", ("calling", "unknown"))}  # what holds a slot, by GSI1 listing


def reserve_slot_update(user_id: str, limit: int) -> Item:
    """Taking a slot as a TransactWriteItems `Update` (with a record that must exist with it)."""
    return {
        "Key": {"PK": f"USER#{user_id}", "SK": "ACTIVE_SESSIONS"},
        "UpdateExpression": "ADD active :one SET updated_at = :now, GSI2PK = :slots, GSI2SK = :user",
        "ConditionExpression": "attribute_not_exists(active) OR active < :limit",
        "ExpressionAttributeValues": {":one": 1, ":limit": limit, ":now": now_iso(), ":slots": SLOTS_INDEX_KEY,
                                      ":user": user_id},
    }


def release_slot_update(user_id: str) -> Item:
    """The slot release as a TransactWriteItems `Update` (for state changes that must free a slot)."""
    return {
        "Key": {"PK": f"USER#{user_id}", "SK": "ACTIVE_SESSIONS"},
        "UpdateExpression": "ADD active :minus",
        "ConditionExpression": "active > :zero",
        "ExpressionAttributeValues": {":minus": -1, ":zero": 0},
    }


def active_slots(user_id: str) -> int:
    item = table().get_item(
        Key={"PK": f"USER#{user_id}", "SK": "ACTIVE_SESSIONS"}, ConsistentRead=True
    ).get("Item")
    return int(item.get("active", 0)) if item else 0


def _count_in_states(index_pk: str, attribute: str, states: tuple[str, ...]) -> int:
    """How many items of one GSI1 partition have `attribute` in `states`."""
    values = {f":v{i}": state for i, state in enumerate(states)}
    kwargs: Item = {
        "IndexName": "GSI1",
        "KeyConditionExpression": "GSI1PK = :pk",
        "FilterExpression": f"#a IN ({', '.join(values)})",
        "ExpressionAttributeNames": {"#a": attribute},
        "ExpressionAttributeValues": {":pk": index_pk, **values},
        "Select": "COUNT",
    }
    total = 0
    while True:
        page = table().query(**kwargs)
        total += int(page.get("Count", 0))
        if not page.get("LastEvaluatedKey"):
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def heal_slot_counters(now: float, min_age_seconds: int = 600) -> int:
    """Lower counters that count more slots than the user's active sessions + pending starts.

    A counter can only drift upwards (a Lambda that died between taking a slot and recording or giving
    it back). Counters changed in the last `min_age_seconds` are left alone (a start may be in flight),
    and the fix is conditional on the counter being unchanged since it was read.
    """
    healed = 0
    cutoff = datetime.fromtimestamp(now - min_age_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for counter in query_index_partition(SLOTS_INDEX_KEY, limit=10_000):
        held = int(counter.get("active", 0))
        if held <= 0 or str(counter.get("updated_at", "")) > cutoff:
            continue
        user_id = counter["GSI2SK"]
        actual = sum(_count_in_states(f"USER#{user_id}#{listing}", attribute, states)
                     for listing, (attribute, states) in ACTIVE_STATES.items())
        if actual >= held:
            continue
        if update_if({"PK": f"USER#{user_id}", "SK": "ACTIVE_SESSIONS"}, "SET active = :actual",
                     condition="active = :held AND updated_at = :seen",
                     values={":actual": actual, ":held": held, ":seen": counter["updated_at"]}) is not None:
            healed += 1
    return healed
