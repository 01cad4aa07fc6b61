"""A DynamoDB transaction whose answer is lost after it committed (a read timeout on a loaded network): botocore
retries it. The retry must find the transaction done (botocore sends the same ClientRequestToken again), not
fail on its own conditions and make the gateway answer an error for a request that exists, or stop a bot it has
recorded. The fault is injected below botocore's retry loop: the first attempt really reaches DynamoDB (moto),
then its answer is dropped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from botocore.exceptions import ReadTimeoutError

from chalicelib.platform import dynamo
from chalicelib.store import agent_queue, queued_starts, session_records, slots
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_capacity_queue import drain, state
from tests.integration.test_queue_edges import requests_of
from tests.integration.test_start import body


@contextmanager
def answers_lost(operation: str, lose: Callable[[bytes, list[bytes]], bool]) -> Iterator[list[bytes]]:
    """Each `operation` request that `lose(body, lost so far)` picks reaches DynamoDB (moto) the first time its body
    is seen, and is applied; its answer is then lost: a read timeout below botocore's retry loop, which sends the
    same body again. Yields the bodies whose answers were lost, once per loss."""
    lost: list[bytes] = []
    events = dynamo.table().meta.client.meta.events

    def after_commit_time_out(request: Any, **_: Any) -> None:
        if request.headers.get("X-Amz-Target", b"").endswith(operation.encode()) and lose(request.body, lost):
            if request.body not in lost:
                sent = httpx.post(request.url, headers=dict(request.headers.items()), content=request.body)
                assert sent.status_code == 200, sent.text  # committed: only its answer is lost
            lost.append(request.body)
            raise ReadTimeoutError(endpoint_url=request.url)

    events.register_first(f"before-send.dynamodb.{operation}", after_commit_time_out)
    try:
        yield lost
    finally:
        events.unregister(f"before-send.dynamodb.{operation}", after_commit_time_out)


@pytest.fixture()
def lose_transaction_answers() -> Iterator[list[bytes]]:
    """Each TransactWriteItems is sent to DynamoDB, and its answer then lost once (botocore retries it)."""
    with answers_lost("TransactWriteItems", lambda body, lost: body not in lost) as lost:
        yield lost


def test_a_queued_start_whose_answer_was_lost_is_still_a_202(gateway: Gateway, emulator: EmulatorServer,
                                                             queue: dict[str, Any], user: str,
                                                             lose_transaction_answers: list[bytes]) -> None:
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    response = gateway.start(user, {"transport": "daily"})
    assert lose_transaction_answers, "no transaction was exercised"
    assert response.status_code == 202, response.body  # was: 503 queue_unavailable, for a request that existed
    assert [r["request_id"] for r in requests_of(user)] == [body(response)["requestId"]]
    assert slots.active_slots(user) == 1


def test_a_direct_start_and_a_served_queued_start_keep_their_bots(app_env: Gateway, emulator: EmulatorServer,
                                                                  queue: dict[str, Any], user: str,
                                                                  lose_transaction_answers: list[bytes]) -> None:
    direct = app_env.start(user, {"transport": "daily"})
    assert direct.status_code == 200, direct.body  # the intent and the session record: both transactions
    sid = body(direct)["sessionId"]
    assert sid in emulator.org.active_session_ids() and session_records.get_session(sid) is not None
    queued_user = "lost-" + user
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 1})
    rid = body(app_env.start(queued_user, {"transport": "daily"}))["requestId"]
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(app_env, queue, until=lambda: state(rid) == "started")
    served = queued_starts.get(rid)
    assert served is not None
    # was: the dispatcher took the retry's refusal for a lost claim and stopped the bot it had just recorded
    assert served.session_id in emulator.org.active_session_ids()
    assert session_records.get_session(served.session_id) is not None


@pytest.fixture()
def lose_every_answer_of_the_enqueue() -> Iterator[list[bytes]]:
    """The transaction that records a queued start commits at its first attempt, then every answer is lost:
    botocore retries (the same token, so nothing is applied twice) and finally raises its read timeout."""
    with answers_lost("TransactWriteItems", lambda body, lost: b"SEQ#" in body) as lost:
        yield lost


def test_a_queued_start_recorded_though_every_answer_was_lost_is_a_202_and_is_served(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any], user: str,
        lose_every_answer_of_the_enqueue: list[bytes]) -> None:
    """Before, the start answered 500 and its place was passed while its request stayed queued: an error for a
    request that existed, which no dispatcher would ever try (the rare unserved start of issue #23)."""
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    response = gateway.start(user, {"transport": "daily"})
    assert len(lose_every_answer_of_the_enqueue) >= 2, "botocore should have retried the lost answers"
    assert response.status_code == 202, response.body
    rid = body(response)["requestId"]
    assert [r["request_id"] for r in requests_of(user)] == [rid]
    assert slots.active_slots(user) == 1
    state_now = agent_queue.read("my-agent")
    record = queued_starts.get(rid)
    assert record is not None and int(record.seq) >= state_now.head and int(record.seq) not in state_now.gone
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(gateway, queue, until=lambda: state(rid) == "started")
    assert slots.active_slots(user) == 1


@pytest.fixture()
def lose_the_first_place_answer() -> Iterator[list[bytes]]:
    """The write that hands out a queue place is applied, then its answer lost once (botocore sends it again)."""
    with answers_lost("UpdateItem", lambda body, lost: b"ADD tail" in body and not lost) as lost:
        yield lost


def test_a_place_whose_answer_was_lost_is_taken_once(gateway: Gateway, emulator: EmulatorServer,
                                                     queue: dict[str, Any], user: str,
                                                     lose_the_first_place_answer: list[bytes]) -> None:
    """Before, botocore's repeat took a second number and left the first without an entry: the head stalled for
    the dispatcher's 10 s grace, then the number was given up ("queue place abandoned")."""
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    before = agent_queue.read("my-agent").tail
    response = gateway.start(user, {"transport": "daily"})
    assert lose_the_first_place_answer, "no place was handed out"
    assert response.status_code == 202, response.body
    record = queued_starts.get(body(response)["requestId"])
    after = agent_queue.read("my-agent")
    assert record is not None and after.tail == before + 1 == int(record.seq) and after.waiting() == 1
