"""Stop bots that run at Pipecat Cloud with no record of ours ("orphans").

A start whose answer was lost after Pipecat Cloud created the bot (a 5xx or a reset after the request was
sent, a timeout, a Lambda killed inside the call) leaves a billed bot that no record claims: it escapes the
per-user cap, and reconciliation, which walks our records, never sees it. On the reconcile schedule this
lists every agent's active sessions with the private API and stops each one that no session record of
ours claims once it is older than ORPHAN_GRACE_SECONDS (a start in flight records its session within the
Pipecat Cloud read timeout, far inside the grace).

ORPHAN_SWEEP=report only counts them (for agents that other systems start too); ORPHAN_REPORT_ONLY_AGENTS
names such agents one by one. The telephony agent is report-only while static telephony is on
(TELEPHONY_WEBSOCKET_AUTH=none with TELEPHONY_PUBLIC_BASE_URL set): those calls are started by Pipecat
Cloud itself from the provider's stream, and we have no record of them by design.
"""

from __future__ import annotations

import time

from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.platform.dynamo import iso_at, iso_epoch
from chalicelib.platform.observability import count, logger
from chalicelib.platform.secrets import private_key
from chalicelib.platform.settings import Settings, get_settings
from chalicelib.store import agent_queue, session_checks, session_records
from chalicelib.store.outbox import record_event


def report_only_agents(settings: Settings) -> set[str]:
    agents = set(settings.orphans.report_only_agents)
    static_telephony = settings.telephony.websocket_auth == "none" and settings.telephony.public_base_url
    if static_telephony and settings.resolved_telephony_agent:
        agents.add(settings.resolved_telephony_agent)
    return agents


def check_unclaimed(agent: str, session_id: str, due: int, now: float | None = None,
                    announced: int | None = None) -> str:
    """A session Pipecat Cloud announced that no record claimed (chalicelib.store.session_checks): claimed since
    (its start's answer came after the announcement), it is confirmed as of `announced`; else, at its due time,
    stopped if still unclaimed, as the sweep would, without waiting for the sweep. Returns what happened."""
    settings = get_settings()
    now = time.time() if now is None else now
    if session_records.get_session(session_id) is not None:
        at = announced if announced is not None else due - settings.orphans.grace_seconds
        session_records.confirm(session_id, iso_at(at))
        return "claimed"
    if now < due:
        session_checks.send(agent, session_id, due, now, announced=announced)  # SQS delays 15 minutes at most
        return "not_due"
    if settings.orphans.sweep != "stop" or agent in report_only_agents(settings):
        logger.warning("orphan found (report only)", extra={"agent": agent, "session_id": session_id})
        return "reported"
    if not pcc_client.stop_if_running(agent, session_id, private_key()):
        return "not_stopped"  # gone already, or the stop failed: the sweep looks again
    count("OrphansStoppedEarly")
    logger.warning("orphan stopped on Pipecat Cloud's session.started", extra={"agent": agent,
                                                                              "session_id": session_id})
    record_event("session.orphan_stopped", user_id=None, agent=agent, session_id=session_id,
                 data={"announced": True})
    agent_queue.capacity_freed(agent, "orphan_stopped")
    return "stopped"


def sweep(now: float | None = None) -> dict[str, int]:
    settings = get_settings()
    summary = {"orphans_found": 0, "orphans_stopped": 0, "orphan_errors": 0}
    if settings.orphans.sweep == "off":
        return summary
    now = time.time() if now is None else now
    key = private_key()
    report_only = report_only_agents(settings)
    for agent in settings.pcc.agents:
        try:
            active = pcc_client.active_sessions(agent, key)
        except PccCallError as exc:
            if exc.status != 404:  # an agent of our policy that Pipecat Cloud does not know has no bots
                logger.warning("orphan sweep: cannot list sessions", extra={"agent": agent, "status": exc.status})
                summary["orphan_errors"] += 1
            continue
        for session in active:
            created = iso_epoch(session.get("createdAt"))
            session_id = str(session.get("sessionId") or "")
            if not session_id or created is None or now - created < settings.orphans.grace_seconds:
                continue  # too young: its start may still be recording it
            if session_records.get_session(session_id) is not None:
                continue
            summary["orphans_found"] += 1
            if settings.orphans.sweep == "report" or agent in report_only:
                logger.warning("orphan found (report only)", extra={"agent": agent, "session_id": session_id})
                continue
            if not pcc_client.stop_if_running(agent, session_id, key):
                summary["orphan_errors"] += 1
                continue
            summary["orphans_stopped"] += 1
            logger.warning("orphan stopped", extra={"agent": agent, "session_id": session_id})
            record_event("session.orphan_stopped", user_id=None, agent=agent, session_id=session_id,
                         data={"createdAt": session.get("createdAt")})
            agent_queue.capacity_freed(agent, "orphan_stopped")
    count("OrphansFound", summary["orphans_found"])
    count("OrphansStopped", summary["orphans_stopped"])
    return summary
