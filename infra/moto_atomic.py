"""moto's DynamoDB with atomic writes, as DynamoDB's are: the local AWS of `make dev`, the tests and the benchmarks.

`python -m infra.moto_atomic -H 127.0.0.1 -p 5000` runs moto's server with it (`-p 0`: a free port, announced in
`PORT_FILE`).

moto 5.2's server evaluates a ConditionExpression and then applies the write without a lock, so two
threads can both pass `attribute_not_exists(...)` or `state = :queued` for the same item. Real DynamoDB
makes each conditional write (and each transaction) atomic; the gateway's exactly-once guarantees rest on
that, and its tests deliver the same message concurrently on purpose (and a local load test sends many starts at
once: with plain moto most of them fail on moto's own races). One re-entrant lock around moto's
write paths restores the real semantics. And like DynamoDB, a TransactWriteItems repeated with the same
`ClientRequestToken` (botocore fills one in and keeps it when it retries after a timeout) succeeds
without being applied twice; moto would re-apply it and fail its own conditions.

moto applies a transaction's writes one by one and puts the items back when a later condition fails, but the
stream records of the writes it undid stay in the table's stream: a consumer would see a change that never
happened. Here they are taken out again with the items, as DynamoDB never emits them.

And an update's answer (ReturnValues) is the item as that update left it: moto serialises it from the live item
after the write, outside any lock, so a concurrent write could show in it (two `ADD tail` both answering the later
number: the queue handed one place to two starts).

One change for speed, not semantics: moto backs up every table a transaction touches with a deep copy of
the whole table (all items), so a transaction costs time in proportion to the table, and the test table
grows through the run. Here only the items the transaction names are saved, and put back if it fails;
the table copy is skipped. Items no transaction names cannot change inside one, so what is restored is
the same.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
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
        def atomic(self: Any, *args: Any, __original: Any = original, __name: str = name, **kwargs: Any) -> Any:
            with _LOCK:
                result = __original(self, *args, **kwargs)
                # moto answers an update from the live item, serialised after this lock is let go: a write landing
                # in between would show in this answer (two `ADD tail` answering the same number). A copy taken
                # here is the item as this write left it, as DynamoDB answers.
                return copy.deepcopy(result) if __name == "update_item" else result

        setattr(DynamoDBBackend, name, atomic)
    backed_up = DynamoDBBackend.transact_write_items  # (already made atomic above)

    @functools.wraps(backed_up)
    def item_backups(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        with _LOCK:
            saved = _save_items(self, transact_items)
            streams = {id(t.stream_shard): (t.stream_shard, len(t.stream_shard.items))
                       for t, *_ in saved if t.stream_shard is not None}
            Table.__deepcopy__ = _same_table  # type: ignore[attr-defined]
            try:
                return backed_up(self, transact_items)
            except Exception:
                for table, hash_key, range_key, item in reversed(saved):
                    _put_back(table, hash_key, range_key, item)
                for shard, length in streams.values():  # a rolled-back write leaves no stream record either
                    del shard.items[length:]
                raise
            finally:
                del Table.__deepcopy__  # type: ignore[attr-defined]

    DynamoDBBackend.transact_write_items = item_backups  # type: ignore[method-assign]
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


def _same_table(self: Table, memo: dict[int, Any]) -> Table:
    return self


def _save_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Table, Any, Any, Any]]:
    """(table, hash key, range key, a copy of the item or None) for every item the transaction names."""
    saved = []
    for entry in transact_items:
        for op_type, op in entry.items():
            table = backend.tables.get(op.get("TableName"))
            key = op.get("Item") if op_type == "Put" else op.get("Key")
            if table is None or not isinstance(key, dict) or table.hash_key_attr not in key:
                continue  # moto refuses this operation before it writes anything
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr in key else None
            if table.range_key_attr is not None and range_key is None:
                continue
            saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
    return saved


def _put_back(table: Table, hash_key: Any, range_key: Any, item: Any) -> None:
    if range_key is None:
        if item is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = item
    elif item is None:
        table.items[hash_key].pop(range_key, None)
    else:
        table.items[hash_key][range_key] = item


def main(argv: list[str] | None = None) -> None:
    """moto's server (moto_server's `-H`/`-p`), with the writes made atomic first. `-p 0` takes a free port; the
    port is announced in PORT_FILE (infra/port_file.py) once the server listens."""
    import argparse
    import os

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    from infra.port_file import serve

    parser = argparse.ArgumentParser(description="moto server with DynamoDB's atomic writes")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", "5000")))
    args = parser.parse_args(argv)
    install()
    server = make_server(args.host, args.port, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(server.port)  # what moto puts in the URLs it hands out
    serve(server, server.port)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
