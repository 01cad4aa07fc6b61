"""The admin API (docs/operations.md): for callers whose token carries the `ADMIN_GROUP` group (locally:
`X-Dev-Groups`), nobody else (403 `admin_only`, before anything is read). Each action is logged with the admin's id
and recorded as a lifecycle event `admin.action` (`data.action`, `data.admin`, what it acted on), besides the
events of what changed (a gate's `by: admin:<id>`, `session.stopped` with reason `stopped_by_admin`).

- an agent's view: its gates, its queue (depth, the head's age, attempts in flight), our active records, and Pipecat
  Cloud's own `activeSessionCount` and autoscaling limits, side by side;
- close / open a gate for maintenance, with a message callers see;
- stop any session;
- a user's view; block / unblock them; set or clear their budget override;
- list sessions across users.
"""

from __future__ import annotations

import time

from pydantic import ValidationError

from chalicelib.api.models import AdminGateRequest, BudgetOverride
from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.platform.auth import Principal
from chalicelib.platform.dynamo import iso_at, iso_epoch
from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import count, logger
from chalicelib.platform.request_parsing import (
    parse_json_object,
    query_choice,
    query_error,
    query_int,
    validation_error,
)
from chalicelib.platform.secrets import private_key
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.sessions import service as sessions_service
from chalicelib.start import billing, budgets, capacity_queue, gates
from chalicelib.start.queued_start import SWEEP_GRACE_SECONDS
from chalicelib.store import agent_queue, blocks, queued_starts, session_records, slots, usage
from chalicelib.store import gates as gate_store
from chalicelib.store.gates import ORG_SCOPE, agent_scope
from chalicelib.store.outbox import record_event

VIEW_RECORDS_LIMIT = 2000  # active records and pending starts one view reads at most (its cost is bounded)
MAINTENANCE = "maintenance"


def _audit(admin: str, action: str, *, user_id: str | None = None, agent: str = "*", **data: object) -> None:
    """The admin action as a lifecycle event (`admin.action`), besides the log line."""
    record_event("admin.action", user_id=user_id, agent=agent, data={"action": action, "admin": admin, **data})
    logger.warning("admin action", extra={"admin": admin, "action": action, "user_id": user_id, "agent": agent})


def require_admin(principal: Principal) -> str:
    """The admin's id, or Refused (403): the admin group is not set, or the caller's token does not carry it."""
    group = get_settings().auth.admin_group
    if not group or group not in principal.groups or principal.service:
        count("AdminRefused")
        raise Refused("admin_only", "This route is for operators (the admin group) only")
    return principal.user_id


def _known_agent(agent: str) -> str:
    if agent not in get_settings().pcc.agents:
        raise Refused("unknown_agent", f"Agent {agent[:128]!r} is not available")
    return agent


def agent_view(principal: Principal, agent: str) -> JsonObject:
    require_admin(principal)
    agent, now = _known_agent(agent), time.time()
    org_gate, agent_gate = gate_store.read([ORG_SCOPE, agent_scope(agent)])
    state = agent_queue.read(agent)
    pending = [r for r in queued_starts.pending(VIEW_RECORDS_LIMIT) if r.agent == agent]
    head = min(pending, key=lambda r: r.seq if r.seq is not None else 1 << 62, default=None)
    records = [r for r in session_records.active_sessions(VIEW_RECORDS_LIMIT) if r.agent == agent]
    try:
        details = pcc_client.agent_details(agent, private_key())
        pipecat: JsonObject | None = {"activeSessionCount": details.get("activeSessionCount"),
                                      "autoScaling": details.get("autoScaling")}
    except PccCallError as exc:
        logger.warning("admin view: Pipecat Cloud's agent details unavailable", extra={"status": exc.status})
        pipecat = None
    created = iso_epoch(head.created_at) if head is not None else None
    return {
        "agent": agent,
        "gates": {"organisation": {"closed": org_gate.closed, "reasons": org_gate.messages},
                  "agent": {"closed": agent_gate.closed, "reasons": agent_gate.messages}},
        "queue": {"depth": state.waiting(), "headAgeSeconds": None if created is None else int(now - created),
                  "startingNow": sum(1 for r in pending if r.state == queued_starts.STARTING),
                  "dispatcherRunning": state.leased(now)},
        "ourActiveSessions": len(records),
        "guests": {"held": slots.guest_pool(agent), "max": get_settings().guests.max_active,
                   "access": get_settings().guests.access},
        "pipecat": pipecat,
    }


