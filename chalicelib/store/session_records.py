"""DynamoDB data access for session records (a user's slots: chalicelib.store.slots; the sparse index:
chalicelib.store.index).

Single-table design (table from infra/template.yaml):

- session record: PK `SESSION#{sessionId}`, SK `META`;
  GSI1PK `USER#{userId}#SESSIONS`, GSI1SK `{createdAt}#{sessionId}` (a user's listing);
  GSI2PK `ACTIVE`, GSI2SK `{createdAt}` only while active (sparse index for reconciliation).

- a user's sessions newest first: Query GSI1 with ScanIndexForward=False;
- owner check / lookups from webhooks: GetItem on SESSION#{id};
- reconciliation: Query GSI2 `ACTIVE` (only active records carry GSI2PK).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

from chalicelib.platform.dynamo import (
    cancellation_codes,
    now_iso,
    plain,
    table,
    transact,
    update_if,
)
from chalicelib.platform.errors import DomainError
from chalicelib.platform.shapes import Item
from chalicelib.store.index import index_page, query_index_partition
from chalicelib.store.slots import release_pool_updates, release_slot_update


class SessionStatus(StrEnum):
    """A session record's status (stored as its value): active -> ended (Pipecat Cloud ended it) | stopped (we did)."""

    ACTIVE = "active"
    ENDED = "ended"
    STOPPED = "stopped"


ACTIVE, ENDED, STOPPED = SessionStatus.ACTIVE, SessionStatus.ENDED, SessionStatus.STOPPED


@dataclass(frozen=True)
class SessionRecord:
    """A session as we record it (`SESSION#{id}` / `META`)."""

    session_id: str
    user_id: str
    agent: str
    transport: str
    status: SessionStatus
    created_at: str
    ttl: int
    ended_at: str | None = None
    end_reason: str | None = None
    request_id: str | None = None  # served from the capacity queue
    call_id: str | None = None  # telephony
    provider: str | None = None

    @classmethod
    def new(cls, *, user_id: str, session_id: str, agent: str, transport: str, ttl_seconds: int,
            request_id: str | None = None, call_id: str | None = None, provider: str | None = None) -> SessionRecord:
        """A new active session record, kept `ttl_seconds` after its creation."""
        return cls(session_id=session_id, user_id=user_id, agent=agent, transport=transport, status=ACTIVE,
                   created_at=now_iso(), ttl=int(time.time()) + ttl_seconds, request_id=request_id, call_id=call_id,
                   provider=provider)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> SessionRecord:
        values = plain(item)
        optional = {f.name: values.get(f.name) for f in fields(cls) if f.default is None}
        return cls(session_id=str(values["session_id"]), user_id=str(values["user_id"]), agent=str(values["agent"]),
                   transport=str(values["transport"]), status=SessionStatus(values["status"]),
                   created_at=str(values["created_at"]), ttl=int(values.get("ttl", 0)), **optional)

    def to_item(self) -> Item:
        """The DynamoDB item: the user's listing (GSI1) always, the sparse `ACTIVE` index (GSI2) while active."""
        item: Item = {"PK": f"SESSION#{self.session_id}", "SK": "META", "GSI1PK": f"USER#{self.user_id}#SESSIONS",
                      "GSI1SK": f"{self.created_at}#{self.session_id}", "type": "session",
                      **{k: v for k, v in asdict(self).items() if v is not None}}
        item["status"] = str(self.status)
        if self.status == ACTIVE:
            item.update(GSI2PK="ACTIVE", GSI2SK=self.created_at)
        return item



# ---------------------------------------------------------------- records


def confirm(session_id: str, at: str) -> bool:
    """Note when Pipecat Cloud confirmed the session (its `session.started`), once; False when there is no record
    or it was already noted."""
    return update_if({"PK": f"SESSION#{session_id}", "SK": "META"}, "SET pcc_confirmed_at = :at",
                     condition="attribute_exists(PK) AND attribute_not_exists(pcc_confirmed_at)",
                     values={":at": at}) is not None


def get_session(session_id: str) -> SessionRecord | None:
    item = table().get_item(Key={"PK": f"SESSION#{session_id}", "SK": "META"}).get("Item")
    return SessionRecord.from_item(item) if item else None


