"""Per-user usage counters: the billed seconds of ended sessions, per UTC day and per calendar month, and the
budget limits last seen for the user (what the schedule caps running sessions against).

Items (main table): PK `USAGE#{userId}`; SK `DAY#{yyyy-mm-dd}` / `MONTH#{yyyy-mm}` with `seconds` (ADD, in the
transaction that records the session's end: reading a user's usage is two GetItems, whatever their history), `ttl`;
SK `LIMITS` with `day`, `month` (0: none), written by /start when they change.

All guests together count as one more "user", GUESTS_TOTAL (no user's or guest's id can be it: `#` is in neither):
its `DAY#` counters add every guest session's seconds, and SK `RUNNING#{yyyy-mm-dd}` holds the running guest
sessions' seconds as end detection last measured them (`seconds`, `measured_at`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chalicelib.platform.dynamo import batch_get, delete_if, plain, table
from chalicelib.platform.shapes import Item

GUESTS_TOTAL = "#guests"
DAY_TTL_SECONDS = 3 * 86400
MONTH_TTL_SECONDS = 70 * 86400
LIMITS_TTL_SECONDS = 70 * 86400


def _key(user_id: str, sort: str) -> dict[str, str]:
    return {"PK": f"USAGE#{user_id}", "SK": sort}


def usage_updates(user_id: str, days: dict[str, int], months: dict[str, int]) -> list[Item]:
    """A session's seconds (shared out over its days and months: chalicelib.start.billing.split_seconds) added to its
    user's counters, as TransactWriteItems `Update` entries."""
    now = int(time.time())
    writes = []
    for prefix, shares, ttl in (("DAY#", days, DAY_TTL_SECONDS), ("MONTH#", months, MONTH_TTL_SECONDS)):
        for window, seconds in shares.items():
            writes.append({"Update": {
                "Key": _key(user_id, prefix + window), "UpdateExpression": "ADD seconds :s SET #t = :ttl",
                "ExpressionAttributeNames": {"#t": "ttl"},
                "ExpressionAttributeValues": {":s": seconds, ":ttl": now + ttl}}})
    return writes


@dataclass(frozen=True)
class UserUsage:
    day_seconds: int
    month_seconds: int
    limits: tuple[int, int] | None  # (day, month) as /start last recorded them; None: never
    override: tuple[int, int] | None = None  # (day, month) an operator set for this user; None: none


def read(user_id: str, day: str, month: str) -> UserUsage:
    """The user's seconds of one UTC day and month (their labels: chalicelib.start.billing), their recorded
    limits and an operator's override (one BatchGetItem)."""
    keys = [_key(user_id, f"DAY#{day}"), _key(user_id, f"MONTH#{month}"), _key(user_id, "LIMITS"),
            _key(user_id, "OVERRIDE")]
    items = {str(i["SK"]): plain(i) for i in batch_get(keys)}
    limits, override = items.get("LIMITS"), items.get("OVERRIDE")
    return UserUsage(
        day_seconds=int(items.get(f"DAY#{day}", {}).get("seconds", 0)),
        month_seconds=int(items.get(f"MONTH#{month}", {}).get("seconds", 0)),
        limits=(int(limits["day"]), int(limits["month"])) if limits else None,
        override=(int(override["day"]), int(override["month"])) if override else None)


def set_override(user_id: str, day: int, month: int, by: str) -> None:
    """An operator's budget for this user (seconds per UTC day / month, 0: unlimited), until cleared."""
    table().put_item(Item={**_key(user_id, "OVERRIDE"), "day": day, "month": month, "by": by})


def clear_override(user_id: str) -> bool:
    return delete_if(_key(user_id, "OVERRIDE"), "attribute_exists(PK)")


def record_limits(user_id: str, day: int, month: int) -> None:
    table().put_item(Item={**_key(user_id, "LIMITS"), "day": day, "month": month,
                           "ttl": int(time.time()) + LIMITS_TTL_SECONDS})


def read_day(user_id: str, day: str) -> tuple[int, int, float]:
    """One UTC day's ended seconds, and the running seconds last measured with when they were (one BatchGetItem)."""
    items = {str(i["SK"]): plain(i) for i in batch_get([_key(user_id, f"DAY#{day}"), _key(user_id, f"RUNNING#{day}")])}
    running = items.get(f"RUNNING#{day}", {})
    return (int(items.get(f"DAY#{day}", {}).get("seconds", 0)), int(running.get("seconds", 0)),
            float(running.get("measured_at", 0)))


def record_running(user_id: str, day: str, seconds: int, measured_at: float) -> None:
    """The running seconds measured now (chalicelib.upkeep.reconcile), for the starts until the next measure."""
    table().put_item(Item={**_key(user_id, f"RUNNING#{day}"), "seconds": seconds, "measured_at": int(measured_at),
                           "ttl": int(measured_at) + DAY_TTL_SECONDS})
