"""Lazily created, cached boto3 clients (boto3 costs ~180 ms to import: only paid when used).

Endpoints come from the standard `AWS_ENDPOINT_URL` variable, so the same code talks to AWS or to
a local moto server.
"""

from __future__ import annotations

import threading
from functools import cache
from types import SimpleNamespace
from typing import Any

from chalicelib.platform.settings import get_settings

_session_lock = threading.Lock()


def wake_queue_url() -> str:
    """The SQS queue that wakes the dispatcher (RETRY_QUEUE_URL; "" when the capacity queue is off)."""
    return get_settings().queue.retry_queue_url


@cache
def _session() -> Any:
    import boto3  # noqa: PLC0415 - deliberately lazy

    return boto3.session.Session()


def _config() -> Any:
    from botocore.config import Config  # noqa: PLC0415

    # 50 pooled connections: botocore's default 10 is less than the requests `chalice local` serves at once
    # (and than the dispatcher's threads); a full pool discards connections and warns
    return Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"},
                  max_pool_connections=50)


@cache
def client(service: str) -> Any:
    """One client per service from one boto3 session (its loaded models shared), created under a lock: boto3
    sessions are not safe to create clients from concurrently (the dispatcher's attempts are threads)."""
    with _session_lock:
        return _session().client(service, config=_config())


class PlainTable:
    """A DynamoDB table with plain Python values in and out (Decimals for numbers), as boto3's Table resource
    gives, on a plain client with the resource's own value transformations registered: creating the resource
    loads its model, ~80 ms of every cold start, for five methods."""

    def __init__(self, name: str, dynamodb: Any) -> None:
        self.name = name
        self.meta = SimpleNamespace(client=dynamodb)

    def get_item(self, **kwargs: Any) -> Any:
        return self.meta.client.get_item(TableName=self.name, **kwargs)

    def put_item(self, **kwargs: Any) -> Any:
        return self.meta.client.put_item(TableName=self.name, **kwargs)

    def update_item(self, **kwargs: Any) -> Any:
        return self.meta.client.update_item(TableName=self.name, **kwargs)

    def delete_item(self, **kwargs: Any) -> Any:
        return self.meta.client.delete_item(TableName=self.name, **kwargs)

    def query(self, **kwargs: Any) -> Any:
        return self.meta.client.query(TableName=self.name, **kwargs)


@cache
def _plain_dynamodb() -> Any:
    """A DynamoDB client that takes and answers plain Python values (boto3.dynamodb.transform's handlers, the
    ones its Table resource registers on its own client)."""
    from boto3.dynamodb.transform import TransformationInjector, copy_dynamodb_params  # noqa: PLC0415

    with _session_lock:
        dynamodb = _session().client("dynamodb", config=_config())
    injector, events = TransformationInjector(), dynamodb.meta.events
    events.register("provide-client-params.dynamodb", copy_dynamodb_params, unique_id="dynamodb-create-params-copy")
    events.register("before-parameter-build.dynamodb", injector.inject_condition_expressions,
                    unique_id="dynamodb-condition-expression")
    events.register("before-parameter-build.dynamodb", injector.inject_attribute_value_input,
                    unique_id="dynamodb-attr-value-input")
    events.register("after-call.dynamodb", injector.inject_attribute_value_output,
                    unique_id="dynamodb-attr-value-output")
    return dynamodb


@cache
def dynamodb_table(name: str) -> PlainTable:
    return PlainTable(name, _plain_dynamodb())


def reset_all() -> None:
    client.cache_clear()
    dynamodb_table.cache_clear()
    _plain_dynamodb.cache_clear()
    _session.cache_clear()
