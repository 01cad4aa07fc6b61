"""DynamoDB data access for queued starts (the capacity queue's state machine).

Item: PK `REQUEST#{requestId}`, SK `META`, with `seq`, its place in the agent's queue (chalicelib.store.agent_queue);
GSI1PK `USER#{userId}#REQUESTS` / GSI1SK `{createdAt}#{id}`; sparse GSI2PK `PENDING` / GSI2SK `{createdAt}`
while queued or starting (the sweeper's index).

States: queued -> starting -> started | failed, queued -> cancelled, starting -> queued (retry).
Every transition is a conditional write on (state, next_attempt), so a second dispatcher (one that took
over an expired lease) can never move a request twice, and so never start two bots for one request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from chalicelib.platform.dynamo import (
    cancellation_codes,
    conditional_failed,
    now_iso,
    plain,
    refused_writes,
    table,
    transact,
    transact_if,
    update_if,
)
from chalicelib.platform.shapes import Item, JsonObject
from chalicelib.store import intents, request_bodies
from chalicelib.store.index import query_index_partition
from chalicelib.store.intents import StartIntent
from chalicelib.store.session_records import SessionRecord
from chalicelib.store.slots import release_pool_updates, release_slot_update


class RequestState(StrEnum):
    """A queued start's states (stored as their values): queued -> starting (an attempt claimed it) -> queued again
    (refused) | started | failed; queued -> cancelled (its owner, or abandonment) | failed (its deadline)."""

    QUEUED = "queued"
    STARTING = "starting"
    STARTED = "started"
    FAILED = "failed"
    CANCELLED = "cancelled"


QUEUED, STARTING, STARTED = RequestState.QUEUED, RequestState.STARTING, RequestState.STARTED
FAILED, CANCELLED = RequestState.FAILED, RequestState.CANCELLED


@dataclass(frozen=True)
class QueuedStart:
    """A queued start as stored (`REQUEST#{id}` / `META`). Its transitions are chalicelib.start.queued_start's; a
    changed copy is `replace(request, ...)`."""

    request_id: str
    user_id: str
    agent: str
    transport: str
    state: RequestState
    deadline: int
    created_at: str
    seq: int | None = None  # its place in the agent's queue
    attempts: int = 0
    next_attempt: int = 1
    next_attempt_at: int = 0
    seen_at: int | None = None  # when its owner last asked about it (None: recorded before abandonment existed)
    lease_until: int = 0  # an attempt's claim
    session_id: str | None = None
    result: str | None = None  # the JSON of the answer a direct start would have given
    error_code: str | None = None
    error_detail: str | None = None
    pcc_request: str | None = None  # inline, else in `pcc_request_chunks` BODY#nnn items
    pcc_request_chunks: int = 0
    crashes: int = 0  # attempts that died before an outcome
    last_error: str | None = None  # why the last attempt was put back

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> QueuedStart:
        values = plain(item)
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in known and v is not None}
        ints = ("deadline", "seq", "attempts", "next_attempt", "next_attempt_at", "seen_at", "lease_until",
                "pcc_request_chunks", "crashes")
        kept.update({k: int(kept[k]) for k in ints if k in kept})
        return cls(**{**kept, "state": RequestState(values["state"])})


TERMINAL = (STARTED, FAILED, CANCELLED)
PENDING_INDEX_KEY = "PENDING"
FINISH_ATTEMPTS = 5  # a request that keeps coming back between our reads and writes (never seen in practice)


def _key(request_id: str) -> dict[str, str]:
    return {"PK": f"REQUEST#{request_id}", "SK": "META"}



def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class RecordRefused(Exception):
    """A queued start was not recorded: DynamoDB refused the transaction. `refused` names the conditions that did:
    "request" (the id was taken), "entry" (the queue place was given up meanwhile), "intent" (the start intent was
    recovered: its slot is no longer this start's); `reasons`: DynamoDB's codes, for the log."""

    def __init__(self, refused: frozenset[str], reasons: list[str]) -> None:
        super().__init__(f"refused by {sorted(refused) or reasons}")
        self.refused, self.reasons = refused, reasons


def create(*, request_id: str, user_id: str, agent: str, transport: str, pcc_request: JsonObject,
           deadline: float, next_attempt_at: float, seq: int, entry: Item, events: list[Item],
           intent: StartIntent | None = None) -> QueuedStart:
    """Record a queued start at its place `seq` in the agent's queue (`entry`: the queue entry's `Put`), and
    retire the start intent whose slot it takes over, in one transaction. Raises RecordRefused when a condition
    refused it (nothing written); any other error may have come after the commit (its answer lost)."""
    created, ttl = now_iso(), int(deadline) + 86400
    item: Item = {
        **_key(request_id),
        "GSI1PK": f"USER#{user_id}#REQUESTS",
        "GSI1SK": f"{created}#{request_id}",
        "GSI2PK": PENDING_INDEX_KEY,
        "GSI2SK": created,
        "type": "start_request",
        "request_id": request_id,
        "user_id": user_id,
        "agent": agent,
        "transport": transport,
        "state": QUEUED,
        "seq": seq,
        "attempts": 0,
        "next_attempt": 1,
        "next_attempt_at": int(next_attempt_at),
        "deadline": int(deadline),
        "seen_at": int(next_attempt_at),  # the 202 itself: its owner knows of it now
        "created_at": created,
        "ttl": ttl,
    }
    stored, chunks = request_bodies.stored(_key(request_id), pcc_request, ttl)
    item.update(stored)
    writes: list[Item] = [{"Put": entry}, *chunks]
    names = ["request", "entry", *(f"chunk {i}" for i in range(len(chunks)))]
    if intent is not None:
        writes.append({"Delete": intents.delete_update(intent)})
        names.append("intent")
    writes += events
    try:
        transact([{"Put": {"Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}, *writes])
    except Exception as exc:
        if conditional_failed(exc):
            raise RecordRefused(refused_writes(exc, names), cancellation_codes(exc)) from None
        raise
    return QueuedStart.from_item(item)


def pcc_request(request: QueuedStart) -> JsonObject:
    """The Pipecat Cloud request of a queued start, inline or reassembled from its chunks."""
    return request_bodies.read(_key(request.request_id), request.pcc_request, request.pcc_request_chunks)


def get(request_id: str, consistent: bool = True) -> QueuedStart | None:
    item = table().get_item(Key=_key(request_id), ConsistentRead=consistent).get("Item")
    return QueuedStart.from_item(item) if item else None


def claim(request_id: str, attempt: int, lease_seconds: int, now: float) -> bool:
    """queued -> starting for this attempt (or take over an expired lease). False: stale/duplicate."""
    return update_if(
        _key(request_id), "SET #s = :starting, lease_until = :lease, attempts = :attempt",
        condition="next_attempt = :attempt AND (#s = :queued OR (#s = :starting AND lease_until < :now))",
        names={"#s": "state"}, values={":starting": STARTING, ":queued": QUEUED, ":attempt": attempt,
                                       ":lease": int(now + lease_seconds), ":now": int(now)}) is not None


def release_claim(request_id: str, attempt: int) -> int:
    """starting -> queued for the same attempt (the attempt crashed before an outcome); returns how many
    attempts of this request have crashed (0: the state had moved on)."""
    updated = update_if(_key(request_id), "SET #s = :queued ADD crashes :one REMOVE lease_until",
                        condition="#s = :starting AND next_attempt = :attempt", names={"#s": "state"},
                        values={":queued": QUEUED, ":starting": STARTING, ":attempt": attempt, ":one": 1},
                        returned="UPDATED_NEW")
    return int(updated.get("crashes", 0)) if updated is not None else 0


def requeue(request_id: str, attempt: int, next_attempt_at: float, last_error: str) -> bool:
    """starting -> queued with the next attempt number."""
    return update_if(
        _key(request_id), "SET #s = :queued, next_attempt = :next, next_attempt_at = :at, last_error = :err "
                          "REMOVE lease_until",
        condition="#s = :starting AND next_attempt = :attempt", names={"#s": "state"},
        values={":queued": QUEUED, ":starting": STARTING, ":attempt": attempt, ":next": attempt + 1,
                ":at": int(next_attempt_at), ":err": last_error}) is not None


def move_place(request: QueuedStart, seq: int, entry: Item) -> bool:
    """The queued request takes place `seq` (`entry`: that place's queue entry `Put`) in one transaction, if it is
    still queued at the place it had; False otherwise (it moved on meanwhile)."""
    return transact_if([
        {"Update": {"Key": _key(request.request_id), "UpdateExpression": "SET seq = :new",
                    "ConditionExpression": "#s = :queued AND seq = :old", "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {":new": seq, ":old": request.seq, ":queued": QUEUED}}},
        {"Put": entry},
    ])


def complete(request: QueuedStart, attempt: int, session: SessionRecord, result: JsonObject,
             events: list[Item]) -> bool:
    """starting -> started and the session record with its `events`, in one transaction."""
    session_id = session.session_id
    return transact_if([
        {"Put": {"Item": session.to_item(), "ConditionExpression": "attribute_not_exists(PK)"}},
        {"Update": {
            "Key": _key(request.request_id),
            "UpdateExpression": "SET #s = :started, session_id = :sid, #r = :result, finished_at = :now "
                                "REMOVE GSI2PK, GSI2SK, lease_until",
            "ConditionExpression": "#s = :starting AND next_attempt = :attempt",
            "ExpressionAttributeNames": {"#s": "state", "#r": "result"},
            "ExpressionAttributeValues": {":started": STARTED, ":starting": STARTING, ":sid": session_id,
                                          ":result": json.dumps(result), ":now": now_iso(), ":attempt": attempt},
        }},
        *events,
    ])


def finish_without_session(request: QueuedStart, state: str, code: str, detail: str, from_states: tuple[str, ...],
                           events: list[Item], *, abandoned_before: float | None = None) -> bool:
    """-> failed/cancelled from one of `from_states`, freeing the user's slot and writing `events` in the same
    transaction (chalicelib.start.queued_start.finish chooses them).

    Exactly once by construction: the slot is released only by the write that moves the request out of
    `from_states`. When the request's own condition refused the transaction, the request is read again: if
    it is back in `from_states` (a dispatcher claimed it and requeued it meanwhile), the transaction is tried
    again, never the request alone. Only when the slot counter's condition alone refused it (the counter was
    already at zero: drift) does the request move without a release. `abandoned_before`: only if its owner
    has not asked about it since then (`seen_at`, chalicelib.start.capacity_queue)."""
    values: Item = {":new": state, ":code": code, ":detail": detail[:1000], ":now": now_iso()}
    for i, from_state in enumerate(from_states):
        values[f":from{i}"] = from_state
    condition = "(" + " OR ".join(f"#s = :from{i}" for i in range(len(from_states))) + ")"
    if abandoned_before is not None:
        condition += " AND (attribute_not_exists(seen_at) OR seen_at < :cutoff)"
        values[":cutoff"] = int(abandoned_before)
    update = ("SET #s = :new, error_code = :code, error_detail = :detail, finished_at = :now "
              "REMOVE GSI2PK, GSI2SK, lease_until")
    request_update = {"Key": _key(request.request_id), "UpdateExpression": update,
                      "ConditionExpression": condition, "ExpressionAttributeNames": {"#s": "state"},
                      "ExpressionAttributeValues": values}
    for _ in range(FINISH_ATTEMPTS):
        try:  # (not transact_if: which condition refused it decides what happens next)
            transact([{"Update": request_update}, {"Update": release_slot_update(request.user_id)}, *events,
                      *release_pool_updates(request.user_id, request.agent)])
            return True
        except Exception as exc:
            refused = cancellation_codes(exc)
            if not refused:
                raise
        if refused[1:2] == ["ConditionalCheckFailed"] and refused[0] == "None":
            # The request could move but the counter is already at zero (drift): nothing to give back.
            if transact_if([{"Update": request_update}, *events, *release_pool_updates(request.user_id,
                                                                                      request.agent)]):
                return True
        elif refused[0] not in ("ConditionalCheckFailed", "Unknown"):
            continue  # a conflicting transaction in flight: try again
        current = get(request.request_id)  # the request moved: did it come back?
        if current is None or current.state not in from_states or (
                abandoned_before is not None and (current.seen_at or 0) >= int(abandoned_before)):
            return False
    return False


def seen(request_id: str, until: float) -> None:
    """Its owner asked about the request (a status poll; a long-poll counts until it ends)."""
    update_if(_key(request_id), "SET seen_at = :until",
              condition="attribute_exists(PK) AND #s IN (:queued, :starting) "
                        "AND (attribute_not_exists(seen_at) OR seen_at < :until)",
              names={"#s": "state"}, values={":until": int(until), ":queued": QUEUED, ":starting": STARTING})


def user_pending(user_id: str, since_iso: str, limit: int = 50) -> list[QueuedStart]:
    """The user's queued or starting requests created since `since_iso`, newest first. Bounded: one query
    over the user's recent requests (older ones are past their deadline), at most `limit` evaluated."""
    page = table().query(
        IndexName="GSI1", KeyConditionExpression="GSI1PK = :pk AND GSI1SK >= :since",
        FilterExpression="#s IN (:queued, :starting)", ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":pk": f"USER#{user_id}#REQUESTS", ":since": since_iso, ":queued": QUEUED,
                                   ":starting": STARTING},
        ScanIndexForward=False, Limit=limit)
    return [QueuedStart.from_item(item) for item in page.get("Items", [])]


def pending(limit: int = 500) -> list[QueuedStart]:
    """Queued or starting requests, oldest first (for the sweeper)."""
    return [QueuedStart.from_item(item) for item in query_index_partition(PENDING_INDEX_KEY, limit)]
