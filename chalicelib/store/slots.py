"""A user's active-session slots: one counter per user (PK `USER#{userId}`, SK `ACTIVE_SESSIONS`, attribute
`active`), changed only with conditional writes inside the transactions that start and end sessions, so the
per-user cap holds under races; counters that drifted upwards are healed by the reconcile schedule.

A guest (an id beginning `guest_`, chalicelib.platform.auth) also holds a place in its agent's guest pool (PK
`GUESTS#{agent}`, SK `ACTIVE_SESSIONS`), taken and given back in the same transactions as its own slot, so the
guests' cap per agent holds under races the same way."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.platform.auth import is_guest_id
from chalicelib.platform.dynamo import now_iso, table, update_if
from chalicelib.platform.shapes import Item
from chalicelib.store.index import query_index_partition

SLOTS_INDEX_KEY = "SLOTS"  # GSI2 partition of the per-user slot counters (for healing)
POOLS_INDEX_KEY = "GUESTPOOLS"  # GSI2 partition of the per-agent guest pools (for healing)
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


def _pool_key(agent: str) -> dict[str, str]:
    return {"PK": f"GUESTS#{agent}", "SK": "ACTIVE_SESSIONS"}


def reserve_pool_updates(user_id: str, agent: str, pool_limit: int | None) -> list[Item]:
    """A guest's place in its agent's guest pool as TransactWriteItems entries (none for a user, or no limit)."""
    if pool_limit is None or not is_guest_id(user_id):
        return []
    return [{"Update": {
        "Key": _pool_key(agent),
        "UpdateExpression": "ADD active :one SET updated_at = :now, GSI2PK = :pools, GSI2SK = :agent",
        "ConditionExpression": "attribute_not_exists(active) OR active < :limit",
        "ExpressionAttributeValues": {":one": 1, ":limit": pool_limit, ":now": now_iso(), ":pools": POOLS_INDEX_KEY,
                                      ":agent": agent}}}]


def release_pool_updates(user_id: str, agent: str) -> list[Item]:
    """A guest's place in the pool given back, with the state change that frees its slot (none for a user).
    Unconditional, so a pool never blocks a session's end: each place is given back only with a conditional
    state change, once; a pool that drifted is healed (`heal_guest_pools`)."""
    if not is_guest_id(user_id):
        return []
    return [{"Update": {"Key": _pool_key(agent), "UpdateExpression": "ADD active :minus",
                        "ExpressionAttributeValues": {":minus": -1}}}]


def guest_pool(agent: str) -> int:
    item = table().get_item(Key=_pool_key(agent), ConsistentRead=True).get("Item")
    return int(item.get("active", 0)) if item else 0


def active_slots(user_id: str) -> int:
    item = table().get_item(
        Key={"PK": f"USER#{user_id}", "SK": "ACTIVE_SESSIONS"}, ConsistentRead=True
    ).get("Item")
    return int(item.get("active", 0)) if item else 0


def _holding_agents(user_id: str) -> list[str]:
    """The agent of each record that holds one of the user's slots now (active sessions, pending starts, open
    intents: ACTIVE_STATES), every page of their GSI1 listings read."""
    agents: list[str] = []
    for listing, (attribute, states) in ACTIVE_STATES.items():
        values = {f":v{i}": state for i, state in enumerate(states)}
        kwargs: Item = {
            "IndexName": "GSI1",
            "KeyConditionExpression": "GSI1PK = :pk",
            "FilterExpression": f"#a IN ({', '.join(values)})",
            "ProjectionExpression": "#g",
            "ExpressionAttributeNames": {"#a": attribute, "#g": "agent"},
            "ExpressionAttributeValues": {":pk": f"USER#{user_id}#{listing}", **values},
        }
        while True:
            page = table().query(**kwargs)
            agents += [str(item.get("agent")) for item in page.get("Items", [])]
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return agents


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
        actual = len(_holding_agents(user_id))
        if actual >= held:
            continue
        if update_if({"PK": f"USER#{user_id}", "SK": "ACTIVE_SESSIONS"}, "SET active = :actual",
                     condition="active = :held AND updated_at = :seen",
                     values={":actual": actual, ":held": held, ":seen": counter["updated_at"]}) is not None:
            healed += 1
    return healed


def _held_by_guests() -> dict[str, int]:
    """Per agent, the places guests hold now (their active sessions and pending starts), from the records."""
    held: dict[str, int] = {}
    for counter in query_index_partition(SLOTS_INDEX_KEY, limit=10_000):
        guest_id = str(counter.get("GSI2SK", ""))
        if not is_guest_id(guest_id) or int(counter.get("active", 0)) <= 0:
            continue
        for agent in _holding_agents(guest_id):
            held[agent] = held.get(agent, 0) + 1
    return held


def heal_guest_pools(now: float, min_age_seconds: int = 600) -> int:
    """Set each agent's guest pool to the places guests hold, when it is off and unchanged for `min_age_seconds`
    (a guest's Lambda that died between taking a place and recording or giving it back)."""
    pools = query_index_partition(POOLS_INDEX_KEY, limit=10_000)
    cutoff = datetime.fromtimestamp(now - min_age_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stale = [p for p in pools if str(p.get("updated_at", "")) <= cutoff]
    if not stale:
        return 0
    actual, healed = _held_by_guests(), 0
    for pool in stale:
        held, agent = int(pool.get("active", 0)), str(pool["GSI2SK"])
        if held == actual.get(agent, 0):
            continue
        if update_if(_pool_key(agent), "SET active = :actual", condition="active = :held AND updated_at = :seen",
                     values={":actual": actual.get(agent, 0), ":held": held,
                             ":seen": pool["updated_at"]}) is not None:
            healed += 1
    return healed
