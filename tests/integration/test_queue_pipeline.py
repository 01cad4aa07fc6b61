"""The pipelined dispatcher (chalicelib/start/dispatcher.py): several attempts in flight on consecutive places,
each place passed only once its request is known to have left the queue, every request served once, and a
fault after a bot exists while other attempts are in flight costs no duplicate and no stranded request.
Counted from the emulator's bots and calls and from DynamoDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.platform import dynamo
from chalicelib.start import dispatcher
from chalicelib.start import queue as capacity_queue
from chalicelib.store import agent_queue
from chalicelib.store import queued_starts as start_requests
from chalicelib.store import sessions as session_store
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_fair_queue import bot_owners, queued
from tests.support import new_user

AGENT = "my-agent"


def stranded() -> list[str]:
    """Requests still waiting whose place the queue has already passed: a 202 nobody would ever serve."""
    state = agent_queue.read(AGENT)
    found = []
    for request in start_requests.pending():
        if request["state"] in (start_requests.QUEUED, start_requests.STARTING) and (
                int(request["seq"]) < state.head or int(request["seq"]) in state.gone):
            found.append(request["request_id"])
    return found


def queue_of(gateway: Gateway, emulator: EmulatorServer, count: int) -> list[tuple[str, str]]:
    """`count` starts queued behind a full agent: (user, request id) in queue order."""
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 0})
    users = [new_user() for _ in range(count)]
    return [(u, queued(gateway, u)["requestId"]) for u in users]


def test_a_place_is_never_passed_while_its_request_still_waits(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The head is past its deadline but failing it is refused (a transaction conflict that outlives the retries,
    or its state moving): the dispatcher must not pass the place with the request still queued. Before, it
    advanced anyway, and the request was left queued behind the head: answered 202, never served, never failed."""
    (_, head), (_, behind) = queue_of(gateway, emulator, 2)
    dynamo.table().update_item(Key={"PK": f"REQUEST#{head}", "SK": "META"}, UpdateExpression="SET deadline = :d",
                               ExpressionAttributeValues={":d": int(time.time()) - 1})
    real, refused = start_requests.finish_without_session, []

    def finish(request: Any, *args: Any, **kwargs: Any) -> bool:
        if request["request_id"] == head:
            refused.append(1)
            return False
        return bool(real(request, *args, **kwargs))

    monkeypatch.setattr(start_requests, "finish_without_session", finish)
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 5})
    dispatcher.run(AGENT, budget_seconds=1.5)
    assert refused and stranded() == []
    assert start_requests.get(head)["state"] == "queued"  # type: ignore[index]
    assert start_requests.get(behind)["state"] == "queued"  # type: ignore[index]  # the order rule: not around it
    monkeypatch.undo()
    dispatcher.run(AGENT, budget_seconds=3)
    assert start_requests.get(head)["state"] == "failed"  # type: ignore[index]
    assert start_requests.get(behind)["state"] == "started"  # type: ignore[index]
    assert stranded() == [] and agent_queue.read(AGENT).waiting() == 0


def test_attempts_overlap_in_queue_order_and_each_request_gets_one_bot(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    """Pipecat Cloud takes 0.4 s to answer each start: the dispatcher has several in flight at once (the emulator
    sees overlapping calls), sends them in queue order, and with capacity for all, the bots start in queue order."""
    waiting = queue_of(gateway, emulator, 8)
    emulator_admin(emulator, "knobs", {"start_latency_ms": 400})
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 8})
    began = time.monotonic()
    dispatcher.run(AGENT, budget_seconds=10)
    took = time.monotonic() - began
    assert [start_requests.get(r)["state"] for _, r in waiting] == ["started"] * 8  # type: ignore[index]
    assert bot_owners(emulator) == [u for u, _ in waiting]  # one bot each, in queue order
    with emulator.org.lock:
        calls = [c for c in emulator.org.start_log if c["status"] == 200]
    overlapping = max(sum(1 for other in calls if other["arrived"] <= c["arrived"] < other["answered"])
                      for c in calls)
    assert overlapping >= 2, calls
    assert took < 8 * 0.4  # not one round trip after another
    assert stranded() == [] and agent_queue.read(AGENT).waiting() == 0


