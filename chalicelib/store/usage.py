"""Per-user usage counters: the billed seconds of ended sessions, per UTC day and per calendar month, and the
budget limits last seen for the user (what the schedule caps running sessions against).

Items (main table): PK `USAGE#{userId}`; SK `DAY#{yyyy-mm-dd}` / `MONTH#{yyyy-mm}` with `seconds` (ADD, in the
transaction that records the session's end: reading a user's usage is two GetItems, whatever their history), `ttl`;
SK `LIMITS` with `day`, `month` (0: none), written by /start when they change.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.platform.dynamo import batch_get, plain, table
from chalicelib.platform.shapes import Item

DAY_TTL_SECONDS = 3 * 86400
MONTH_TTL_SECONDS = 70 * 86400
LIMITS_TTL_SECONDS = 70 * 86400


def _key(user_id: str, sort: str) -> dict[str, str]:
    return {"PK": f"USAGE#{user_id}", "SK": sort}


def day_window(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def month_window(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def day_reset(ts: float) -> float:
    """When the UTC day of `ts` ends (the day window's reset)."""
    start = datetime.fromtimestamp(ts, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=1)).timestamp()


def month_reset(ts: float) -> float:
    """When the calendar month of `ts` ends (UTC)."""
    moment = datetime.fromtimestamp(ts, UTC)
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
            ).timestamp()


def billed_seconds(start: float, end: float) -> int:
    """A session's billed time between two epochs, in whole seconds: a second begun counts."""
    return max(0, math.ceil(end - start))


def split_seconds(start: float, end: float) -> tuple[dict[str, int], dict[str, int]]:
    """A session's billed seconds shared out over the UTC days and the months it ran in, in proportion to the time
    it ran in each; each map's values sum to the whole."""
    total = billed_seconds(start, end)

    def share(boundary: Any, label: Any) -> dict[str, int]:
        parts: list[tuple[str, float]] = []
        cursor = start
        while cursor < end:
            cut = min(end, boundary(cursor))
            parts.append((label(cursor), cut - cursor))
            cursor = cut
        if not parts:
            return {label(start): total}
        whole = sum(length for _, length in parts) or 1.0
        shared = {name: math.floor(total * length / whole) for name, length in parts}
        shared[parts[-1][0]] += total - sum(shared.values())
        return shared

    return share(day_reset, day_window), share(month_reset, month_window)


def usage_updates(user_id: str, start: float, end: float) -> list[Item]:
    """The session's seconds added to its user's counters, as TransactWriteItems `Update` entries."""
    days, months = split_seconds(start, end)
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


def read(user_id: str, now: float) -> UserUsage:
    """The user's seconds of the current UTC day and month, and their recorded limits (one BatchGetItem)."""
    keys = [_key(user_id, f"DAY#{day_window(now)}"), _key(user_id, f"MONTH#{month_window(now)}"),
            _key(user_id, "LIMITS")]
    items = {str(i["SK"]): plain(i) for i in batch_get(keys)}
    limits = items.get("LIMITS")
    return UserUsage(
        day_seconds=int(items.get(f"DAY#{day_window(now)}", {}).get("seconds", 0)),
        month_seconds=int(items.get(f"MONTH#{month_window(now)}", {}).get("seconds", 0)),
        limits=(int(limits["day"]), int(limits["month"])) if limits else None)


def record_limits(user_id: str, day: int, month: int) -> None:
    table().put_item(Item={**_key(user_id, "LIMITS"), "day": day, "month": month,
                           "ttl": int(time.time()) + LIMITS_TTL_SECONDS})
