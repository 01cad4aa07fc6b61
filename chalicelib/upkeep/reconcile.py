"""Scheduled reconciliation: our active records vs Pipecat Cloud (private API).

- records whose session Pipecat Cloud no longer lists as active are marked ended (slot freed);
- sessions older than the hard cap are stopped at Pipecat Cloud and marked stopped;
- anything it cannot check now is left for the next run (stale records expire by TTL).
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, cast

from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.platform.observability import count, logger
from chalicelib.platform.secrets import private_key
from chalicelib.platform.settings import get_settings
from chalicelib.store import agent_queue
from chalicelib.store import sessions as session_store
from chalicelib.store.sessions import SessionRecord


def _age_seconds(record: dict[str, Any], now: float) -> float:
    created = datetime.strptime(record["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return now - created.timestamp()


def run(now: float | None = None) -> dict[str, int]:
    settings = get_settings()
    now = now or time.time()
    summary = {"checked": 0, "ended": 0, "stopped": 0, "errors": 0, "slots_healed": 0}
    records = session_store.active_sessions()
    if records:
        _reconcile_records(records, settings.hard_cap_seconds, now, summary)
    summary["slots_healed"] = session_store.heal_slot_counters(now)
    count("ReconciledEnded", summary["ended"])
    count("ReconciledStopped", summary["stopped"])
    count("SlotCountersHealed", summary["slots_healed"])
    logger.info("reconciliation done", extra=summary)
    return summary


def _reconcile_records(records: list[dict[str, Any]], hard_cap_seconds: int, now: float,
                       summary: dict[str, int]) -> None:
    key = private_key()
    by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_agent[record["agent"]].append(record)
    for agent, agent_records in by_agent.items():
        try:
            active = {str(s["sessionId"]) for s in pcc_client.active_sessions(agent, key)}
        except PccCallError as exc:
            logger.warning("reconcile: cannot list sessions", extra={"agent": agent, "status": exc.status})
            summary["errors"] += 1
            continue
        for record in agent_records:
            summary["checked"] += 1
            session_id = record["session_id"]
            if session_id not in active:
                details = _details(agent, session_id, key)
                reason = str(details.get("completionStatus") or "ended") if details else "not_active_at_pipecat"
                if session_store.mark_ended(cast(SessionRecord, record), session_store.ENDED, reason, details):
                    summary["ended"] += 1
                    agent_queue.capacity_freed(agent, "reconcile_ended")
            elif _age_seconds(record, now) > hard_cap_seconds:
                if not pcc_client.stop_if_running(agent, session_id, key):
                    summary["errors"] += 1
                    continue
                if session_store.mark_ended(cast(SessionRecord, record), session_store.STOPPED, "hard_cap"):
                    summary["stopped"] += 1
                    agent_queue.capacity_freed(agent, "hard_cap")


def _details(agent: str, session_id: str, key: str) -> dict[str, Any] | None:
    """What Pipecat Cloud's private API says of a session that is no longer active; None when it cannot say."""
    try:
        return pcc_client.get_session(agent, session_id, key)
    except PccCallError:
        return None
