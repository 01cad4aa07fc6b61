"""What all guests together may use in a UTC day (GUEST_SECONDS_PER_DAY, docs/guests.md).

Used = the seconds of today's ended guest sessions (added with each end: chalicelib.store.usage's GUESTS_TOTAL) +
the running guest sessions' seconds as end detection measured them (every minute; a measure older than
RUNNING_FRESH_SECONDS is not counted, since those sessions have ended or been measured again). When used reaches the
total, POST /guest and guest starts answer 429 `guest_budget_exceeded` until the next UTC midnight, and end
detection stops every running guest session (`session.capped`, reason `guest_budget`).
"""

from __future__ import annotations

import math
import time

from chalicelib.platform.auth import is_guest_id
from chalicelib.platform.dynamo import iso_at
from chalicelib.platform.errors import TryLater
from chalicelib.platform.observability import count
from chalicelib.platform.settings import get_settings
from chalicelib.start import billing, budgets
from chalicelib.store import usage
from chalicelib.store.session_records import SessionRecord

RUNNING_FRESH_SECONDS = 180  # three end-detection runs
ALARM_PERCENT = 80  # infra/template.yaml's GuestBudgetAlarm: GuestBudgetUsedPercent at or above this


def used_today(now: float) -> int:
    ended, running, measured_at = usage.read_day(usage.GUESTS_TOTAL, billing.day_window(now))
    return ended + (running if now - measured_at <= RUNNING_FRESH_SECONDS else 0)


def check(now: float | None = None) -> None:
    """429 `guest_budget_exceeded` (Retry-After: to the next UTC midnight) when the guests' day is used up."""
    limit = get_settings().guests.seconds_per_day
    if not limit:
        return
    now = time.time() if now is None else now
    used = used_today(now)
    if used >= limit:
        resets = billing.day_reset(now)
        raise TryLater("guest_budget_exceeded", f"Guests have used today's {limit} seconds; try again after "
                       f"{iso_at(resets)}", retry_after=max(1, math.ceil(resets - now)),
                       extra={"usedSeconds": used, "limitSeconds": limit, "resetsAt": iso_at(resets)})


def measure(running: list[SessionRecord], now: float) -> list[SessionRecord]:
    """End detection's step: the running guest sessions' seconds recorded (and the metrics); the guest sessions to
    stop, all of them, once the day's total is used up."""
    guests = [record for record in running if is_guest_id(record.user_id)]
    settings = get_settings().guests
    if not guests and not settings.access:
        return []
    limit = settings.seconds_per_day
    seconds = sum(s for _, s in budgets.running_seconds(guests, now))
    day = billing.day_window(now)
    usage.record_running(usage.GUESTS_TOTAL, day, seconds, now)
    total = usage.read_day(usage.GUESTS_TOTAL, day)[0] + seconds
    count("GuestSecondsUsed", total)
    if not limit:
        return []
    count("GuestBudgetUsedPercent", math.floor(100 * total / limit))
    return guests if total >= limit else []
