"""Lazily created, cached boto3 clients (boto3 costs ~180 ms to import: only paid when used).

Endpoints come from the standard `AWS_ENDPOINT_URL` variable, so the same code talks to AWS or to
a local moto server.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client(service: str) -> Any:
    import boto3  # noqa: PLC0415 - deliberately lazy
    from botocore.config import Config  # noqa: PLC0415

    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget cached clients (tests point them at a new endpoint)."""
    client.cache_clear()


@cache
def dynamodb_table(name: str) -> Any:
    """A DynamoDB Table resource (plain Python values in and out, Decimals for numbers)."""
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().resource("dynamodb", config=config).Table(name)


def reset_all() -> None:
    client.cache_clear()
    dynamodb_table.cache_clear()
