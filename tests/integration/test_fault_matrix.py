"""Issue #12's fault matrix: every row, with counts read from the emulator (the bots that run) and from
DynamoDB (slots, requests), never from the gateway's answers.

Faults are injected where they hurt: after Pipecat Cloud created the bot (the answer lost as a 502, a
reset or a hang), inside the call (a Lambda killed: `LambdaKilled` is a BaseException, so no cleanup of
ours runs, as when Lambda stops a process), and in a dependency refusing a write (SQS). Time passing is
the one thing simulated: recovery runs with `now` past the lease and the orphan grace.

After one schedule run (orphan sweep, then intent recovery) every row must end with: no orphan alive,
no request served by two bots, every slot counter equal to the user's live bots + pending starts, and no
5xx for a valid body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.pcc import client as pcc_client
from chalicelib.platform import dynamo
from chalicelib.start import attempt as attempts
from chalicelib.start import dispatcher
from chalicelib.store import intents, queued_starts, session_records, slots
from chalicelib.upkeep import orphans, queue_sweep
from infra.pcc_emulator import EmulatorServer
from infra.sqs_poller import sqs_event
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_capacity_queue import drain
from tests.integration.test_start import assert_error
from tests.support import new_user

GRACE = 300


class LambdaKilled(BaseException):
    """The process stops: no except/finally of the gateway's runs for it."""


def one_sweep() -> None:
    """What the reconcile schedule does, once, with the clock past every lease and the grace."""
    later = time.time() + 3600
    queue_sweep.sweep(now=later)
    orphans.sweep(now=later)
    intents.recover(GRACE, now=later)


def live_bots(emulator: EmulatorServer, user: str) -> set[str]:
    active = emulator.org.active_session_ids()
    return {sid for sid, s in emulator.org.sessions.items()
            if sid in active and (s.body or {}).get("user", {}).get("id") == user}


def requests_of(user: str) -> list[dict[str, Any]]:
    items = dynamo.table().query(IndexName="GSI1", KeyConditionExpression="GSI1PK = :pk",
                                        ExpressionAttributeValues={":pk": f"USER#{user}#REQUESTS"})["Items"]
    return [dynamo.plain(i) for i in items]


def pending(user: str) -> int:
    return sum(1 for r in requests_of(user) if r["state"] in ("queued", "starting"))


def assert_settled(emulator: EmulatorServer, users: list[str]) -> None:
    active = emulator.org.active_session_ids()
    unclaimed = {sid for sid in active if session_records.get_session(sid) is None}
    assert unclaimed == set(), "orphans alive after one sweep"
    for user in users:
        assert slots.active_slots(user) == len(live_bots(emulator, user)) + pending(user), user
    served: dict[str, int] = {}
    for user in users:
        for request in requests_of(user):
            if request.get("session_id"):
                served[request["request_id"]] = sum(
                    1 for sid in live_bots(emulator, user) if sid == request["session_id"])
    assert all(n <= 1 for n in served.values()), served


@pytest.fixture()
def fast(configure_stage: Callable[..., None]) -> None:
    configure_stage(PCC_READ_TIMEOUT="1", RETRY_BASE_SECONDS="0.5", RETRY_CAP_SECONDS="1")


