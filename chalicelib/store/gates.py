"""Start gates (PK `GATE#{scope}`, SK `META`): `org` for the whole organisation, `agent#{name}` per agent. A gate
holds the reasons it is closed for (a string set `reasons`, each with its `message_{reason}`) and is closed while it
holds one. A change is conditional (adding a reason the gate holds, or removing one it does not, changes nothing)
and writes its events in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.platform.dynamo import batch_get, now_iso, plain, transact_if
from chalicelib.platform.shapes import Item

ORG_SCOPE = "org"


def agent_scope(agent: str) -> str:
    return f"agent#{agent}"


def _key(scope: str) -> Item:
    return {"PK": f"GATE#{scope}", "SK": "META"}


@dataclass(frozen=True)
class Gate:
    scope: str
    messages: dict[str, str]  # reason -> its message: the reasons the gate is closed for

    @property
    def reasons(self) -> frozenset[str]:
        return frozenset(self.messages)

    @property
    def closed(self) -> bool:
        return bool(self.messages)


def read(scopes: list[str]) -> list[Gate]:
    """The gates of `scopes` (at most 100), in that order, one consistent BatchGetItem; a gate never closed is open."""
    found = {str(item["PK"]).removeprefix("GATE#"): plain(item) for item in batch_get([_key(s) for s in scopes])}
    gates = []
    for scope in scopes:
        item = found.get(scope, {})
        gates.append(Gate(scope, {str(r): str(item.get(f"message_{r}", "")) for r in item.get("reasons", ())}))
    return gates


def close(scope: str, reason: str, message: str, events: list[Item]) -> bool:
    """Add `reason` (with its message and `events`); False when the gate already held it (nothing written)."""
    return transact_if([{"Update": {
        "Key": _key(scope), "UpdateExpression": "ADD reasons :r SET #m = :m, changed_at = :now",
        "ConditionExpression": "attribute_not_exists(reasons) OR NOT contains(reasons, :reason)",
        "ExpressionAttributeNames": {"#m": f"message_{reason}"},
        "ExpressionAttributeValues": {":r": {reason}, ":reason": reason, ":m": message[:500], ":now": now_iso()},
    }}, *events])


def reopen(scope: str, reason: str, events: list[Item]) -> bool:
    """Remove `reason` (with `events`); False when the gate did not hold it (nothing written)."""
    return transact_if([{"Update": {
        "Key": _key(scope), "UpdateExpression": "DELETE reasons :r REMOVE #m SET changed_at = :now",
        "ConditionExpression": "contains(reasons, :reason)",
        "ExpressionAttributeNames": {"#m": f"message_{reason}"},
        "ExpressionAttributeValues": {":r": {reason}, ":reason": reason, ":now": now_iso()},
    }}, *events])
