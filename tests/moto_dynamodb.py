"""Test-only shim: moto's DynamoDB writes atomic, as DynamoDB's are.

moto 5.2's server evaluates a ConditionExpression and then applies the write without a lock, so two
threads can both pass `attribute_not_exists(...)` or `state = :queued` for the same item. Real DynamoDB
makes each conditional write (and each transaction) atomic; the gateway's exactly-once guarantees rest on
that, and its tests deliver the same message concurrently on purpose. One re-entrant lock around moto's
write paths restores the real semantics. And like DynamoDB, a TransactWriteItems repeated with the same
`ClientRequestToken` (botocore fills one in and keeps it when it retries after a timeout) succeeds
without being applied twice; moto would re-apply it and fail its own conditions. Nothing else changes.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler

_LOCK = threading.RLock()
_installed = False
_TRANSACTIONS: dict[str, Any] = {}  # ClientRequestToken -> the answer it got (DynamoDB keeps them 10 min)


def install() -> None:
    global _installed
    if _installed:
        return
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        @functools.wraps(original)
        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _LOCK:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, atomic)
    original_transact = DynamoHandler.transact_write_items

    @functools.wraps(original_transact)
    def idempotent(self: Any) -> Any:
        token = self.body.get("ClientRequestToken")
        with _LOCK:
            if token and token in _TRANSACTIONS:
                return _TRANSACTIONS[token]
            answer = original_transact(self)
            if token:
                _TRANSACTIONS[token] = answer
            return answer

    DynamoHandler.transact_write_items = idempotent  # type: ignore[method-assign]
    _installed = True