def change_gate(principal: Principal, raw_body: bytes | None) -> JsonObject:
    """Close or open a gate for maintenance (AdminGateRequest)."""
    admin = require_admin(principal)
    try:
        change = AdminGateRequest.model_validate(parse_json_object(raw_body, max_bytes=4096))
    except ValidationError as exc:
        raise validation_error(exc) from None
    scope, agent, action, message = change.scope, change.agent, change.action, change.message
    target = ORG_SCOPE if scope == "organisation" else agent_scope(_known_agent(agent or ""))
    by = f"admin:{admin}"
    if action == "close" and change.reason != MAINTENANCE:
        raise Refused("validation_error", "An operator closes a gate for `maintenance` only")
    if action == "close":
        changed = gates.close(target, MAINTENANCE, message[:500], by=by)
    else:
        agents = list(get_settings().pcc.agents) if target == ORG_SCOPE else [str(agent)]
        changed = gates.reopen(target, change.reason, agents, by=by)
    _audit(admin, f"gate.{action}", agent=str(agent) if target != ORG_SCOPE else "*", scope=target,
           changed=changed, message=message or None, reason=change.reason)
    return {"scope": target, "action": action, "changed": changed}


def stop_any_session(principal: Principal, session_id: str) -> JsonObject:
    admin = require_admin(principal)
    record = session_records.get_session(session_id)
    if record is None:
        raise Refused("session_not_found", "No such session")
    stopped = sessions_service.stop_record(record, "stopped_by_admin")
    _audit(admin, "session.stop", user_id=record.user_id, agent=record.agent, sessionId=session_id)
    return {**sessions_service.answer_of(stopped), "userId": record.user_id}


BLOCK_PAGES = 5  # pages of 100 active sessions one block stops at the most (a user holds USER_SESSION_LIMIT)


def block_user(principal: Principal, user_id: str, raw_body: bytes | None) -> JsonObject:
    """Block a user: every route refuses them from now on (403 `user_blocked`), their running sessions are stopped
    (reason `user_blocked`) and their queued starts cancelled, each exactly once (each change
    is conditional: blocking again finds nothing left to do)."""
    admin = require_admin(principal)
    reason = str(parse_json_object(raw_body, max_bytes=4096).get("reason") or "")[:500] if raw_body else ""
    changed = blocks.block(user_id, f"admin:{admin}", reason)
    cancelled = 0
    since = iso_at(time.time() - get_settings().queue.start_deadline_seconds - SWEEP_GRACE_SECONDS)
    for request in queued_starts.user_pending(user_id, since):
        try:
            capacity_queue.cancel(user_id, request.request_id)  # waits for an attempt in flight, as a user's would
            cancelled += 1
        except Refused as refusal:
            if refusal.kind != "not_cancellable":
                raise  # it started meanwhile: its session is stopped below
    stopped, start_key = 0, None
    for _ in range(BLOCK_PAGES):
        records, start_key = session_records.list_user_sessions(user_id, limit=100, status=session_records.ACTIVE,
                                                                start_key=start_key)
        for record in records:
            if sessions_service.stop_record(record, "user_blocked").status == session_records.STOPPED:
                stopped += 1
        if not start_key:
            break
    count("UsersBlocked")
    _audit(admin, "user.block", user_id=user_id, changed=changed, reason=reason or None,
           sessionsStopped=stopped, startsCancelled=cancelled)
    return {"userId": user_id, "blocked": True, "changed": changed, "sessionsStopped": stopped,
            "startsCancelled": cancelled}