def test_a_lost_record_while_others_are_in_flight_costs_no_duplicate_and_no_stranded_request(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The bot of the third place exists but recording it fails (DynamoDB refuses the transaction) while the other
    attempts are in flight: that bot is stopped, its request goes back to its place and is served by a later
    attempt; every request ends with exactly one running bot, and the slots match."""
    waiting = queue_of(gateway, emulator, 5)
    third = waiting[2][1]
    real, failed = start_requests.complete, []

    def complete(request: Any, *args: Any, **kwargs: Any) -> bool:
        if request["request_id"] == third and not failed:
            failed.append(1)
            raise RuntimeError("DynamoDB refused the transaction")
        return bool(real(request, *args, **kwargs))

    monkeypatch.setattr(start_requests, "complete", complete)
    emulator_admin(emulator, "knobs", {"start_latency_ms": 200})
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 10})
    dispatcher.run(AGENT, budget_seconds=6)
    assert failed == [1]
    records = [start_requests.get(r) for _, r in waiting]
    assert [r["state"] for r in records] == ["started"] * 5  # type: ignore[index]
    running = emulator.org.active_session_ids(AGENT)
    assert {str(r["session_id"]) for r in records} == running  # type: ignore[index]  # the stopped one is gone
    assert len(running) == 5 and sorted(bot_owners(emulator)).count(waiting[2][0]) == 2  # started twice, one stopped
    assert all(session_store.active_slots(u) == 1 for u, _ in waiting)
    assert stranded() == [] and agent_queue.read(AGENT).waiting() == 0


def _dispatch_after_refusals(gateway: Gateway, emulator: EmulatorServer, count: int, budget: float,
                             then: dict[str, Any]) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """`count` starts queued behind a full agent; a dispatcher run sees two refusals (so it has measured how long
    Pipecat Cloud takes to refuse), then the emulator is changed (`then`: admin path -> body). Returns the queue
    and the start calls the emulator received after the change."""
    waiting = queue_of(gateway, emulator, count)
    with emulator.org.lock:
        emulator.org.start_log.clear()
    runner = threading.Thread(target=dispatcher.run, args=(AGENT,), kwargs={"budget_seconds": budget})
    runner.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with emulator.org.lock:
            refused = sum(1 for c in emulator.org.start_log if c["status"] == 429)
        if refused >= 2:
            break
        time.sleep(0.02)
    changed = time.time()
    for path, body_ in then.items():
        emulator_admin(emulator, path, body_)
    runner.join()
    with emulator.org.lock:
        calls = [c for c in emulator.org.start_log if c["arrived"] >= changed]
    return waiting, calls


def test_a_start_slow_to_answer_is_foreseen_as_a_bot_so_the_next_place_goes_before_its_answer(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
        configure_stage: Callable[..., None]) -> None:
    """Pipecat Cloud refuses at once but answers a success only when the bot has started (3 s here). Once capacity
    frees, the dispatcher counts an attempt unanswered well past the refusal time as a bot and sends the next
    place then: several places are tried before the first bot's answer comes back. Without it, pacing waits for
    that answer: with refusals having grown the wait to RETRY_CAP_SECONDS (2 s), two calls at most."""
    configure_stage(RETRY_BASE_SECONDS="2", RETRY_CAP_SECONDS="2", DISPATCH_RUN_SECONDS="8")
    waiting, calls = _dispatch_after_refusals(
        gateway, emulator, 8, 8, {"knobs": {"start_latency_ms": 3000}, f"agents/{AGENT}": {"max_agents": 8}})
    first = min((c for c in calls if c["status"] == 200), key=lambda c: c["arrived"])
    before_its_answer = [c for c in calls if c["arrived"] < first["answered"]]
    assert len(before_its_answer) >= 4, calls
    # every start is served (on a loaded machine the last may need the next run: the 8 s budget is no promise)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(start_requests.get(r)["state"] != "started"  # type: ignore[index]
                                              for _, r in waiting):
        dispatcher.run(AGENT, budget_seconds=4)
    assert [start_requests.get(r)["state"] for _, r in waiting] == ["started"] * 8  # type: ignore[index]
    assert bot_owners(emulator) == [u for u, _ in waiting] and stranded() == []


def test_starts_slow_for_another_reason_are_foreseen_a_bounded_number_of_times(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
        configure_stage: Callable[..., None]) -> None:
    """Pipecat Cloud hangs (no bot, then the connection drops): the slow attempts look like bots starting, but at
    most FORESEEN_MAX of them are counted so beyond the bots confirmed, and once one ends in an error the run
    paces on answers only. No flood of calls, nothing lost: every request is still waiting, none started."""
    configure_stage(RETRY_BASE_SECONDS="1", RETRY_CAP_SECONDS="1", DISPATCH_RUN_SECONDS="6")
    hang = {"when": "before", "kind": "hang", "seconds": 5}
    waiting, calls = _dispatch_after_refusals(gateway, emulator, 30, 6, {"faults": {"start": [hang] * 40}})
    with emulator.org.lock:
        hung = emulator.org.start_calls
    # within the 5 s before the first hung call fails: FORESEEN_MAX foreseen, plus pacing at the 1 s cap
    assert dispatcher.FORESEEN_MAX <= 40 - len(emulator.org.start_faults) <= dispatcher.FORESEEN_MAX + 8, hung
    assert calls == []  # no call got an answer (all hung), so none is in the emulator's start log
    assert {start_requests.get(r)["state"] for _, r in waiting} == {"queued"}  # type: ignore[index]
    assert emulator.org.started == 0 and stranded() == []


def test_a_queued_start_whose_place_was_passed_gets_a_place_back_and_is_served(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    """The guard for issue #23's rare unserved 202: should the queue ever pass a place whose request still waits
    (it must not), the reconcile schedule's sweep gives that start a new place at the tail and wakes the
    dispatcher, which serves it: one bot, its slot still held once, nothing stranded. Before, it waited unserved
    until its deadline (the queue looked empty, so nothing woke a dispatcher for it)."""
    (first_user, first), (second_user, second) = queue_of(gateway, emulator, 2)
    agent_queue.mark_gone(AGENT, int(start_requests.get(first)["seq"]))  # type: ignore[index]  # the fault
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 5})
    dispatcher.run(AGENT, budget_seconds=2)
    assert start_requests.get(second)["state"] == "started"  # type: ignore[index]
    assert stranded() == [first] and agent_queue.read(AGENT).waiting() == 0
    summary = capacity_queue.sweep()
    assert summary["stranded"] == 1 and summary["woken"] == 1 and stranded() == []
    assert agent_queue.read(AGENT).waiting() == 1
    dispatcher.run(AGENT, budget_seconds=2)
    assert start_requests.get(first)["state"] == "started"  # type: ignore[index]
    assert bot_owners(emulator) == [second_user, first_user]
    assert session_store.active_slots(first_user) == session_store.active_slots(second_user) == 1
    assert capacity_queue.sweep()["stranded"] == 0 and agent_queue.read(AGENT).waiting() == 0


def test_a_stale_read_of_a_served_start_gives_no_place_back(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    """The sweep read a start as queued, but it was served (and its place passed) before the sweep acted: the
    place given back is refused by the request's own condition, and the number taken for it is passed."""
    [(_, rid)] = queue_of(gateway, emulator, 1)
    stale = start_requests.get(rid)
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 5})
    dispatcher.run(AGENT, budget_seconds=2)
    assert start_requests.get(rid)["state"] == "started"  # type: ignore[index]
    assert capacity_queue._give_place_back(stale) is False  # type: ignore[arg-type]
    state = agent_queue.read(AGENT)
    assert state.waiting() == 0 and int(start_requests.get(rid)["seq"]) == int(stale["seq"])  # type: ignore[index]
