"""#12 rows that are about slots and stored requests: a queue that refuses the message must free the slot
exactly once, and a body that is valid for a direct start is valid queued (counted from DynamoDB and the
emulator)."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3

from chalicelib import session_store, start_requests
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_capacity_queue import drain
from tests.integration.test_start import assert_error
from tests.support import new_user


def test_a_queue_that_refuses_the_message_frees_the_slot_exactly_once(
        app_env: Gateway, emulator: EmulatorServer, configure_stage: Any) -> None:
    user = new_user()
    running = app_env.start(user, {"transport": "daily"})
    assert running.status_code == 200 and session_store.active_slots(user) == 1
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 1})
    configure_stage(RETRY_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue")
    assert_error(app_env.start(user, {"transport": "daily"}), 503, "queue_unavailable")
    assert session_store.active_slots(user) == 1  # the running session's slot, not 0 (released twice before)
    assert len(emulator.org.active_session_ids()) == 1


def test_a_body_valid_direct_is_valid_queued(app_env: Gateway, emulator: EmulatorServer,
                                             queue: dict[str, Any]) -> None:
    user = new_user()
    big = {"blob": "é" * 250_000}  # 500 KB of UTF-8, over DynamoDB's 400 KB item limit
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    queued = app_env.start(user, {"transport": "daily", "body": big})
    assert queued.status_code == 202, queued.body
    request_id = json.loads(queued.body)["requestId"]
    record = start_requests.get(request_id)
    assert record is not None and record["pcc_request_chunks"] == 2 and "pcc_request" not in record
    message = queue["sqs"].receive_message(QueueUrl=queue["url"], WaitTimeSeconds=5, VisibilityTimeout=0)
    assert len(message["Messages"][0]["Body"]) < 1024  # the message carries ids, not the body
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(app_env, queue, until=lambda: start_requests.get(request_id)["state"] == "started")  # type: ignore[index]
    [session] = emulator.org.sessions.values()
    assert session.body == {**big, "user": {"id": user}}
    table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])
    chunks = table.query(KeyConditionExpression="PK = :pk AND begins_with(SK, :b)",
                         ExpressionAttributeValues={":pk": f"REQUEST#{request_id}", ":b": "BODY#"})["Items"]
    assert len(chunks) == 2 and all(int(c["ttl"]) == int(record["ttl"]) for c in chunks)
