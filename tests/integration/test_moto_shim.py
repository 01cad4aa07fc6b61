"""The test harness's DynamoDB (infra/moto_atomic.py): a cancelled transaction leaves every item it named
as it was (moto's whole-table backup is replaced by a backup of those items), a successful one applies
everything, and a retried ClientRequestToken is not applied twice."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


def _key(name: str) -> dict[str, str]:
    return {"PK": f"SHIM#{name}", "SK": "X"}


def _get(table: Any, key: dict[str, str]) -> dict[str, Any] | None:
    item = table.get_item(Key=key, ConsistentRead=True).get("Item")
    return dict(item) if item else None


def test_a_cancelled_transaction_leaves_every_item_as_it_was(table: Any) -> None:
    tag = uuid.uuid4().hex
    new, existing, deleted, guard = (_key(f"{tag}-{n}") for n in ("new", "existing", "deleted", "guard"))
    table.put_item(Item={**existing, "x": 1, "keep": "yes"})
    table.put_item(Item={**deleted, "x": 1})
    name = table.name
    with pytest.raises(ClientError) as caught:
        table.meta.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {**new, "x": 1}}},
            {"Update": {"TableName": name, "Key": existing, "UpdateExpression": "SET x = :two REMOVE keep",
                        "ExpressionAttributeValues": {":two": 2}}},
            {"Delete": {"TableName": name, "Key": deleted}},
            {"ConditionCheck": {"TableName": name, "Key": guard, "ConditionExpression": "attribute_exists(PK)"}},
        ])
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _get(table, new) is None
    assert _get(table, existing) == {**existing, "x": 1, "keep": "yes"}
    assert _get(table, deleted) == {**deleted, "x": 1}


def test_a_transaction_naming_one_item_twice_changes_nothing(table: Any) -> None:
    tag = uuid.uuid4().hex
    first, twice = _key(f"{tag}-first"), _key(f"{tag}-twice")
    with pytest.raises(ClientError):
        table.meta.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table.name, "Item": {**first, "x": 1}}},
            {"Put": {"TableName": table.name, "Item": {**twice, "x": 1}}},
            {"Put": {"TableName": table.name, "Item": {**twice, "x": 2}}},
        ])
    assert _get(table, first) is None and _get(table, twice) is None


def test_a_transaction_applies_everything_once_per_request_token(table: Any) -> None:
    tag = uuid.uuid4().hex
    counter, created = _key(f"{tag}-counter"), _key(f"{tag}-created")
    table.put_item(Item={**counter, "n": 0})
    items = [
        {"Update": {"TableName": table.name, "Key": counter, "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": 1}}},
        {"Put": {"TableName": table.name, "Item": {**created, "x": 1},
                 "ConditionExpression": "attribute_not_exists(PK)"}},
    ]
    token = uuid.uuid4().hex
    table.meta.client.transact_write_items(TransactItems=items, ClientRequestToken=token)
    table.meta.client.transact_write_items(TransactItems=items, ClientRequestToken=token)  # a retry
    assert _get(table, counter) == {**counter, "n": 1}
    assert _get(table, created) == {**created, "x": 1}


def test_a_cancelled_transaction_leaves_no_stream_record(stack: dict[str, Any], table: Any) -> None:
    """moto applies a transaction's writes one by one: the stream records of those it undid must go too, or the
    events outbox would deliver an event for a change that was rolled back."""
    import boto3

    events_table = boto3.resource("dynamodb").Table(stack["outputs"]["EventsTableName"])
    streams = boto3.client("dynamodbstreams")
    arn = stack["outputs"]["EventsStreamArn"]

    def stream_length() -> int:
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        total = 0
        while records := (page := streams.get_records(ShardIterator=iterator, Limit=1000))["Records"]:
            total += len(records)
            iterator = page["NextShardIterator"]
        return total

    tag = uuid.uuid4().hex
    before = stream_length()
    with pytest.raises(ClientError):
        table.meta.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": events_table.name, "Item": {"PK": f"SHIM#{tag}", "SK": "event"}}},
            {"ConditionCheck": {"TableName": table.name, "Key": _key(f"{tag}-guard"),
                                "ConditionExpression": "attribute_exists(PK)"}},
        ])
    assert stream_length() == before
    events_table.put_item(Item={"PK": f"SHIM#{tag}", "SK": "event"})
    assert stream_length() == before + 1


def test_an_update_answers_the_item_as_its_own_write_left_it(table: Any) -> None:
    """`ADD n :one` with ReturnValues=ALL_NEW from many threads at once: each answer holds the value its own write
    made, so every answer is a different number (as in DynamoDB). moto serialises the answer from the live item
    after its write lock is released, so a write landing in between showed up in another's answer: two starts
    were handed the same queue place and the one before it was left empty (a storm run on a loaded machine)."""
    import threading

    key = _key(uuid.uuid4().hex)
    answers: list[int] = []
    lock = threading.Lock()

    def bump() -> None:
        for _ in range(25):
            got = table.update_item(Key=key, UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": 1},
                                    ReturnValues="ALL_NEW")["Attributes"]["n"]
            with lock:
                answers.append(int(got))

    threads = [threading.Thread(target=bump) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == list(range(1, 16 * 25 + 1))  # 400 numbers, each handed out once