def unblock_user(principal: Principal, user_id: str) -> JsonObject:
    admin = require_admin(principal)
    changed = blocks.unblock(user_id)
    _audit(admin, "user.unblock", user_id=user_id, changed=changed)
    return {"userId": user_id, "blocked": False, "changed": changed}


USER_VIEW_SESSIONS = 20  # the user's newest sessions one view lists


def user_view(principal: Principal, user_id: str) -> JsonObject:
    """A user as the operator sees them: blocked or not, their newest sessions, their pending starts, their usage and
    budget windows (with the override, if any)."""
    require_admin(principal)
    records, _ = session_records.list_user_sessions(user_id, limit=USER_VIEW_SESSIONS)
    since = iso_at(time.time() - get_settings().queue.start_deadline_seconds - SWEEP_GRACE_SECONDS)
    now = time.time()
    used = usage.read(user_id, billing.day_window(now), billing.month_window(now))
    return {
        "userId": user_id,
        "blocked": blocks.is_blocked(user_id),
        "sessions": [sessions_service.answer_of(r) for r in records],
        "pendingStarts": [{"requestId": r.request_id, "status": str(r.state), "agent": r.agent,
                           "createdAt": r.created_at} for r in queued_starts.user_pending(user_id, since)],
        "usage": budgets.report(user_id, frozenset(), now, used),
        "budgetOverride": None if used.override is None else {"day": used.override[0], "month": used.override[1]},
    }


def set_budget(principal: Principal, user_id: str, raw_body: bytes | None) -> JsonObject:
    """`{"day": seconds, "month": seconds}` (0: unlimited) replaces the user's budget until cleared."""
    admin = require_admin(principal)
    try:
        override = BudgetOverride.model_validate(parse_json_object(raw_body, max_bytes=1024))
    except ValidationError as exc:
        raise validation_error(exc) from None
    usage.set_override(user_id, override.day, override.month, f"admin:{admin}")
    _audit(admin, "user.budget_set", user_id=user_id, day=override.day, month=override.month)
    return {"userId": user_id, "budgetOverride": override.model_dump()}


def clear_budget(principal: Principal, user_id: str) -> JsonObject:
    admin = require_admin(principal)
    changed = usage.clear_override(user_id)
    _audit(admin, "user.budget_clear", user_id=user_id, changed=changed)
    return {"userId": user_id, "budgetOverride": None, "changed": changed}


def change_user(principal: Principal, user_id: str, change: str, undo: bool, raw_body: bytes | None) -> JsonObject:
    """`block` / `budget` set (`undo`: cleared) for a user."""
    if change == "block":
        return unblock_user(principal, user_id) if undo else block_user(principal, user_id, raw_body)
    return clear_budget(principal, user_id) if undo else set_budget(principal, user_id, raw_body)


def list_sessions(principal: Principal, params: dict[str, str]) -> JsonObject:
    """Sessions across users: `user` (their listing, any status, newest first) or all users' active ones (oldest
    first), filtered by `agent`; `limit` 1-100 (50), `cursor` to go on. A page costs at most a few queries whatever
    the history: one filtered by agent may hold fewer than `limit` with a `nextCursor` to go on from."""
    require_admin(principal)
    user, agent = params.get("user") or None, params.get("agent") or None
    status = query_choice(params, "status", sessions_service.STATUSES)
    limit = query_int(params, "limit", 50, 1, 100)
    cursor = params.get("cursor")
    if user is not None:
        start = session_records.decode_cursor(user, cursor) if cursor else None
        records, next_key = session_records.list_user_sessions(user, limit=limit, status=status, start_key=start)
    elif status in (None, "active"):
        start = session_records.decode_active_cursor(cursor) if cursor else None
        records, next_key = session_records.active_page(limit, start)
    else:
        raise query_error("user", "is required to list ended or stopped sessions (only active ones are indexed "
                                  "across users)")
    shown = [{**sessions_service.answer_of(r), "userId": r.user_id} for r in records if agent in (None, r.agent)]
    return {"sessions": shown, "nextCursor": session_records.encode_cursor(next_key)}
