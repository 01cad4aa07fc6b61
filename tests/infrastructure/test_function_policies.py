"""Per-function least privilege, checked against what each function's code really calls.

Every AWS call is recorded where botocore makes it (so Powertools' own clients count too) while one
function's handler runs, through the same paths a deployed function takes: the API routes through
Chalice's gateway, the worker with real SQS events, the schedule handler. The policies `infra.deploy`
wrote for the stage must grant every recorded call (or the deployed function would fail with
AccessDenied) and nothing the function never calls (beyond what its event source needs).
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

from chalicelib.store import intents
from chalicelib.upkeep import orphans, queue_sweep, reconcile
from infra.deploy import EVENT_SOURCE_ACTIONS, FUNCTION_PERMISSIONS, function_name, policy_file
from infra.pcc_emulator import EmulatorServer
from infra.sqs_poller import StreamPoller, poll_once, scheduled_event
from tests.conftest import Gateway, emulator_admin
from tests.support import new_user, reset_gateway_caches

TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                    "ConditionCheck": "ConditionCheckItem"}


class CallRecorder:
    """(IAM action, resource ARN) of every AWS call, per function being exercised."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs
        self.current = "nobody"
        self.calls: dict[str, set[tuple[str, str]]] = defaultdict(set)

    def switch(self, function: str) -> None:
        """From here on, calls are `function`'s, made from a fresh container (no cached secret or client)."""
        reset_gateway_caches()
        self.current = function

    def record(self, client: Any, operation: str, params: dict[str, Any]) -> None:
        service = client.meta.service_model.signing_name
        for action, resource in self._iam(service, operation, params):
            self.calls[self.current].add((action, resource))

    def _iam(self, service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
        if service == "dynamodb" and ("StreamArn" in params or "ShardIterator" in params):  # DynamoDB Streams
            return [(f"dynamodb:{operation}", self.outputs["EventsStreamArn"])]
        if service == "events":
            return [(f"events:{operation}", f"arn:aws:events:us-east-1:123456789012:event-bus/{e['EventBusName']}")
                    for e in params["Entries"]]
        if service == "dynamodb":
            if operation == "TransactWriteItems":  # IAM has no transaction action: each item's own action
                return [(f"dynamodb:{TRANSACT_ACTIONS[kind]}", self._table(spec["TableName"]))
                        for item in params["TransactItems"] for kind, spec in item.items()]
            if operation == "BatchGetItem":  # one action on each table it reads
                return [(f"dynamodb:{operation}", self._table(name)) for name in params["RequestItems"]]
            resource = self._table(params["TableName"])
            if params.get("IndexName"):
                resource += f"/index/{params['IndexName']}"
            return [(f"dynamodb:{operation}", resource)]
        if service == "sqs":
            name = params["QueueUrl"].rsplit("/", 1)[-1]
            return [(f"sqs:{operation}", f"arn:aws:sqs:us-east-1:123456789012:{name}")]
        if service == "secretsmanager":
            return [(f"secretsmanager:{operation}",
                     f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{params['SecretId']}-AbCdEf")]
        return [(f"{service}:{operation}", "*")]

    def _table(self, name: str) -> str:
        if name == self.outputs["EventsTableName"]:
            return self.outputs["EventsTableArn"]
        assert name == self.outputs["TableName"], name
        return self.outputs["TableArn"]


@pytest.fixture()
def recorder(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[CallRecorder]:
    recorder = CallRecorder(stack["outputs"])
    original = BaseClient._make_api_call

    def recording(client: Any, operation: str, params: dict[str, Any]) -> Any:
        recorder.record(client, operation, params)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    yield recorder


def grants(policy: dict[str, Any]) -> list[tuple[str, str]]:
    return [(action, resource) for statement in policy["Statement"] if statement["Effect"] == "Allow"
            for action in statement["Action"] for resource in statement["Resource"]]


def granted(call: tuple[str, str], policy_grants: list[tuple[str, str]]) -> bool:
    action, resource = call
    return any(action == a and fnmatch.fnmatchcase(resource, r) for a, r in policy_grants)


def handle_one(app: Any, sqs: Any, queue_url: str, timeout: float = 20) -> bool:
    """Wait for one message (they carry backoff delays) and hand it to the worker, as the event source does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll_once(app, sqs, queue_url, wait_seconds=1):
            return True
    return False


def discard_messages(sqs: Any, queue_url: str, wait: int) -> int:
    """Receive and delete without handling: the messages are lost."""
    lost = 0
    deadline = time.monotonic() + wait
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1 if wait else 0
                                       ).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        lost += len(messages)
        if (lost and not messages) or time.monotonic() >= deadline:
            return lost


def exercise_every_function(gateway: Gateway, emulator: EmulatorServer, recorder: CallRecorder,
                            stack: dict[str, Any]) -> None:
    """Each function's AWS-touching paths, each run as that function runs in Lambda."""
    sqs = boto3.client("sqs")
    queue_url = stack["outputs"]["RetryQueueUrl"]
    discard_messages(sqs, queue_url, wait=0)  # other tests' leftovers
    user = new_user()

    recorder.switch("api_handler")
    first = gateway.start(user, {"transport": "daily"}, headers={"Idempotency-Key": "policy-1"})
    assert first.status_code == 200, first.body
    session_id = json.loads(first.body)["sessionId"]
    assert gateway.start(user, {"transport": "daily"}, headers={"Idempotency-Key": "policy-1"}).status_code == 200
    failed = gateway.start(user, {"agent": "ghost-agent"}, headers={"Idempotency-Key": "policy-2"})
    assert failed.status_code == 404  # a failed start forgets its idempotency record (DeleteItem)
    assert gateway.request("GET", "/sessions", user=user).status_code == 200
    assert gateway.request("GET", "/usage", user=user).status_code == 200
    assert gateway.request("GET", f"/sessions/{session_id}", user=user).status_code == 200
    assert gateway.request("GET", f"/sessions/{session_id}/status", user=user).status_code == 200
    assert gateway.request("DELETE", f"/sessions/{session_id}", user=user).status_code == 200
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    queued = [json.loads(gateway.start(user, {"transport": "daily"}).body)["requestId"] for _ in range(2)]
    assert gateway.request("GET", f"/start/{queued[0]}", user=user).status_code == 202
    assert gateway.request("DELETE", f"/start/{queued[1]}", user=user).status_code == 200

    recorder.switch("retry_worker")
    worker = gateway.app
    assert handle_one(worker, sqs, queue_url)  # a dispatcher run: still at capacity; it hands over when done
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    recorder.switch("nobody")
    assert discard_messages(sqs, queue_url, wait=3)  # the hand-over message is lost
    recorder.switch("reconcile_sessions")  # the sweeper restarts the queue
    assert queue_sweep.sweep()["woken"] >= 1
    recorder.switch("retry_worker")
    assert handle_one(worker, sqs, queue_url)  # capacity is back: started
    recorder.switch("api_handler")
    second = gateway.start(user, {"transport": "daily"})
    assert second.status_code == 200, second.body
    ended_id = json.loads(second.body)["sessionId"]
    emulator_admin(emulator, f"sessions/{ended_id}/end", {"status": "ended"})
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    assert gateway.start(new_user(), {"transport": "daily"}).status_code == 202  # waits: the end wakes its queue
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})

    recorder.switch("detect_ended")
    summary = gateway.app.handler_map["detect_ended"](scheduled_event("detect_ended"), None)
    assert summary["ended"] >= 1, summary
    recorder.switch("retry_worker")
    assert handle_one(worker, sqs, queue_url)  # the wake-up the end sent: the waiting start is served
    recorder.switch("reconcile_sessions")
    summary = gateway.app.handler_map["reconcile_sessions"](scheduled_event("reconcile_sessions"), None)
    # the paths a schedule takes later on: a queued start past its deadline, slot counters to heal, an
    # orphan, and a start whose outcome is unknown (its slot recovered)
    recorder.switch("api_handler")
    emulator_admin(emulator, "faults", {"start": [{"when": "after", "kind": "502"}]})
    assert gateway.start(new_user(), {"transport": "daily"}).status_code == 502
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    assert gateway.start(new_user(), {"transport": "daily"}).status_code == 202
    recorder.switch("reconcile_sessions")
    later = time.time() + 3 * 3600
    assert queue_sweep.sweep(now=later)["expired"] >= 1
    reconcile.run(now=later)
    assert orphans.sweep(now=later)["orphans_stopped"] >= 1
    assert intents.recover(300, now=later) >= 1

    # the events' delivery: the stream's batches (as Lambda's event source reads them for it), EventBridge, the
    # webhook's signing secret, and the DLQ (the webhook cannot sign without its secret: parked)
    recorder.switch("nobody")
    poller = StreamPoller(gateway.app, stack["outputs"]["EventsStreamArn"])
    poller.skip_to_latest()
    assert gateway.start(new_user(), {"transport": "daily"}).status_code == 202  # start.queued
    recorder.switch("deliver_events")
    assert poller.poll_once() >= 1
    recorder.switch("nobody")
    parked = sqs.receive_message(QueueUrl=stack["outputs"]["EventsDeadLetterQueueUrl"]).get("Messages", [])
    assert parked and json.loads(parked[0]["Body"])["sink"] == "webhook"


def test_each_function_is_granted_exactly_what_its_code_calls(
        gateway: Gateway, emulator: EmulatorServer, recorder: CallRecorder, stack: dict[str, Any],
        configure_stage: Any) -> None:
    configure_stage(RETRY_BASE_SECONDS="0.5", RETRY_CAP_SECONDS="1", DISPATCH_RUN_SECONDS="1",
                    USER_SECONDS_PER_DAY="86400",  # budgets on: their reads and writes are exercised too
                    EVENTS_WEBHOOK_URL="http://127.0.0.1:9/unsigned", EVENTS_DELIVERY_ATTEMPTS="1")
    exercise_every_function(gateway, emulator, recorder, stack)
    chalice_dir = stack["project"] / ".chalice"
    config = json.loads((chalice_dir / "config.json").read_text())
    functions = config["stages"]["test"]["lambda_functions"]
    assert set(functions) == set(FUNCTION_PERMISSIONS) == {"api_handler", *(s.name for s in gateway.app.event_sources)}
    for function in FUNCTION_PERMISSIONS:
        assert functions[function]["iam_policy_file"] == policy_file("test", function)
        policy = json.loads((chalice_dir / functions[function]["iam_policy_file"]).read_text())
        policy_grants = grants(policy)
        used = recorder.calls[function]
        assert used, function
        not_granted = sorted(c for c in used if not granted(c, policy_grants))
        assert not not_granted, f"{function} calls what its policy does not grant: {not_granted}"
        # Every grant (but logs, written by the Lambda runtime) is used by a recorded call, or by the
        # function's event source.
        needed = used | {(a, r) for a, r in policy_grants if a in EVENT_SOURCE_ACTIONS.get(function, set())}
        unused = sorted({(a, r) for a, r in policy_grants if not a.startswith("logs:")
                         and not any(a == ua and fnmatch.fnmatchcase(ur, r) for ua, ur in needed)})
        assert not unused, f"{function} is granted what it never calls: {unused}"
        log_group = f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/" \
                    f"{function_name('pipecat-gateway', 'test', function)}"
        assert {r for a, r in policy_grants if a.startswith("logs:")} == {log_group, f"{log_group}:*"}
    # the event source's polling rights are the worker's alone: the internet-facing API cannot read the queue
    for function in ("api_handler", "reconcile_sessions"):
        policy = json.loads((chalice_dir / policy_file("test", function)).read_text())
        assert not {a for a, _ in grants(policy)} & EVENT_SOURCE_ACTIONS["retry_worker"]
