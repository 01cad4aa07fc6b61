"""Blocked users (PK `BLOCK#{userId}`, SK `META`: `by`, `reason`, `blocked_at`): an operator's decision that the
user may use nothing (docs/operations.md)."""

from __future__ import annotations

from chalicelib.platform.dynamo import delete_if, now_iso, put_if, table


def _key(user_id: str) -> dict[str, str]:
    return {"PK": f"BLOCK#{user_id}", "SK": "META"}


def is_blocked(user_id: str) -> bool:
    return "Item" in table().get_item(Key=_key(user_id), ConsistentRead=True)


def block(user_id: str, by: str, reason: str) -> bool:
    """False when the user already was blocked."""
    return put_if({**_key(user_id), "by": by, "reason": reason[:500], "blocked_at": now_iso()},
                  "attribute_not_exists(PK)")


def unblock(user_id: str) -> bool:
    """False when the user was not blocked."""
    return delete_if(_key(user_id), "attribute_exists(PK)")
