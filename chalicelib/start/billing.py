"""How Pipecat Cloud bills a session, in our words: whole seconds (a second begun counts), shared out over the UTC
days and calendar months it ran in (the budget windows, docs/usage.md). Pure: no storage, no clock but the one
given."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.platform.dynamo import iso_epoch


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


def ran_between(created_at: str, details: Mapping[str, Any] | None, now: float | None = None) -> tuple[float, float]:
    """When a session ran, as epochs: Pipecat Cloud's `createdAt` / `endedAt` where its details give them, else our
    record's `created_at` (a little later: it is written once the start was answered) / now."""
    now = time.time() if now is None else now
    start = iso_epoch((details or {}).get("createdAt")) or iso_epoch(created_at) or now
    end = iso_epoch((details or {}).get("endedAt")) or now
    return start, max(start, end)
