"""The capacity queue is first come, first served per agent, drains as capacity frees, and is bounded:
late arrivals never overtake, positions are exact, a stop through the API wakes the dispatcher, PCC is
asked a bounded number of times a second, the queue has a cap. Counted from the emulator's sessions and
DynamoDB, not from our answers."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.platform import dynamo
from chalicelib.start import capacity_queue, dispatcher, pacing
from chalicelib.store import agent_queue, queued_starts, slots
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_capacity_queue import drain
from tests.integration.test_start import assert_error, body
from tests.support import new_user


def bot_owners(emulator: EmulatorServer) -> list[str]:
    """The users whose bots the emulator started, in the order it started them."""
    with emulator.org.lock:
        sessions = sorted(emulator.org.sessions.values(), key=lambda s: s.created_at)
    return [(s.body or {}).get("user", {}).get("id", "") for s in sessions]


def queued(gateway: Gateway, user: str) -> dict[str, Any]:
    response = gateway.start(user, {"transport": "daily"})
    assert response.status_code == 202, response.body
    return dict(body(response))


def state(request_id: str) -> str:
    record = queued_starts.get(request_id)
    assert record is not None, request_id
    return str(record.state)


def test_a_late_arrival_cannot_overtake_a_queued_start(gateway: Gateway, emulator: EmulatorServer,
                                                        queue: dict[str, Any]) -> None:
    first, late = new_user(), new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    waiting = queued(gateway, first)
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 1})  # one place frees before any retry
    calls_before = emulator.org.start_calls
    behind = queued(gateway, late)  # PCC would accept it now: it joins the queue instead
    assert emulator.org.start_calls == calls_before  # ... without asking PCC at all
    assert (waiting["position"], behind["position"]) == (1, 2)
    drain(gateway, queue, until=lambda: state(waiting["requestId"]) == "started", timeout=15)
    assert state(behind["requestId"]) == "queued"  # capacity 1: the late one waits for the next place
    assert bot_owners(emulator) == [first]
    status = body(gateway.request("GET", behind["statusUrl"], user=late))
    assert status["position"] == 1  # it is the head now
    first_session = str(queued_starts.get(waiting["requestId"]).session_id)  # type: ignore[union-attr]
    assert gateway.request("DELETE", f"/sessions/{first_session}", user=first).status_code == 200
    drain(gateway, queue, until=lambda: state(behind["requestId"]) == "started", timeout=15)
    assert bot_owners(emulator) == [first, late]


def test_queued_starts_are_served_in_arrival_order_and_positions_are_exact(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    users = [new_user() for _ in range(8)]
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    answers = [queued(gateway, u) for u in users]
    assert [a["position"] for a in answers] == list(range(1, 9))
    # Out-of-order departures keep positions exact: cancel the 3rd, the 8th moves to 7th.
    assert gateway.request("DELETE", answers[2]["statusUrl"], user=users[2]).status_code == 200
    assert body(gateway.request("GET", answers[7]["statusUrl"], user=users[7]))["position"] == 7
    assert body(gateway.request("GET", answers[1]["statusUrl"], user=users[1]))["position"] == 2
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 20})
    served = [a["requestId"] for i, a in enumerate(answers) if i != 2]
    drain(gateway, queue, until=lambda: all(state(r) == "started" for r in served), timeout=30)
    assert bot_owners(emulator) == [u for i, u in enumerate(users) if i != 2]  # 0 inversions
    state_after = agent_queue.read("my-agent")
    assert state_after.waiting() == 0
    # The ETA comes from the measured interval between served starts: position x interval.
    interval = state_after.free_interval
    assert interval is not None and interval > 0
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    first, second = queued(gateway, new_user()), queued(gateway, new_user())
    assert first["etaSeconds"] == math.ceil(interval) and second["etaSeconds"] == math.ceil(2 * interval)
    assert second["retryAfter"] == max(1, min(30, math.ceil(2 * interval)))


def test_a_stop_through_the_api_wakes_the_dispatcher_at_once(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
        configure_stage: Callable[..., None]) -> None:
    """The head waits 10 s between tries; stopping a session through the gateway frees its place and the
    queued start is served before the head's own next try was due (the time the dispatcher recorded)."""
    configure_stage(RETRY_BASE_SECONDS="10", RETRY_CAP_SECONDS="10", DISPATCH_RUN_SECONDS="20")
    holder, waiter = new_user(), new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 1})
    running = gateway.start(holder, {"transport": "daily"})
    assert running.status_code == 200
    request_id = queued(gateway, waiter)["requestId"]
    worker = threading.Thread(target=lambda: drain(gateway, queue, until=lambda: state(request_id) == "started",
                                                   timeout=30))
    worker.start()
    def waiting_after_a_try() -> bool:  # tried once (429) and requeued: the dispatcher sits in its 10 s wait
        record = queued_starts.get(request_id)
        return record is not None and int(record.attempts) >= 1 and record.state == "queued"

    deadline = time.monotonic() + 30
    while not waiting_after_a_try() and time.monotonic() < deadline:
        time.sleep(0.05)
    head = queued_starts.get(request_id)
    assert head is not None and head.state == "queued"
    retry_due = float(head.next_attempt_at)  # when the head would be tried again without a wake-up
    assert gateway.request("DELETE", f"/sessions/{body(running)['sessionId']}", user=holder).status_code == 200
    worker.join()
    served = queued_starts.get(request_id)
    assert served is not None and served.state == "started"
    started_at = emulator.org.sessions[served.session_id].created_at
    assert started_at < retry_due, (started_at, retry_due)  # woken: served before its own retry was due
    assert bot_owners(emulator) == [holder, waiter]