@pytest.fixture()
def killed_inside_call(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """The next `n` PCC start calls create their bot, then the Lambda dies before the answer is used."""
    left = {"n": 0}
    real_start = pcc_client.start

    def start(*args: Any, **kwargs: Any) -> Any:
        result = real_start(*args, **kwargs)
        if left["n"] > 0:
            left["n"] -= 1
            raise LambdaKilled
        return result

    monkeypatch.setattr(pcc_client, "start", start)
    yield lambda n: left.update(n=n)


def deliver(app_env: Gateway, queue: dict[str, Any], message: dict[str, Any]) -> None:
    """One Lambda invocation of the worker for this message; a killed one leaves the message in flight."""
    arn = queue["sqs"].get_queue_attributes(QueueUrl=queue["url"], AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    try:
        app_env.app.handler_map["retry_worker"](sqs_event(message, arn), None)
    except LambdaKilled:
        return
    queue["sqs"].delete_message(QueueUrl=queue["url"], ReceiptHandle=message["ReceiptHandle"])


def receive_all(queue: dict[str, Any], expected: int, timeout: float = 15) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        messages += queue["sqs"].receive_message(QueueUrl=queue["url"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                 AttributeNames=["All"]).get("Messages", [])
    assert len(messages) == expected, messages
    return messages


# ------------------------------------------------------------------ the rows
def test_worker_killed_after_pcc_created_the_bot(app_env: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
                                                 fast: None, killed_inside_call: Callable[[int], None]) -> None:
    """6 queued starts; the dispatcher dies 3 times inside the head's PCC call (after the bot was created).
    Each time the leases run out, the sweeper restarts the queue, the head is tried again; in the end 6 bots
    serve 6 requests, in order, and the 3 bots of the killed attempts are stopped as orphans."""
    users = [new_user() for _ in range(6)]
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    ids = [json.loads(app_env.start(u, {"transport": "daily"}).body)["requestId"] for u in users]
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 50})
    killed_inside_call(3)
    for message in receive_all(queue, 1):  # one wake-up: the first start found no dispatcher running
        deliver(app_env, queue, message)
    for run in range(3):
        assert queued_starts.get(ids[0]).state == "starting"  # type: ignore[union-attr]
        assert all(queued_starts.get(r).state == "queued" for r in ids[1:])  # type: ignore[union-attr]
        assert len(emulator.org.active_session_ids()) == run + 1  # the killed attempts' bots
        expire_leases("my-agent", ids[0])  # the one thing simulated: time
        assert queue_sweep.sweep()["woken"] == 1
        for message in receive_all(queue, 1):
            deliver(app_env, queue, message)
    drain(app_env, queue, until=lambda: all(queued_starts.get(r).state == "started" for r in ids))  # type: ignore[union-attr]
    assert bot_order(emulator, users) == users  # served in queue order, the killed head first
    assert len(emulator.org.active_session_ids()) == 9  # 6 served + 3 orphans
    one_sweep()
    assert len(emulator.org.active_session_ids()) == 6  # one bot per request
    assert_settled(emulator, users)


def test_a_killed_dispatcher_is_replaced_when_its_lease_runs_out(
        app_env: Gateway, emulator: EmulatorServer, queue: dict[str, Any], fast: None,
        killed_inside_call: Callable[[int], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """No sweep and no schedule here, and no simulated time: the dispatcher is killed inside the head's PCC
    call (its message stays in flight for the 360 s visibility timeout), and the watchdog it armed when it
    took the lease brings the next one as soon as the lease has run out. The lease is 3 s here instead of
    70 s (the watchdog fires 2 s after it), so recovery comes after 3-5 s, not after 360 s."""
    monkeypatch.setattr(attempts, "LEASE_SECONDS", 3)
    monkeypatch.setattr(dispatcher, "WATCHDOG_DELAY_SECONDS", 5)
    users = [new_user() for _ in range(2)]
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    ids = [json.loads(app_env.start(u, {"transport": "daily"}).body)["requestId"] for u in users]
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 50})
    killed_inside_call(1)
    for message in receive_all(queue, 1):
        deliver(app_env, queue, message)
    assert queued_starts.get(ids[0]).state == "starting"  # type: ignore[union-attr]
    # Without the watchdog the next dispatcher would come with the message's visibility timeout (360 s): the
    # drain would give up first. Judged by what happened, not how fast.
    drain(app_env, queue, until=lambda: all(queued_starts.get(r).state == "started" for r in ids),  # type: ignore[union-attr]
          timeout=90)
    assert bot_order(emulator, users) == users
    one_sweep()
    assert len(emulator.org.active_session_ids()) == 2  # the killed attempt's bot was an orphan: stopped
    assert_settled(emulator, users)


def bot_order(emulator: EmulatorServer, users: list[str]) -> list[str]:
    """Each user once, in the order their first recorded bot started at the emulator."""
    recorded = sorted((s for s in emulator.org.sessions.values() if session_records.get_session(s.session_id)),
                      key=lambda s: s.created_at)
    return [s.body["user"]["id"] for s in recorded if s.body["user"]["id"] in users]


def expire_leases(agent: str, request_id: str) -> None:
    """What 70 s of waiting does to a dead dispatcher's leases: on the agent's queue and on its attempt."""
    ddb = dynamo.table()
    ddb.update_item(Key={"PK": f"QUEUE#{agent}", "SK": "STATE"}, UpdateExpression="SET lease_until = :past",
                    ExpressionAttributeValues={":past": int(time.time()) - 1})
    ddb.update_item(Key={"PK": f"REQUEST#{request_id}", "SK": "META"}, UpdateExpression="SET lease_until = :past",
                    ExpressionAttributeValues={":past": int(time.time()) - 1})


@pytest.mark.parametrize("kind", ["502", "reset"])
def test_answer_lost_after_the_bot_exists_direct(app_env: Gateway, emulator: EmulatorServer, fast: None,
                                                 kind: str) -> None:
    user = new_user()
    emulator_admin(emulator, "faults", {"start": [{"when": "after", "kind": kind}]})
    assert_error(app_env.start(user, {"transport": "daily"}), 502, "upstream_error" if kind == "502" else
                 "upstream_unavailable")
    assert slots.active_slots(user) == 1  # unknown outcome: the slot stays held
    assert len(live_bots(emulator, user)) == 1
    one_sweep()
    assert live_bots(emulator, user) == set() and slots.active_slots(user) == 0
    assert_settled(emulator, [user])


@pytest.mark.parametrize("fault", [{"when": "after", "kind": "502"}, {"when": "after", "kind": "reset"},
                                   {"when": "after", "kind": "hang", "seconds": 2}])
def test_answer_lost_after_the_bot_exists_queued(app_env: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
                                                 fast: None, fault: dict[str, Any]) -> None:
    user = new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    request_id = json.loads(app_env.start(user, {"transport": "daily"}).body)["requestId"]
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    emulator_admin(emulator, "faults", {"start": [fault]})
    drain(app_env, queue, until=lambda: queued_starts.get(request_id).state in queued_starts.TERMINAL,  # type: ignore[union-attr]
          timeout=40)
    request = queued_starts.get(request_id)
    assert request is not None and request.state == "started"
    one_sweep()
    assert live_bots(emulator, user) == {request.session_id}  # served by exactly one bot
    assert_settled(emulator, [user])


def test_pcc_hangs_after_creating_the_bot_direct(app_env: Gateway, emulator: EmulatorServer, fast: None) -> None:
    user = new_user()
    emulator_admin(emulator, "faults", {"start": [{"when": "after", "kind": "hang", "seconds": 2}]})
    assert_error(app_env.start(user, {"transport": "daily"}), 504, "upstream_timeout")
    time.sleep(1.2)
    assert slots.active_slots(user) == 1 and len(live_bots(emulator, user)) == 1
    one_sweep()
    assert_settled(emulator, [user])
    assert slots.active_slots(user) == 0


def test_api_lambda_killed_inside_the_pcc_call(app_env: Gateway, emulator: EmulatorServer, fast: None,
                                               killed_inside_call: Callable[[int], None]) -> None:
    """8 starts whose Lambda dies after Pipecat Cloud created the bot: 8 intents hold 8 slots; one sweep
    stops the 8 orphans and frees the 8 slots (lease + grace, not the 10-minute counter guard)."""
    users = [new_user() for _ in range(8)]
    killed_inside_call(8)
    for user in users:
        with pytest.raises(LambdaKilled):
            app_env.start(user, {"transport": "daily"})
    assert len(emulator.org.active_session_ids()) == 8
    assert all(slots.active_slots(u) == 1 for u in users)
    one_sweep()
    assert emulator.org.active_session_ids() == set()
    assert_settled(emulator, users)


def test_a_queue_that_refuses_the_message_frees_the_slot_exactly_once(
        app_env: Gateway, emulator: EmulatorServer, configure_stage: Any) -> None:
    user = new_user()
    assert app_env.start(user, {"transport": "daily"}).status_code == 200
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 1})
    configure_stage(RETRY_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue")
    assert_error(app_env.start(user, {"transport": "daily"}), 503, "queue_unavailable")
    assert slots.active_slots(user) == 1  # the running session's slot, not 0 (released twice before)
    one_sweep()
    assert_settled(emulator, [user])


def test_a_body_valid_direct_is_valid_queued(app_env: Gateway, emulator: EmulatorServer,
                                             queue: dict[str, Any]) -> None:
    user = new_user()
    big = {"blob": "é" * 250_000}  # 500 KB of UTF-8, over DynamoDB's 400 KB item limit
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    queued = app_env.start(user, {"transport": "daily", "body": big})
    assert queued.status_code == 202, queued.body  # a 500 before
    request_id = json.loads(queued.body)["requestId"]
    record = queued_starts.get(request_id)
    assert record is not None and record.pcc_request_chunks == 2 and record.pcc_request is None
    message = queue["sqs"].receive_message(QueueUrl=queue["url"], WaitTimeSeconds=5, VisibilityTimeout=0)
    assert len(message["Messages"][0]["Body"]) < 1024  # the message carries ids, not the body
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(app_env, queue, until=lambda: queued_starts.get(request_id).state == "started")  # type: ignore[union-attr]
    [session] = emulator.org.sessions.values()
    assert session.body == {**big, "user": {"id": user}}
    one_sweep()
    assert_settled(emulator, [user])
