"""Orphans: Pipecat Cloud created the bot, then the answer was lost (a 502, a reset, a hang). The bot runs
with no record of ours; the orphan sweeper (on the reconcile schedule) stops it after the grace period.
Bots are counted from the emulator, the source of truth, not from the gateway's answers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from chalicelib.store import queued_starts, session_records
from chalicelib.upkeep import orphans
from infra.pcc_emulator import EmulatorServer
from infra.sqs_poller import scheduled_event
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_capacity_queue import drain
from tests.support import new_user

GRACE = 300


def later() -> float:
    return time.time() + GRACE + 5


def recorded(session_ids: set[str]) -> set[str]:
    return {sid for sid in session_ids if session_records.get_session(sid) is not None}


@pytest.mark.parametrize(("fault", "status"), [
    ({"when": "after", "kind": "502"}, 502),
    ({"when": "after", "kind": "reset"}, 502),
    ({"when": "after", "kind": "hang", "seconds": 2.5}, 504),
])
def test_a_bot_whose_answer_was_lost_is_stopped_after_the_grace(
        app_env: Gateway, emulator: EmulatorServer, configure_stage: Any, fault: dict[str, Any], status: int) -> None:
    configure_stage(PCC_READ_TIMEOUT="1")
    keeper = app_env.start(new_user(), {"transport": "daily"})  # a recorded bot: must survive every sweep
    assert keeper.status_code == 200
    emulator_admin(emulator, "faults", {"start": [fault]})
    user = new_user()
    lost = app_env.start(user, {"transport": "daily"})
    assert lost.status_code == status, lost.body
    active = emulator.org.active_session_ids()
    assert len(active) == 2 and len(recorded(active)) == 1  # one orphan, billed and unrecorded
    assert orphans.sweep()["orphans_found"] == 0  # inside the grace: it could still be recorded
    summary = orphans.sweep(now=later())
    assert summary["orphans_found"] == summary["orphans_stopped"] == 1
    assert emulator.org.active_session_ids() == {keeper.headers["X-Session-Id"]}
    assert orphans.sweep(now=later())["orphans_found"] == 0  # one sweep was enough


def test_a_queued_start_whose_attempt_lost_its_answer_ends_with_one_bot(
        app_env: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    user = new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    queued = app_env.start(user, {"transport": "daily"})
    assert queued.status_code == 202
    request_id = json.loads(queued.body)["requestId"]
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    emulator_admin(emulator, "faults", {"start": [{"when": "after", "kind": "502"}]})
    drain(app_env, queue, until=lambda: queued_starts.get(request_id).state == "started")  # type: ignore[union-attr]
    served_by = queued_starts.get(request_id).session_id  # type: ignore[union-attr]
    assert len(emulator.org.active_session_ids()) == 2  # the lost attempt's bot and the served one
    orphans.sweep(now=later())
    assert emulator.org.active_session_ids() == {served_by}  # the request is served by exactly one bot


def test_report_mode_and_report_only_agents_stop_nothing(app_env: Gateway, emulator: EmulatorServer,
                                                         configure_stage: Any) -> None:
    emulator_admin(emulator, "faults", {"start": [{"when": "after", "kind": "502"}] * 2})
    configure_stage(ORPHAN_SWEEP="report")
    assert app_env.start(new_user(), {"transport": "daily"}).status_code == 502
    summary = orphans.sweep(now=later())
    assert summary == {"orphans_found": 1, "orphans_stopped": 0, "orphan_errors": 0}
    configure_stage(ORPHAN_SWEEP="stop", ORPHAN_REPORT_ONLY_AGENTS="my-agent")
    assert orphans.sweep(now=later())["orphans_stopped"] == 0
    # static telephony: the provider's stream starts bots we never record, so that agent is report-only
    configure_stage(ORPHAN_REPORT_ONLY_AGENTS="", TELEPHONY_PUBLIC_BASE_URL="https://gw.example.com/api",
                    TELEPHONY_WEBSOCKET_AUTH="none")
    assert orphans.sweep(now=later())["orphans_stopped"] == 0
    assert len(emulator.org.active_session_ids()) == 1
    configure_stage(TELEPHONY_WEBSOCKET_AUTH="token")
    assert orphans.sweep(now=later())["orphans_stopped"] == 1


class LaterClock:
    """The orphan sweeper's clock, GRACE + 5 s ahead: its bound is judged without waiting for it."""

    @staticmethod
    def time() -> float:
        return later()


def test_an_sqs_outage_does_not_stop_the_orphan_sweep(app_env: Gateway, emulator: EmulatorServer,
                                                      queue: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A start waits in the queue with no dispatcher running, and SQS is gone: the schedule's queue step fails
    (it sends the wake-up), and the orphan sweep in the same run still stops the bot nobody recorded."""
    emulator_admin(emulator, "faults", {"start": [{"when": "after", "kind": "502"}]})
    assert app_env.start(new_user(), {"transport": "daily"}).status_code == 502  # an orphan: billed, unrecorded
    [orphan] = emulator.org.active_session_ids()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 1})
    waiting = app_env.start(new_user(), {"transport": "daily"})
    assert waiting.status_code == 202, waiting.body  # queued behind the orphan's instance
    queue["sqs"].delete_queue(QueueUrl=queue["url"])  # the outage
    monkeypatch.setattr(orphans, "time", LaterClock)
    try:
        summary = app_env.app.handler_map["reconcile_sessions"](scheduled_event("reconcile_sessions"), None)
    finally:
        queue["sqs"].create_queue(QueueName=queue["url"].rsplit("/", 1)[-1])  # back, for the fixture's clean-up
    assert summary["queue_failed"] == 1  # the queue step could not send its wake-up...
    assert summary["orphans_stopped"] == 1 and orphan not in emulator.org.active_session_ids()  # ...the sweep ran
    assert "intents_recovered" in summary  # and recovery after it


def test_a_failed_orphan_sweep_skips_slot_recovery_and_nothing_else(app_env: Gateway, emulator: EmulatorServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.store import intents
    from chalicelib.upkeep import reconcile, schedule

    def sweep_fails(now: float | None = None) -> dict[str, int]:
        raise RuntimeError("Pipecat Cloud's private API is down")

    recovered: list[int] = []
    monkeypatch.setattr(orphans, "sweep", sweep_fails)
    monkeypatch.setattr(intents, "recover", lambda grace, now=None: recovered.append(grace) or 0)
    ran: list[str] = []
    monkeypatch.setattr(reconcile, "run", lambda: ran.append("reconcile") or {"checked": 0})
    summary = schedule.run()
    assert ran == ["reconcile"] and summary["orphans_failed"] == 1
    assert summary["intents_skipped"] == 1 and recovered == []  # a slot whose bot may run is not freed
