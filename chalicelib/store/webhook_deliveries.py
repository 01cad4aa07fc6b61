"""Pipecat Cloud webhook deliveries already handled (PK `PCCWEBHOOK#{webhook-id}`, SK `META`, kept until `ttl`):
its deliveries come at least once, so one handled again is acknowledged and nothing more."""

from __future__ import annotations

from chalicelib.platform.dynamo import put_if, table


def handled(webhook_id: str) -> bool:
    return "Item" in table().get_item(Key={"PK": f"PCCWEBHOOK#{webhook_id}", "SK": "META"}, ConsistentRead=True)


def mark_handled(webhook_id: str, event_type: str, until: int) -> bool:
    """False when another delivery of it was marked first."""
    return put_if({"PK": f"PCCWEBHOOK#{webhook_id}", "SK": "META", "event_type": event_type, "ttl": until},
                  "attribute_not_exists(PK)")
