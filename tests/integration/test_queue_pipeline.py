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
from chalicelib.start import dispatcher, queued_start, worker
from chalicelib.store import agent_queue, queued_starts, slots
from chalicelib.upkeep import queue_sweep
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_fair_queue import bot_owners, queued
from tests.support import new_user, wait_for

AGENT = "my-agent"


def stranded() -> list[str]:
    """Requests still waiting whose place the queue has already passed: a 202 nobody would ever serve."""
    state = agent_queue.read(AGENT)
    found = []
    for request in queued_starts.pending():
        if request.state in (queued_starts.QUEUED, queued_starts.STARTING) and (
                int(request.seq or 0) < state.head or request.seq in state.gone):
            found.append(request.request_id)
    return found


def dispatch_until(done: Callable[[], bool], per_run: float = 2, runs: int = 30) -> None:
    """Dispatcher runs of `per_run` seconds until `done()` holds (at most `runs`): a run's time is no promise of
    how much it serves on a loaded machine, so the tests judge what the runs did, not how fast."""
    for _ in range(runs):
        if done():
            return
        worker.run(AGENT, budget_seconds=per_run)


def states(waiting: list[tuple[str, str]]) -> list[str]:
    return [str(queued_starts.get(r).state) for _, r in waiting]  # type: ignore[union-attr]


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
    real, refused = queued_starts.finish_without_session, []

    def finish(request: Any, *args: Any, **kwargs: Any) -> bool:
        if request.request_id == head:
            refused.append(1)
            return False
        return bool(real(request, *args, **kwargs))

    monkeypatch.setattr(queued_starts, "finish_without_session", finish)
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 5})
    dispatch_until(lambda: bool(refused), per_run=1.5)
    assert refused and stranded() == []
    assert queued_starts.get(head).state == "queued"  # type: ignore[union-attr]
    assert queued_starts.get(behind).state == "queued"  # type: ignore[union-attr]  # the order rule: not around it
    monkeypatch.undo()
    dispatch_until(lambda: states([("", head), ("", behind)]) == ["failed", "started"])
    assert queued_starts.get(head).state == "failed"  # type: ignore[union-attr]
    assert queued_starts.get(behind).state == "started"  # type: ignore[union-attr]
    assert stranded() == [] and agent_queue.read(AGENT).waiting() == 0


def test_attempts_overlap_in_queue_order_and_each_request_gets_one_bot(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    """Pipecat Cloud takes 0.4 s to answer each start: the dispatcher has several in flight at once (the emulator
    sees overlapping calls: not one round trip after another), sends them in queue order, and with capacity for
    all, the bots start in queue order."""
    waiting = queue_of(gateway, emulator, 8)
    emulator_admin(emulator, "knobs", {"start_latency_ms": 400})
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 8})
    dispatch_until(lambda: states(waiting) == ["started"] * 8, per_run=10)
    assert states(waiting) == ["started"] * 8
    assert bot_owners(emulator) == [u for u, _ in waiting]  # one bot each, in queue order
    with emulator.org.lock:
        calls = [c for c in emulator.org.start_log if c["status"] == 200]
    overlapping = max(sum(1 for other in calls if other["arrived"] <= c["arrived"] < other["answered"])
                      for c in calls)
    assert overlapping >= 2, calls
    assert stranded() == [] and agent_queue.read(AGENT).waiting() == 0


