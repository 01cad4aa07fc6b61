"""Per-user usage budgets (docs/usage.md): the billed seconds of a user's sessions per UTC day and per calendar
month, against USER_SECONDS_PER_DAY / USER_SECONDS_PER_MONTH or the caller's tier (USAGE_TIERS).

- Usage = the seconds of the user's ended sessions (counters written with each end, chalicelib.store.usage) + the
  running time of their active sessions.
- POST /start over budget: 429 `usage_budget_exceeded`, `Retry-After` to the window's reset.
- A running session that exhausts the budget is stopped by the detect_ended schedule (every minute): `over_budget`
  names the users.
- GET /usage: `report`.
- An operator's override (chalicelib.operations.admin) replaces the user's limits, where budgets are configured.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from chalicelib.api import answers
from chalicelib.platform.dynamo import iso_at, iso_epoch
from chalicelib.platform.errors import TryLater
from chalicelib.platform.observability import count
from chalicelib.platform.settings import Settings, get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.start import billing
from chalicelib.store import session_records, usage
from chalicelib.store.session_records import SessionRecord

ACTIVE_LISTED = 50  # a user's active sessions read for their running time (USER_SESSION_LIMIT is far below)


@dataclass(frozen=True)
class Limits:
    day: int  # 0: unlimited
    month: int

    @property
    def any(self) -> bool:
        return bool(self.day or self.month)


def limits_for(settings: Settings, names: frozenset[str]) -> Limits:
    """The caller's limits: the tiers named by their token's groups or scopes (the most generous of them, 0 being
    unlimited), else USER_SECONDS_PER_DAY / USER_SECONDS_PER_MONTH."""
    tiers = [settings.usage.usage_tiers[n] for n in sorted(names) if n in settings.usage.usage_tiers]
    if not tiers:
        return Limits(settings.usage.user_seconds_per_day, settings.usage.user_seconds_per_month)

    def generous(values: list[int]) -> int:
        return 0 if 0 in values else max(values)

    return Limits(generous([t.day for t in tiers]), generous([t.month for t in tiers]))


def budgets_configured(settings: Settings) -> bool:
    usage = settings.usage
    return bool(usage.user_seconds_per_day or usage.user_seconds_per_month or usage.usage_tiers)


def running_seconds(records: list[SessionRecord], now: float) -> list[tuple[str, int]]:
    """(session id, seconds it has run) of active session records."""
    out = []
    for record in records:
        created = iso_epoch(record.created_at)
        if created is not None:
            out.append((record.session_id, billing.billed_seconds(created, now)))
    return out


def _windows(used: usage.UserUsage, running: int, limits: Limits, now: float) -> dict[str, JsonObject]:
    out = {}
    for name, seconds, limit, window, resets in (
            ("day", used.day_seconds, limits.day, billing.day_window(now), billing.day_reset(now)),
            ("month", used.month_seconds, limits.month, billing.month_window(now), billing.month_reset(now))):
        total = seconds + running
        out[name] = {"window": window, "usedSeconds": total, "endedSeconds": seconds, "runningSeconds": running,
                     "limitSeconds": limit or None, "remainingSeconds": max(0, limit - total) if limit else None,
                     "resetsAt": iso_at(resets), "resetsInSeconds": max(1, math.ceil(resets - now))}
    return out


def _used_up(windows: dict[str, JsonObject]) -> str | None:
    """The first window (day, then month) whose limit the used seconds have reached; None when both have budget."""
    return next((name for name, w in windows.items()
                 if w["limitSeconds"] is not None and w["usedSeconds"] >= w["limitSeconds"]), None)


def _used(user_id: str, now: float) -> usage.UserUsage:
    return usage.read(user_id, billing.day_window(now), billing.month_window(now))


def _active(user_id: str) -> list[SessionRecord]:
    return session_records.list_user_sessions(user_id, limit=ACTIVE_LISTED, status=session_records.ACTIVE)[0]


def check_start(user_id: str, names: frozenset[str], now: float | None = None) -> None:
    """Before a start: 429 `usage_budget_exceeded` when the user has no budget left in a window. Records the
    user's limits for the schedule when they changed (it has no token to read them from)."""
    settings = get_settings()
    if not budgets_configured(settings):
        return
    now = time.time() if now is None else now
    used = _used(user_id, now)
    limits = Limits(*used.override) if used.override else limits_for(settings, names)
    if used.limits != (limits.day, limits.month):
        usage.record_limits(user_id, limits.day, limits.month)
    if not limits.any:
        return
    running = sum(s for _, s in running_seconds(_active(user_id), now))
    windows = _windows(used, running, limits, now)
    name = _used_up(windows)
    if name is not None:
        window = windows[name]
        count("StartRejected", code="usage_budget_exceeded")
        raise TryLater("usage_budget_exceeded",
                       f"Your {name}'s budget of {window['limitSeconds']} seconds is used up; it resets at "
                       f"{window['resetsAt']}", retry_after=window["resetsInSeconds"],
                       extra={"window": name, "usedSeconds": window["usedSeconds"],
                              "limitSeconds": window["limitSeconds"], "resetsAt": window["resetsAt"]})


def report(user_id: str, names: frozenset[str], now: float | None = None,
           used: usage.UserUsage | None = None) -> JsonObject:
    """GET /usage: used / limit / reset for each window, and the running seconds of each active session (`used`:
    the user's usage as the caller has just read it for `now`, else it is read)."""
    settings = get_settings()
    now = time.time() if now is None else now
    used = used or _used(user_id, now)
    limits = Limits(*used.override) if used.override else limits_for(settings, names)
    active = running_seconds(_active(user_id), now)
    windows = _windows(used, sum(s for _, s in active), limits, now)
    return answers.Usage(userId=user_id, day=answers.UsageWindow(**windows["day"]),
                         month=answers.UsageWindow(**windows["month"]),
                         activeSessions=[answers.ActiveUsage(sessionId=sid, runningSeconds=seconds)
                                         for sid, seconds in active]).model_dump()


def over_budget(records_by_user: dict[str, list[SessionRecord]], now: float) -> dict[str, str]:
    """Of users with active sessions, those whose budget (as /start last recorded it) is used up, with the
    window that ran out. One BatchGetItem per user, only when budgets are configured at all."""
    if not budgets_configured(get_settings()):
        return {}
    out = {}
    for user_id, records in records_by_user.items():
        used = _used(user_id, now)
        if used.limits is None or not any(used.limits):
            continue
        running = sum(s for _, s in running_seconds(records, now))
        name = _used_up(_windows(used, running, Limits(*used.limits), now))
        if name is not None:
            out[user_id] = name
    return out