def test_pcc_is_asked_at_most_dispatch_calls_per_second(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
        configure_stage: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    """A head at capacity, with the backoff as short as allowed: the dispatcher's calls are spaced by at least
    1 / DISPATCH_CALLS_PER_SECOND, judged on the send times the dispatcher itself recorded for each call (a slow
    machine only spaces them more), and every call is one attempt on the record."""
    configure_stage(RETRY_BASE_SECONDS="0.01", RETRY_CAP_SECONDS="0.01", DISPATCH_CALLS_PER_SECOND="4",
                    DISPATCH_RUN_SECONDS="3")
    sent: list[float] = []
    real_called = pacing.Pacer.called

    def called(self: Any) -> float:
        at = real_called(self)
        sent.append(at)
        return at

    monkeypatch.setattr(pacing.Pacer, "called", called)
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    request_id = queued(gateway, new_user())["requestId"]
    calls_before = emulator.org.start_calls
    drain(gateway, queue, until=lambda: emulator.org.start_calls - calls_before >= 6, timeout=60)
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert len(sent) >= 6 and min(gaps) >= 1 / 4 - 1e-6, gaps
    calls = emulator.org.start_calls - calls_before
    assert calls == len(sent)  # every call the emulator saw was one the dispatcher paced
    assert state(request_id) == "queued" and int(queued_starts.get(request_id).attempts) == calls  # type: ignore[union-attr]


def test_the_queue_cap_answers_503_queue_full_and_frees_the_slot(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
        configure_stage: Callable[..., None]) -> None:
    configure_stage(MAX_QUEUED="2")
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    queued(gateway, new_user())
    second = queued(gateway, new_user())
    third = new_user()
    full = gateway.start(third, {"transport": "daily"})
    data = assert_error(full, 503, "queue_full")
    assert "2 starts already wait" in data["detail"]
    assert int(full.headers["Retry-After"]) >= 1
    assert slots.active_slots(third) == 0  # nothing held for a start that was refused
    # A place frees (a cancel), and the next start gets it.
    assert gateway.request("DELETE", second["statusUrl"], user=second_user(second)).status_code == 200
    assert gateway.start(third, {"transport": "daily"}).status_code == 202


def second_user(answer: dict[str, Any]) -> str:
    record = queued_starts.get(answer["requestId"])
    assert record is not None
    return str(record.user_id)


def test_work_arriving_after_a_run_ended_starts_a_new_run_at_once(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    """A run that emptied the queue consumed its wake-up: the next queued start asks for a run again at once
    (not after the 10 s gate that keeps a storm of starts from becoming a storm of messages)."""
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    first = queued(gateway, new_user())
    second_before_run = queued(gateway, new_user())
    assert messages_waiting(queue) == 1  # two starts, one wake-up
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(gateway, queue, until=lambda: state(second_before_run["requestId"]) == "started", timeout=15)
    assert state(first["requestId"]) == "started" and messages_waiting(queue) == 0
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    late = queued(gateway, new_user())
    assert messages_waiting(queue) == 1
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(gateway, queue, until=lambda: state(late["requestId"]) == "started", timeout=15)


def messages_waiting(queue: dict[str, Any]) -> int:
    """Wake-ups sent or being handled (not the delayed watchdog each run arms for its own lease)."""
    attrs = queue["sqs"].get_queue_attributes(QueueUrl=queue["url"], AttributeNames=["All"])["Attributes"]
    return sum(int(attrs[k]) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"))


def test_a_place_whose_enqueue_died_is_given_up_and_the_queue_moves_on(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A Lambda that took a place and died before recording its start leaves a hole: the dispatcher gives
    the place up after ENTRY_GRACE_SECONDS instead of waiting on it for ever, and a start that comes back
    for that place later is refused cleanly (503), never recorded behind the queue's back."""
    first_user, behind_user = new_user(), new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    first = queued(gateway, first_user)
    placed = agent_queue.allocate("my-agent", 500)
    assert placed is not None
    dead = placed.tail
    behind = queued(gateway, behind_user)
    assert behind["position"] == 3  # the hole counts until it is given up
    monkeypatch.setattr(dispatcher, "ENTRY_GRACE_SECONDS", 0.5)
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(gateway, queue, until=lambda: state(behind["requestId"]) == "started", timeout=20)
    assert state(first["requestId"]) == "started"
    assert (agent_queue.entry("my-agent", dead) or {}).get("abandoned") is True
    assert bot_owners(emulator) == [first_user, behind_user]
    # The stalled Lambda finally records its start at the place that was given up: that place stays empty
    # and the start takes a new one at the tail (its place in line is lost, not the start).
    late_user = new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    real_allocate = agent_queue.allocate
    handed: list[int] = []

    def stale_first(agent: str, max_queued: int, known: Any = None) -> Any:
        fresh = placed if not handed else real_allocate(agent, max_queued, known)
        handed.append(fresh.tail)
        return fresh

    monkeypatch.setattr(agent_queue, "allocate", stale_first)
    late = gateway.start(late_user, {"transport": "daily"})
    assert late.status_code == 202, late.body
    assert handed[0] == dead and handed[1] > dead and len(handed) == 2
    request = queued_starts.get(body(late)["requestId"])
    assert request is not None and int(request.seq) == handed[1] and request.state == "queued"
    assert (agent_queue.entry("my-agent", dead) or {}).get("abandoned") is True  # never overwritten
    assert (agent_queue.entry("my-agent", handed[1]) or {}).get("request_id") == request.request_id
    assert slots.active_slots(late_user) == 1  # the queued start holds its slot
    # A Lambda that keeps stalling past the grace gives up after PLACE_TRIES places: 503, nothing recorded.
    stalled_user = new_user()
    handed.clear()

    def always_stale(agent: str, max_queued: int, known: Any = None) -> Any:
        handed.append(placed.tail)
        return placed

    monkeypatch.setattr(agent_queue, "allocate", always_stale)
    refused = gateway.start(stalled_user, {"transport": "daily"})
    assert_error(refused, 503, "queue_unavailable")
    assert refused.headers["Retry-After"] == "1"
    assert len(handed) == capacity_queue.PLACE_TRIES
    assert slots.active_slots(stalled_user) == 0
    assert queued_starts.user_pending(stalled_user, "2000-01-01T00:00:00Z") == []


def test_joining_a_waiting_queue_reads_the_queue_state_once(gateway: Gateway, emulator: EmulatorServer,
                                                             queue: dict[str, Any]) -> None:
    """The queue state is read once (is anything waiting?) and written once (take the next number); the
    202's position comes from what that write returned, not from more reads."""
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    queued(gateway, new_user())
    state_key = {"PK": {"S": "QUEUE#my-agent"}, "SK": {"S": "STATE"}}
    calls: list[str] = []

    def on_call(params: dict[str, Any], model: Any, **_: Any) -> None:
        if json.loads(params["body"] or b"{}").get("Key") == state_key:
            calls.append(model.name)

    events = dynamo.table().meta.client.meta.events
    events.register("before-call.dynamodb", on_call)
    try:
        second = queued(gateway, new_user())
    finally:
        events.unregister("before-call.dynamodb", on_call)
    assert second["position"] == 2
    assert sorted(calls) == ["GetItem", "UpdateItem"], calls
