"""Per-user usage and budgets (chalicelib/start/budgets.py, chalicelib/store/usage.py): GET /usage matches Pipecat
Cloud's (the emulator's) durations to the second; a user over budget cannot start (429 with the window's reset);
a running session that uses the budget up is stopped by the detect_ended schedule (`session.capped`)."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from typing import Any

import pytest

from chalicelib.platform.dynamo import transact
from chalicelib.sessions.service import end_session
from chalicelib.start import billing
from chalicelib.store import session_records, slots
from chalicelib.upkeep import reconcile
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway
from tests.integration.test_start import assert_error, body
from tests.support import new_user


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def started(gateway: Gateway, user: str, **headers: str) -> str:
    response = gateway.start(user, {"transport": "daily"}, headers=headers or None)
    assert response.status_code == 200, response.body
    return str(response.headers["X-Session-Id"])


def billed(emulator: EmulatorServer, session_id: str) -> int:
    """What Pipecat Cloud says the session ran: its details' endedAt - createdAt, a second begun counting."""
    shown = emulator.org.sessions[session_id].summary("emu-org")
    return math.ceil(_epoch(shown["endedAt"]) - _epoch(shown["createdAt"]))


def used_before(user: str, seconds: int, *, day: bool = True) -> None:
    """`seconds` of sessions this user ran earlier today (`day` False: earlier this month, not today), as their
    ends would have recorded them."""
    now = time.time()
    windows = [f"MONTH#{billing.month_window(now)}"] + ([f"DAY#{billing.day_window(now)}"] if day else [])
    transact([{"Update": {"Key": {"PK": f"USAGE#{user}", "SK": sk}, "UpdateExpression": "ADD seconds :s",
                          "ExpressionAttributeValues": {":s": seconds}}} for sk in windows])


def test_usage_matches_pipecat_clouds_durations_to_the_second(app_env: Gateway, emulator: EmulatorServer) -> None:
    user = new_user()
    stopped, ended, running = (started(app_env, user) for _ in range(3))
    time.sleep(1.1)  # so the sessions have run a second or more (the figures are read, not assumed)
    assert app_env.request("DELETE", f"/sessions/{stopped}", user=user).status_code == 200
    assert emulator.org.end_session(ended)
    assert reconcile.detect_ended()["ended"] >= 1
    report = body(app_env.request("GET", "/usage", user=user))
    expected = billed(emulator, stopped) + billed(emulator, ended)
    assert expected >= 2
    for window in ("day", "month"):
        assert report[window]["endedSeconds"] == expected, report
        assert report[window]["limitSeconds"] is None and report[window]["remainingSeconds"] is None
    assert report["day"]["window"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert report["month"]["window"] == time.strftime("%Y-%m", time.gmtime())
    assert [s["sessionId"] for s in report["activeSessions"]] == [running]
    running_for = report["activeSessions"][0]["runningSeconds"]
    assert 1 <= running_for <= math.ceil(time.time() - _epoch(session_records.get_session(running).created_at))  # type: ignore[union-attr]
    assert report["day"]["usedSeconds"] == expected + running_for
    # ending twice counts once
    assert not end_session(session_records.get_session(stopped), session_records.STOPPED, "x", None)  # type: ignore[arg-type]
    assert body(app_env.request("GET", "/usage", user=user))["day"]["endedSeconds"] == expected


def test_a_user_over_budget_cannot_start_until_the_window_resets(app_env: Gateway, configure_stage: Any,
                                                                  emulator: EmulatorServer) -> None:
    configure_stage(USER_SECONDS_PER_DAY="600", USER_SECONDS_PER_MONTH="5000")
    user, fresh = new_user(), new_user()
    used_before(user, 600)
    before = time.time()
    refused = app_env.start(user, {"transport": "daily"})
    after = time.time()
    assert_error(refused, 429, "usage_budget_exceeded")
    answer = body(refused)
    tomorrow = billing.day_reset(time.time())
    assert answer["window"] == "day" and answer["usedSeconds"] == 600 and answer["limitSeconds"] == 600
    assert answer["resetsAt"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tomorrow))
    retry_after = int(refused.headers["Retry-After"])  # to the reset: asked before it, it points at it
    assert before + retry_after <= tomorrow + 1 and after + retry_after >= tomorrow - 1
    assert slots.active_slots(user) == 0 and emulator.org.started == 0  # nothing taken, nothing started
    started(app_env, fresh)  # another user has budget
    report = body(app_env.request("GET", "/usage", user=user))
    assert report["day"]["remainingSeconds"] == 0 and report["month"]["remainingSeconds"] == 4400
    # the month's budget too: 5000 seconds earlier this month, none today
    other = new_user()
    used_before(other, 5000, day=False)
    month = app_env.start(other, {"transport": "daily"})
    assert_error(month, 429, "usage_budget_exceeded")
    assert body(month)["window"] == "month"


def test_a_tier_from_the_token_replaces_the_default_budget(app_env: Gateway, configure_stage: Any,
                                                           oidc: Any) -> None:
    configure_stage(USER_SECONDS_PER_DAY="60", USAGE_TIERS=json.dumps({"pro": {"day": 0}, "plus": {"day": 120}}))
    user = new_user()
    used_before(user, 90)
    assert_error(app_env.start(user, {"transport": "daily"}), 429, "usage_budget_exceeded")

    def as_member(*groups: str) -> Any:
        token = oidc.token(user, groups=list(groups))
        return app_env.request("POST", "/start", json_body={"transport": "daily"},
                               headers={"Authorization": f"Bearer {token}"})

    assert as_member("plus").status_code == 200  # 120 a day: 90 used
    both = oidc.token(user, groups=["pro", "plus"])
    usage = app_env.request("GET", "/usage", headers={"Authorization": f"Bearer {both}"})
    assert body(usage)["day"]["limitSeconds"] is None  # the most generous tier: unlimited


@pytest.mark.timeout(60)
def test_a_running_session_that_uses_the_budget_up_is_stopped_by_end_detection(
        app_env: Gateway, configure_stage: Any, emulator: EmulatorServer) -> None:
    configure_stage(USER_SECONDS_PER_DAY="100")
    spender, saver = new_user(), new_user()
    used_before(spender, 95)
    sessions = [started(app_env, spender) for _ in range(2)]
    kept = started(app_env, saver)
    assert reconcile.detect_ended()["capped"] == 0  # 95 + a second or two of running: within budget
    later = time.time() + 10  # the sessions have run 10 s more: 95 + 2 x 10 > 100
    summary = reconcile.detect_ended(now=later)
    assert summary["capped"] == 2, summary
    for session_id in sessions:
        record = session_records.get_session(session_id)
        assert record is not None and record.status == "stopped" and record.end_reason == "usage_budget"
        assert emulator.org.sessions[session_id].completion_status == "STOPPED_BY_API"
    assert session_records.get_session(kept).status == "active"  # type: ignore[union-attr]
    assert slots.active_slots(spender) == 0
    # their seconds are Pipecat Cloud's (stopped now, on the real clock: the schedule's `later` was simulated)
    report = body(app_env.request("GET", "/usage", user=spender))
    assert report["day"]["endedSeconds"] == 95 + sum(billed(emulator, s) for s in sessions)