def test_a_lost_record_while_others_are_in_flight_costs_no_duplicate_and_no_stranded_request(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The bot of the third place exists but recording it fails (DynamoDB refuses the transaction) while the other
    attempts are in flight: that bot is stopped, its request goes back to its place and is served by a later
    attempt; every request ends with exactly one running bot, and the slots match."""
    waiting = queue_of(gateway, emulator, 5)
    third = waiting[2][1]
    real, failed = queued_starts.complete, []

    def complete(request: Any, *args: Any, **kwargs: Any) -> bool:
        if request.request_id == third and not failed:
            failed.append(1)
            raise RuntimeError("DynamoDB refused the transaction")
        return bool(real(request, *args, **kwargs))

    monkeypatch.setattr(queued_starts, "complete", complete)
    emulator_admin(emulator, "knobs", {"start_latency_ms": 200})
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 10})
    dispatch_until(lambda: states(waiting) == ["started"] * 5, per_run=6)
    assert failed == [1]
    records = [queued_starts.get(r) for _, r in waiting]
    assert [r.state for r in records] == ["started"] * 5  # type: ignore[union-attr]
    running = emulator.org.active_session_ids(AGENT)
    assert {str(r.session_id) for r in records} == running  # type: ignore[union-attr]  # the stopped one is gone
    assert len(running) == 5 and sorted(bot_owners(emulator)).count(waiting[2][0]) == 2  # started twice, one stopped
    assert all(slots.active_slots(u) == 1 for u, _ in waiting)
    assert stranded() == [] and agent_queue.read(AGENT).waiting() == 0


def end_run() -> None:
    """Take the running dispatcher's lease from it, as an expired lease taken over would be: its next read of the
    queue sees that, and it stops once its attempts in flight have their answers."""
    dynamo.table().update_item(Key={"PK": f"QUEUE#{AGENT}", "SK": "STATE"},
                               UpdateExpression="SET lease_owner = :o, lease_until = :zero",
                               ExpressionAttributeValues={":o": "the-test", ":zero": 0})


def _refused_then(gateway: Gateway, emulator: EmulatorServer, count: int,
                  then: dict[str, Any]) -> tuple[list[tuple[str, str]], threading.Thread]:
    """`count` starts queued behind a full agent; a dispatcher run (in a thread, returned) is told capacity freed,
    is refused (so it has measured how long Pipecat Cloud takes to refuse), then the emulator is changed (`then`:
    admin path -> body)."""
    waiting = queue_of(gateway, emulator, count)
    with emulator.org.lock:
        emulator.org.start_log.clear()
    runner = threading.Thread(target=worker.run, args=(AGENT,), kwargs={"budget_seconds": 120, "freed": True})
    runner.start()

    def refusals() -> int:
        with emulator.org.lock:
            return sum(1 for c in emulator.org.start_log if c["status"] == 429)

    assert wait_for(lambda: refusals() >= 1), "the dispatcher made no call"
    for path, body_ in then.items():
        emulator_admin(emulator, path, body_)
    return waiting, runner


def test_a_start_slow_to_answer_is_foreseen_as_a_bot_so_the_next_place_goes_before_its_answer(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
        configure_stage: Callable[..., None]) -> None:
    """Pipecat Cloud refuses at once but answers a success only when the bot has started (here: not until the test
    lets the answers go). Once capacity frees, the dispatcher counts an attempt unanswered well past the refusal
    time as a bot and sends the next place then: all 8 bots exist while no answer has come back. Without it,
    pacing waits RETRY_CAP_SECONDS (10 s) between calls once a refusal grew the wait: 8 bots would take 70 s."""
    configure_stage(RETRY_BASE_SECONDS="10", RETRY_CAP_SECONDS="10", DISPATCH_RUN_SECONDS="30")
    waiting, runner = _refused_then(gateway, emulator, 8,
                                    {"hold": {"held": True}, f"agents/{AGENT}": {"max_agents": 8}})
    agent_queue.capacity_freed(AGENT, "test")  # as a stop does: the dispatcher's wait is cut short
    try:
        all_started = wait_for(lambda: emulator.org.started == 8, timeout=45)
        with emulator.org.lock:
            answered = [c for c in emulator.org.start_log if c["status"] == 200]
        assert all_started and answered == [], (emulator.org.started, answered)
    finally:
        emulator_admin(emulator, "hold", {"held": False})
        runner.join()
    dispatch_until(lambda: states(waiting) == ["started"] * 8)  # (the run above may have handed over)
    assert states(waiting) == ["started"] * 8
    assert bot_owners(emulator) == [u for u, _ in waiting] and stranded() == []


def test_starts_slow_for_another_reason_are_foreseen_a_bounded_number_of_times(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
        configure_stage: Callable[..., None]) -> None:
    """Pipecat Cloud hangs (no bot; the connections drop only when the test lets them): the slow attempts look like
    bots starting, but at most FORESEEN_MAX of them are counted so beyond the bots confirmed, so while every call
    hangs the dispatcher stops calling however long it lasts (no flood: 40 places wait), and once one ends in an
    error the run paces on answers only. Nothing lost: every request is still waiting, none started.
    DISPATCH_CALLS_PER_SECOND 2 keeps the calls pacing sends before foresight counts them to a few."""
    configure_stage(RETRY_BASE_SECONDS="1", RETRY_CAP_SECONDS="1", DISPATCH_RUN_SECONDS="30",
                    DISPATCH_CALLS_PER_SECOND="2")
    hang = {"when": "before", "kind": "hang", "until": "released"}
    waiting, runner = _refused_then(gateway, emulator, 40, {"hold": {"held": True}, "faults": {"start": [hang] * 60}})

    def hung() -> int:
        with emulator.org.lock:
            return 60 - len(emulator.org.start_faults)

    try:
        assert wait_for(lambda: hung() >= dispatcher.FORESEEN_MAX), hung()
        # a flood would pass the bound within a few seconds; with the guard nothing more is sent, however long
        # this waits (so on a slow machine it only waits in vain)
        wait_for(lambda: hung() > dispatcher.FORESEEN_MAX + 8, timeout=10)
        while_hung = hung()
    finally:
        emulator_admin(emulator, "hold", {"held": False})
        end_run()
        runner.join()
    assert dispatcher.FORESEEN_MAX <= while_hung <= dispatcher.FORESEEN_MAX + 8, while_hung
    assert {queued_starts.get(r).state for _, r in waiting} == {"queued"}  # type: ignore[union-attr]
    assert emulator.org.started == 0 and stranded() == []


def test_a_queued_start_whose_place_was_passed_gets_a_place_back_and_is_served(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    """The guard for issue #23's rare unserved 202: should the queue ever pass a place whose request still waits
    (it must not), the reconcile schedule's sweep gives that start a new place at the tail and wakes the
    dispatcher, which serves it: one bot, its slot still held once, nothing stranded. Before, it waited unserved
    until its deadline (the queue looked empty, so nothing woke a dispatcher for it)."""
    (first_user, first), (second_user, second) = queue_of(gateway, emulator, 2)
    agent_queue.mark_gone(AGENT, int(queued_starts.get(first).seq))  # type: ignore[union-attr]  # the fault
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 5})
    dispatch_until(lambda: states([("", second)]) == ["started"])
    assert queued_starts.get(second).state == "started"  # type: ignore[union-attr]
    assert stranded() == [first] and agent_queue.read(AGENT).waiting() == 0
    summary = queue_sweep.sweep()
    assert summary["stranded"] == 1 and summary["woken"] == 1 and stranded() == []
    assert agent_queue.read(AGENT).waiting() == 1
    dispatch_until(lambda: states([("", first)]) == ["started"])
    assert queued_starts.get(first).state == "started"  # type: ignore[union-attr]
    assert bot_owners(emulator) == [second_user, first_user]
    assert slots.active_slots(first_user) == slots.active_slots(second_user) == 1
    assert queue_sweep.sweep()["stranded"] == 0 and agent_queue.read(AGENT).waiting() == 0


def test_a_stale_read_of_a_served_start_gives_no_place_back(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    """The sweep read a start as queued, but it was served (and its place passed) before the sweep acted: the
    place given back is refused by the request's own condition, and the number taken for it is passed."""
    [(_, rid)] = queue_of(gateway, emulator, 1)
    stale = queued_starts.get(rid)
    emulator_admin(emulator, f"agents/{AGENT}", {"max_agents": 5})
    dispatch_until(lambda: states([("", rid)]) == ["started"])
    assert queued_starts.get(rid).state == "started"  # type: ignore[union-attr]
    assert queued_start.give_place_back(stale) is False  # type: ignore[arg-type]
    state = agent_queue.read(AGENT)
    assert state.waiting() == 0 and int(queued_starts.get(rid).seq) == int(stale.seq)  # type: ignore[union-attr]