def mark_ended(record: SessionRecord, status: str, reason: str, recorded: list[Item]) -> bool:
    """active -> ended/stopped, the user's slot freed and `recorded` written (the transition's event and the
    session's seconds added to its user's usage), in one transaction.

    Returns False when the record was not active (already ended: nothing changes, nothing recorded).
    """
    key = {"PK": f"SESSION#{record.session_id}", "SK": "META"}
    update = "SET #s = :new, ended_at = :now, end_reason = :reason REMOVE GSI2PK, GSI2SK"
    names = {"#s": "status"}
    values = {":new": status, ":now": now_iso(), ":reason": reason, ":active": ACTIVE}
    change = {"Update": {"Key": key, "UpdateExpression": update, "ConditionExpression": "#s = :active",
                         "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}
    pool = release_pool_updates(record.user_id, record.agent)
    try:  # (not transact_if: which condition refused it decides what happens next)
        transact([change, {"Update": release_slot_update(record.user_id)}, *recorded, *pool])
        return True
    except Exception as exc:
        reasons = cancellation_codes(exc)
        if not reasons:
            raise
        if reasons[0] == "ConditionalCheckFailed":
            return False  # already ended
    # The counter was already at zero (drift): end the record alone (with what it records).
    try:
        transact([change, *recorded, *pool])
    except Exception as exc:
        if cancellation_codes(exc)[:1] == ["ConditionalCheckFailed"]:
            return False
        raise
    return True


MAX_CURSOR_KEY_BYTES = 1024  # DynamoDB's limit for a sort key value (a partition key may hold 2048)
def encode_cursor(key: Item | None) -> str | None:
    """The opaque `nextCursor` of a listing: the key to continue from."""
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode().rstrip("=")


class InvalidCursor(DomainError):
    """A listing's `cursor` that is not one this user's listing handed out."""

    kind = "invalid_cursor"


def decode_cursor(user_id: str, cursor: str) -> Item:
    """A client's `cursor` back into a key of its own listing; InvalidCursor for anything else."""
    return _decoded(cursor, "GSI1", f"USER#{user_id}#SESSIONS")


def decode_active_cursor(cursor: str) -> Item:
    """An operator's `cursor` back into a key of the active sessions' listing (active_page)."""
    return _decoded(cursor, "GSI2", "ACTIVE")


def _decoded(cursor: str, index: str, partition: str) -> Item:
    if len(cursor) > 8 * MAX_CURSOR_KEY_BYTES:
        raise InvalidCursor("cursor is not valid")
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("cursor is not valid") from None
    expected = {"PK", "SK", f"{index}PK", f"{index}SK"}
    if not isinstance(key, dict) or set(key) != expected or key.get(f"{index}PK") != partition \
            or key.get("SK") != "META" or not str(key.get("PK", "")).startswith("SESSION#") \
            or not all(isinstance(v, str) and 0 < len(v.encode("utf-8", "surrogatepass")) <= MAX_CURSOR_KEY_BYTES
                       for v in key.values()):
        raise InvalidCursor("cursor is not valid")
    return key


def active_page(limit: int, start_key: Item | None = None) -> tuple[list[SessionRecord], Item | None]:
    """Up to `limit` active records across all users, oldest first (the sparse `ACTIVE` index: one query and one
    BatchGetItem), and the key to continue from."""
    items, next_key = index_page("ACTIVE", limit, start_key)
    return [SessionRecord.from_item(i) for i in items], next_key


LIST_PAGES_PER_CALL = 3  # DynamoDB queries one GET /sessions makes at the most
FILTERED_PAGE_ITEMS = 100  # records one filtered page evaluates (DynamoDB's Limit counts before the filter)


def list_user_sessions(
    user_id: str, *, limit: int, status: str | None = None, start_key: Item | None = None
) -> tuple[list[SessionRecord], Item | None]:
    """A page of the user's sessions, newest first, and the key to continue from (None: no more).

    The cost of a call does not grow with the user's history: at most LIST_PAGES_PER_CALL queries, each
    evaluating at most FILTERED_PAGE_ITEMS records when a status filter is given (`limit` otherwise). A
    filtered call may so return fewer than `limit` sessions (even none) with a key to go on from."""
    kwargs: Item = {
        "IndexName": "GSI1",
        "KeyConditionExpression": "GSI1PK = :pk",
        "ExpressionAttributeValues": {":pk": f"USER#{user_id}#SESSIONS"},
        "ScanIndexForward": False,
        "Limit": max(limit, FILTERED_PAGE_ITEMS) if status else limit,
    }
    if status:
        kwargs["FilterExpression"] = "#s = :status"
        kwargs["ExpressionAttributeNames"] = {"#s": "status"}
        kwargs["ExpressionAttributeValues"][":status"] = status
    items: list[Item] = []
    for _ in range(LIST_PAGES_PER_CALL):
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        page = table().query(**kwargs)
        found = page.get("Items", [])
        start_key = page.get("LastEvaluatedKey")
        if len(items) + len(found) >= limit:
            taken = found[:limit - len(items)]
            items.extend(taken)
            if len(taken) < len(found) or start_key:  # more may follow the last one returned
                start_key = {k: taken[-1][k] for k in ("PK", "SK", "GSI1PK", "GSI1SK")}
            break
        items.extend(found)
        if not start_key:
            break
        if not status:
            kwargs["Limit"] = limit - len(items)
    return [SessionRecord.from_item(i) for i in items], start_key


def active_sessions(limit: int = 500) -> list[SessionRecord]:
    """Active records, oldest first (for reconciliation)."""
    return [SessionRecord.from_item(i) for i in query_index_partition("ACTIVE", limit)]
