"""A user's sessions: list (paginated), details (our record + Pipecat Cloud's), stop.

Another user's session id is answered exactly like an unknown one (404): existence is not revealed.
"""

from __future__ import annotations

from chalicelib.api import answers
from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.pcc.responses import map_pcc_error
from chalicelib.platform import rate_limits
from chalicelib.platform.auth import is_guest_id
from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import count, logger
from chalicelib.platform.request_parsing import query_choice, query_int
from chalicelib.platform.secrets import private_key
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.start import billing, lifecycle
from chalicelib.store import agent_queue, session_records, usage

PCC_DETAIL_FIELDS = ("endedAt", "completionStatus", "botStartSeconds", "coldStart", "createdAt",
                     "resourceMetrics", "meetingIds")
STATUSES = (session_records.ACTIVE, session_records.ENDED, session_records.STOPPED)


def _not_found() -> Refused:
    return Refused("session_not_found", "No such session")


def owned_session(user_id: str, session_id: str) -> session_records.SessionRecord:
    """The caller's session record, or 404 (also for someone else's session)."""
    if not session_id or len(session_id) > 128:
        raise _not_found()
    record = session_records.get_session(session_id)
    if record is None or record.user_id != user_id:
        raise _not_found()
    return record


# ------------------------------------------------------------------ list
def list_sessions(user_id: str, params: dict[str, str]) -> JsonObject:
    status = query_choice(params, "status", STATUSES)
    limit = query_int(params, "limit", 20, 1, 100)
    start_key = session_records.decode_cursor(user_id, params["cursor"]) if params.get("cursor") else None
    items, next_key = session_records.list_user_sessions(user_id, limit=limit, status=status, start_key=start_key)
    cursor = session_records.encode_cursor(next_key)
    return answers.SessionList(sessions=[_answer(r) for r in items], nextCursor=cursor).model_dump(exclude_unset=True)


# ------------------------------------------------------------------ details
def session_details(user_id: str, session_id: str) -> JsonObject:
    settings = get_settings()
    rate_limits.take(f"details#{user_id}", settings.limits.details_rate_per_minute, 60, kind="details_rate_limited",
                     what="Session details (each asks Pipecat Cloud's private API)")
    record = owned_session(user_id, session_id)
    details = pipecat_details(record)
    if details and details.get("endedAt") and record.status == session_records.ACTIVE:
        # Pipecat Cloud says it ended: update our record and free the user's slot now.
        if end_session(record, session_records.ENDED, str(details.get("completionStatus") or "ended"), details,
                       freed="session_seen_ended"):
            record = session_records.get_session(session_id) or record
    shown = answers.SessionDetails(**_answer(record).model_dump(exclude_unset=True), pipecat=details)
    return shown.model_dump(exclude_unset=True)


def pipecat_details(record: session_records.SessionRecord) -> JsonObject | None:
    """Pipecat Cloud's view of the session (PCC_DETAIL_FIELDS of its private API's details); None when it cannot
    say (logged; a rejected key is logged as the operator problem it is)."""
    session_id = record.session_id
    try:
        raw = pcc_client.get_session(record.agent, session_id, private_key())
    except PccCallError as exc:
        if exc.status == 401:
            map_pcc_error(exc)  # logs the operator problem
        logger.info("PCC session details unavailable", extra={"session_id": session_id, "status": exc.status})
        return None
    except Refused as exc:
        logger.info("PCC session details unavailable", extra={"session_id": session_id, "code": exc.kind})
        return None
    return {k: raw[k] for k in PCC_DETAIL_FIELDS if k in raw}


# ------------------------------------------------------------------ the end of a session
def end_session(record: session_records.SessionRecord, status: str, reason: str, details: JsonObject | None,
                *, freed: str | None = None) -> bool:
    """Record that the session ended (`status`, `reason`; its slot, event and usage in one transaction) and, when
    this call recorded it, tell its agent's queue that capacity freed (`freed`: the wake-up's reason, else
    `reason`). False when it had already ended: nothing changes. The seconds it ran (chalicelib.start.billing:
    Pipecat Cloud's `createdAt` to `endedAt` where its `details` give them) go to its user's usage."""
    ran = billing.ran_between(record.created_at, details)
    seconds = billing.split_seconds(*ran)
    recorded = lifecycle.session_left(record, status, reason, details) + usage.usage_updates(record.user_id, *seconds)
    if is_guest_id(record.user_id):  # all guests' seconds together, for GUEST_SECONDS_PER_DAY
        recorded += usage.usage_updates(usage.GUESTS_TOTAL, *seconds)
    if not session_records.mark_ended(record, status, reason, recorded):
        return False
    count("SecondsUsed", billing.billed_seconds(*ran))
    agent_queue.capacity_freed(record.agent, freed or reason)
    return True


# ------------------------------------------------------------------ stop

def stop_session(user_id: str, session_id: str) -> JsonObject:
    """Stop via PCC's private API. Idempotent: stopping an ended session is not an error."""
    return answer_of(stop_record(owned_session(user_id, session_id), "stopped_by_user"))


def stop_record(record: session_records.SessionRecord, reason: str) -> session_records.SessionRecord:
    """Stop the session at Pipecat Cloud and record it stopped for `reason` (idempotent); the record as it is now."""
    if record.status == session_records.ACTIVE:
        try:
            pcc_client.stop_session(record.agent, record.session_id, private_key())
        except PccCallError as exc:
            if exc.status != 404:  # 404: already gone at Pipecat Cloud, which is what we want
                raise map_pcc_error(exc) from None
        # Pipecat Cloud's createdAt / endedAt, read after the stop: the user's usage to the second (without them it
        # counts from our record, to now)
        end_session(record, session_records.STOPPED, reason, pipecat_details(record))
        record = session_records.get_session(record.session_id) or record
    return record


def answer_of(record: session_records.SessionRecord) -> JsonObject:
    return _answer(record).model_dump(exclude_unset=True)


def _answer(record: session_records.SessionRecord) -> answers.SessionRecord:
    """The record as the API shows it (answers.SessionRecord): what it holds, nothing it lacks."""
    shown = {"sessionId": record.session_id, "agent": record.agent, "transport": record.transport,
             "status": str(record.status), "createdAt": record.created_at, "endedAt": record.ended_at,
             "endReason": record.end_reason, "callId": record.call_id, "provider": record.provider}
    return answers.SessionRecord(**{k: v for k, v in shown.items() if v is not None})

