"""Scheduled reconciliation: our active records vs Pipecat Cloud (private API). `detect_ended` runs every minute
(its own schedule), `run` (the same plus slot healing) every 5 minutes.

- records whose session Pipecat Cloud no longer lists as active are marked ended (slot freed);
- sessions older than the hard cap (a guest's: GUEST_SESSION_MAX_SECONDS) are stopped at Pipecat Cloud and marked
  stopped; so are a user's when their budget is used up, and every guest's when the guests' day is
  (chalicelib.guests.budget);
- anything it cannot check now is left for the next run (stale records expire by TTL).
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.platform.auth import is_guest_id
from chalicelib.platform.dynamo import iso_epoch
from chalicelib.platform.observability import count, logger
from chalicelib.platform.secrets import private_key
from chalicelib.platform.settings import get_settings
from chalicelib.sessions import service as sessions_service
from chalicelib.start import budgets
from chalicelib.store import session_records, slots
from chalicelib.store.session_records import SessionRecord

END_DETECTION_SECONDS = 60  # the detect_ended schedule's rate (app.py)
DETAILS_CONCURRENCY = 16  # details calls in flight at once for the sessions a run finds gone


def _age_seconds(record: SessionRecord, now: float) -> float:
    return now - (iso_epoch(record.created_at) or now)


def run(now: float | None = None) -> dict[str, int]:
    """The 5-minute schedule's step: end detection (as `detect_ended` runs it every minute) and slot healing."""
    now = now or time.time()
    summary = detect_ended(now)
    summary["slots_healed"] = slots.heal_slot_counters(now) + slots.heal_guest_pools(now)
    count("SlotCountersHealed", summary["slots_healed"])
    logger.info("reconciliation done", extra=summary)
    return summary


def detect_ended(now: float | None = None) -> dict[str, int]:
    """Our active records against Pipecat Cloud: one private-API listing per agent with an active record (not one
    call per session), then a details call for each session that is gone (its `session.ended` carries them).
    The `detect_ended` schedule runs it every minute, so an end is recorded (and its event written) at most
    END_DETECTION_SECONDS after it happened, plus the listing's time."""
    settings = get_settings()
    now = now or time.time()
    summary = {"checked": 0, "ended": 0, "stopped": 0, "capped": 0, "errors": 0}
    records = session_records.active_sessions()
    if records:
        _reconcile_records(records, settings.limits.hard_cap_seconds, now, summary)
    elif settings.guests.access:
        _measure_guests([], now)  # no guest runs: the measure says so
    count("ReconciledEnded", summary["ended"])
    count("ReconciledStopped", summary["stopped"])
    return summary


def _reconcile_records(records: list[SessionRecord], hard_cap_seconds: int, now: float,
                       summary: dict[str, int]) -> None:
    key = private_key()
    by_agent: dict[str, list[SessionRecord]] = defaultdict(list)
    for record in records:
        by_agent[record.agent].append(record)
    gone: list[SessionRecord] = []
    capped: list[SessionRecord] = []  # past the hard cap
    running: dict[str, list[SessionRecord]] = defaultdict(list)  # user -> records still active at Pipecat Cloud
    for agent, agent_records in by_agent.items():
        try:
            active = {str(s["sessionId"]) for s in pcc_client.active_sessions(agent, key)}
        except PccCallError as exc:
            logger.warning("reconcile: cannot list sessions", extra={"agent": agent, "status": exc.status})
            summary["errors"] += 1
            continue
        for record in agent_records:
            summary["checked"] += 1
            session_id = record.session_id
            if session_id not in active:
                gone.append(record)
            elif _age_seconds(record, now) > _cap(record, hard_cap_seconds):
                capped.append(record)
            else:
                running[record.user_id].append(record)
    # Budgets: a user whose day or month ran out has every running session stopped (`session.capped`).
    over = budgets.over_budget(running, now)
    for user_id, window in over.items():
        logger.info("usage budget used up: sessions stopped", extra={"user_id": user_id, "window": window,
                                                                      "sessions": len(running[user_id])})
    spent = [r for user_id in over for r in running[user_id]]
    guests_spent = _measure_guests([r for records in running.values() for r in records], now)
    # The Pipecat Cloud calls, DETAILS_CONCURRENCY at a time: at 1.5 s a call, 200 ends a minute take ~20 s, not
    # 300 s one after the other (past the function's timeout); a stop is a stop and a details call.
    with ThreadPoolExecutor(max_workers=DETAILS_CONCURRENCY) as pool:
        ended = pool.map(_record_end, gone)
        hard = pool.map(lambda r: _stop(r, "guest_session_max" if is_guest_id(r.user_id) else "hard_cap", key),
                        capped)
        budget = pool.map(lambda r: _stop(r, "usage_budget", key), spent)
        guest_day = pool.map(lambda r: _stop(r, "guest_budget", key), [r for r in guests_spent if r not in spent])
        summary["ended"] += sum(ended)
        for stopped in hard:
            summary["stopped" if stopped else "errors"] += 1
        for stopped in [*budget, *guest_day]:
            summary["capped" if stopped else "errors"] += 1


def _measure_guests(running: list[SessionRecord], now: float) -> list[SessionRecord]:
    """chalicelib.guests.budget.measure: the guest sessions to stop (the guests' day used up)."""
    from chalicelib.guests import budget  # noqa: PLC0415 - lazy: `import app` loads no guest code (cold starts)

    return budget.measure(running, now)


def _cap(record: SessionRecord, hard_cap_seconds: int) -> int:
    """How long the session may run: a guest's at most GUEST_SESSION_MAX_SECONDS."""
    if is_guest_id(record.user_id):
        return min(hard_cap_seconds, get_settings().guests.session_max_seconds)
    return hard_cap_seconds


def _stop(record: SessionRecord, reason: str, key: str) -> bool:
    """Stop a running session at Pipecat Cloud and record it stopped (`reason`), with its details when Pipecat
    Cloud gives them (its usage to the second); False when the stop failed (the next run tries again)."""
    if not pcc_client.stop_if_running(record.agent, record.session_id, key):
        return False
    details = sessions_service.pipecat_details(record)
    if sessions_service.end_session(record, session_records.STOPPED, reason, details):
        count("SessionsCapped", reason=reason)
    return True


def _record_end(record: SessionRecord) -> int:
    """1 when the gone session's end was recorded now (and its event written), else 0."""
    details = sessions_service.pipecat_details(record)
    if details is not None and not details.get("endedAt"):
        return 0  # Pipecat Cloud still has it running (a listing that missed it): the next run looks again
    reason = str(details.get("completionStatus") or "ended") if details else "not_active_at_pipecat"
    ended = sessions_service.end_session(record, session_records.ENDED, reason, details,
                                         freed="reconcile_ended")
    return 1 if ended else 0
