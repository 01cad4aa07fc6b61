"""Test-only shim: moto's DynamoDB writes atomic, as DynamoDB's are.

moto 5.2's server evaluates a ConditionExpression and then applies the write without a lock, so two
threads can both pass `attribute_not_exists(...)` or `state = :queued` for the same item. Real DynamoDB
makes each conditional write (and each transaction) atomic; the gateway's exactly-once guarantees rest on
that, and its tests deliver the same message concurrently on purpose. One re-entrant lock around moto's
write paths restores the real semantics; nothing else changes.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

_LOCK = threading.RLock()
_installed = False


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
    _installed = True
