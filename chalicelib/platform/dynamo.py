"""DynamoDB, said once: the table, conditional writes that answer whether their condition held, and items
as plain Python. Every module that writes the table writes through these (key shapes live in chalicelib.store).

- `update_if(key, update, condition=..., values=..., names=..., returned=...)`: a conditional UpdateItem; the
  attributes it returned (`returned`: `NONE`, `UPDATED_NEW`, `ALL_NEW`, ...; `{}` for `NONE`), or None when its
  condition did not hold.
- `put_if(item, condition, ...)` / `delete_if(key, condition, ...)`: True when written.
- `batch_get(keys)`: BatchGetItem of up to BATCH_GET keys, consistently read, unprocessed keys asked for again.
- `now_iso()`, `iso_at(ts)`, `iso_epoch(value)`: the record timestamps' format, and back to an epoch.
- `transact(items)` / `transact_if(items)`: a TransactWriteItems; `transact` raises as DynamoDB does
  (`cancellation_codes` says which condition refused it), `transact_if` answers False then. Each is applied once
  even when its answer is lost after DynamoDB committed: botocore fills the operation's ClientRequestToken
  (an idempotency token) itself and its retries reuse it (tests/integration/test_lost_answers.py).
Any other error (throttling, a malformed request) raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from chalicelib.platform.aws import dynamodb_table
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import Item as Item  # re-exported: the store names it from here too


def table() -> Any:
    return dynamodb_table(get_settings().table_name)


def events_table_name() -> str:
    """The lifecycle events' outbox table (EVENTS_TABLE_NAME; "" when events are off)."""
    return get_settings().events.table_name


def conditional_failed(exc: Exception) -> bool:
    """A write refused by its condition (or a transaction cancelled by one of its conditions)."""
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


def cancellation_codes(exc: Exception) -> list[str]:
    """Per item, why a transaction was cancelled (`ConditionalCheckFailed`, `None`, ...); [] when `exc` is no
    cancelled transaction."""
    response = getattr(exc, "response", None) or {}
    if response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return []
    return [str(r.get("Code")) for r in response.get("CancellationReasons", [])] or ["Unknown"]


def refused_writes(exc: Exception, names: list[str]) -> frozenset[str]:
    """Which of a transaction's writes (named in order by `names`) refused it by their condition."""
    return frozenset(name for name, code in zip(names, cancellation_codes(exc), strict=False)
                     if code == "ConditionalCheckFailed")


def _expression(condition: str | None, values: Item | None, names: dict[str, str] | None) -> Item:
    out: Item = {}
    if condition:
        out["ConditionExpression"] = condition
    if values:
        out["ExpressionAttributeValues"] = values
    if names:
        out["ExpressionAttributeNames"] = names
    return out


def update_if(key: Item, update: str, *, condition: str | None = None, values: Item | None = None,
              names: dict[str, str] | None = None, returned: str = "NONE") -> Item | None:
    try:
        response = table().update_item(Key=key, UpdateExpression=update, ReturnValues=returned,
                                       **_expression(condition, values, names))
    except Exception as exc:
        if conditional_failed(exc):
            return None
        raise
    return dict(response.get("Attributes") or {})


def _written(write: Callable[[], object]) -> bool:
    """Run a conditional write: True when written, False when its condition did not hold; anything else raises."""
    try:
        write()
    except Exception as exc:
        if conditional_failed(exc):
            return False
        raise
    return True


def put_if(item: Item, condition: str, *, values: Item | None = None, names: dict[str, str] | None = None) -> bool:
    return _written(lambda: table().put_item(Item=item, **_expression(condition, values, names)))


def delete_if(key: Item, condition: str, *, values: Item | None = None, names: dict[str, str] | None = None) -> bool:
    return _written(lambda: table().delete_item(Key=key, **_expression(condition, values, names)))


BATCH_GET = 100  # DynamoDB's BatchGetItem limit


def batch_get(keys: list[Item]) -> list[Item]:
    """The items of `keys` (at most BATCH_GET), consistently read (DynamoDB's values: numbers are Decimals); keys
    DynamoDB leaves unprocessed (throttling) are asked for again, with a short pause, 5 times at most. Any still
    unread are missing from the answer: callers treat a missing item as one to read on their next run (the
    schedule's steps), or as none (a usage counter: a budget check errs on the side of the user)."""
    ddb = table()
    request: Item = {ddb.name: {"Keys": keys, "ConsistentRead": True}}
    items: list[Item] = []
    for attempt in range(5):
        answer = ddb.meta.client.batch_get_item(RequestItems=request)
        items.extend(answer.get("Responses", {}).get(ddb.name, []))
        request = answer.get("UnprocessedKeys") or {}
        if not request:
            break
        time.sleep(0.05 * 2 ** attempt)
    return items


def transact(items: list[Item]) -> None:
    """TransactWriteItems of `items` (each `{"Put"|"Update"|"Delete"|"ConditionCheck": {...}}`; the table name
    is filled in)."""
    name = table().name
    named = [{kind: {"TableName": name, **spec} for kind, spec in item.items()} for item in items]
    table().meta.client.transact_write_items(TransactItems=named)


def transact_if(items: list[Item]) -> bool:
    return _written(lambda: transact(items))


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_at(ts: float) -> str:
    """An epoch as ISO 8601 UTC to the second (the times our answers carry)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_epoch(value: Any) -> float | None:
    """An ISO 8601 time (ours, or Pipecat Cloud's `createdAt` / `endedAt`) as an epoch; a time without a zone is
    UTC; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def plain(value: Any) -> Any:
    """DynamoDB values as plain Python (Decimal -> int/float), recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
