"""The admin API (docs/operations.md): operators only, by the ADMIN_GROUP token group. Every admin route refuses
everyone else before it reads anything (IDOR probes included); the agent view's counts equal the emulator's; a
maintenance gate closes and opens starts with the operator's message; an admin stops anyone's session."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_start import assert_error, body
from tests.support import new_user, outbox_events

ADMINS = "gateway-admins"



@pytest.fixture()
def ops(gateway: Gateway, configure_stage: Callable[..., None]) -> Gateway:
    configure_stage(ADMIN_GROUP=ADMINS)
    return gateway


def as_admin(gateway: Gateway, method: str, path: str, payload: Any = None, groups: list[str] | None = None,
             user: str = "operator-1") -> Any:
    token = gateway.oidc.token(user, groups=groups if groups is not None else [ADMINS])
    return gateway.request(method, path, json_body=payload, headers={"Authorization": f"Bearer {token}"})


ROUTES = [("GET", "/admin/agents/my-agent", None), ("POST", "/admin/gates",
                                                    {"scope": "organisation", "action": "close"}),
          ("DELETE", "/admin/sessions/{sid}", None)]


def test_everyone_but_an_admin_is_refused_on_every_admin_route(ops: Gateway, emulator: EmulatorServer,
                                                               configure_stage: Callable[..., None]) -> None:
    victim = new_user()
    sid = body(ops.start(victim, {"transport": "daily"}))["sessionId"]
    for method, path, payload in ROUTES:
        path = path.format(sid=sid)
        for groups in ([], ["users"], ["gateway-admins-not"], ["GATEWAY-ADMINS"]):
            assert_error(as_admin(ops, method, path, payload, groups=groups, user=victim), 403, "admin_only")
        assert_error(ops.request(method, path, json_body=payload), 401, "unauthorized")  # no token at all
    assert sid in emulator.org.active_session_ids()  # the owner could not stop it through /admin either
    assert ops.start(new_user(), {"transport": "daily"}).status_code == 200  # no gate was closed
    configure_stage(ADMIN_GROUP="")  # no admin group: nobody is an admin, whatever the token says
    assert_error(as_admin(ops, "GET", "/admin/agents/my-agent"), 403, "admin_only")


def test_the_agent_view_puts_our_counts_beside_pipecat_clouds(ops: Gateway, emulator: EmulatorServer,
                                                              queue: dict[str, Any]) -> None:
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 2})
    before = body(as_admin(ops, "GET", "/admin/agents/my-agent"))["ourActiveSessions"]  # earlier tests' records
    for _ in range(2):
        assert ops.start(new_user(), {"transport": "daily"}).status_code == 200
    queued = [ops.start(new_user(), {"transport": "daily"}) for _ in range(3)]
    assert [q.status_code for q in queued] == [202] * 3
    view = body(as_admin(ops, "GET", "/admin/agents/my-agent"))
    ours = len(emulator.org.active_session_ids("my-agent"))
    assert view["ourActiveSessions"] - before == ours == view["pipecat"]["activeSessionCount"] == 2
    assert view["pipecat"]["autoScaling"]["maxAgents"] == 2
    assert view["queue"]["depth"] == 3 and view["queue"]["headAgeSeconds"] >= 0
    assert view["gates"]["organisation"] == {"closed": False, "reasons": {}}
    assert_error(as_admin(ops, "GET", "/admin/agents/not-ours"), 404, "unknown_agent")


def test_a_maintenance_gate_closes_and_opens_starts_with_the_operators_message(ops: Gateway,
                                                                              emulator: EmulatorServer) -> None:
    close = {"scope": "agent", "agent": "my-agent", "action": "close", "message": "Back at 14:00 UTC"}
    assert body(as_admin(ops, "POST", "/admin/gates", close))["changed"] is True
    assert body(as_admin(ops, "POST", "/admin/gates", close))["changed"] is False  # already closed for it
    calls = emulator.org.start_calls
    refused = ops.start(new_user(), {"transport": "daily"})
    assert_error(refused, 503, "starts_closed")
    assert body(refused)["detail"] == "Back at 14:00 UTC" and emulator.org.start_calls == calls
    assert ops.start(new_user(), {"agent": "open-ws", "transport": "websocket"}).status_code == 200
    view = body(as_admin(ops, "GET", "/admin/agents/my-agent"))
    assert view["gates"]["agent"] == {"closed": True, "reasons": {"maintenance": "Back at 14:00 UTC"}}
    assert body(as_admin(ops, "POST", "/admin/gates", {**close, "action": "open"}))["changed"] is True
    assert ops.start(new_user(), {"transport": "daily"}).status_code == 200
    for bad in ({"scope": "agent", "action": "close"}, {"scope": "world", "action": "close"},
                {"scope": "organisation", "action": "smash"}, {"scope": "organisation", "action": "close", "x": 1}):
        answer = as_admin(ops, "POST", "/admin/gates", bad)
        assert answer.status_code in (404, 422), (bad, answer.status_code)


def test_an_admin_stops_anyones_session(ops: Gateway, emulator: EmulatorServer) -> None:
    user = new_user()
    sid = body(ops.start(user, {"transport": "daily"}))["sessionId"]
    answer = as_admin(ops, "DELETE", f"/admin/sessions/{sid}")
    assert answer.status_code == 200
    data = body(answer)
    assert data["status"] == "stopped" and data["endReason"] == "stopped_by_admin" and data["userId"] == user
    assert sid not in emulator.org.active_session_ids()
    assert body(as_admin(ops, "DELETE", f"/admin/sessions/{sid}"))["status"] == "stopped"  # idempotent
    assert_error(as_admin(ops, "DELETE", "/admin/sessions/no-such-session"), 404, "session_not_found")
    listed = body(ops.request("GET", "/sessions", user=user))["sessions"]
    assert json.dumps(listed).count("stopped_by_admin") == 1  # the owner sees why


def test_a_blocked_user_can_do_nothing_and_their_bots_are_gone(ops: Gateway, emulator: EmulatorServer,
                                                               queue: dict[str, Any]) -> None:
    from chalicelib.store import queued_starts

    user, other = new_user(), new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 1})
    running = body(ops.start(user, {"transport": "daily"}))["sessionId"]
    queued = ops.start(user, {"transport": "daily"})
    assert queued.status_code == 202
    request_id = body(queued)["requestId"]
    first = as_admin(ops, "POST", f"/admin/users/{user}/block", {"reason": "abuse"})
    assert body(first) == {"userId": user, "blocked": True, "changed": True, "sessionsStopped": 1,
                           "startsCancelled": 1}
    assert running not in emulator.org.active_session_ids()
    assert queued_starts.get(request_id).state == "cancelled"  # type: ignore[union-attr]
    for method, path in (("POST", "/start"), ("GET", "/sessions"), ("GET", f"/sessions/{running}"),
                         ("DELETE", f"/sessions/{running}"), ("GET", f"/start/{request_id}"), ("GET", "/usage"),
                         ("GET", "/start"), ("POST", f"/sessions/{running}/api/offer")):
        answer = ops.request(method, path, user=user, json_body={} if method == "POST" else None)
        assert_error(answer, 403, "user_blocked")
    again = body(as_admin(ops, "POST", f"/admin/users/{user}/block"))
    assert again["changed"] is False and again["sessionsStopped"] == again["startsCancelled"] == 0  # exactly once
    assert ops.start(other, {"transport": "daily"}).status_code == 200  # nobody else is affected
    assert body(as_admin(ops, "DELETE", f"/admin/users/{user}/block"))["changed"] is True
    assert ops.request("GET", "/sessions", user=user).status_code == 200
    audit = [(e["data"]["action"], e["data"]["admin"], e["data"].get("changed")) for e in outbox_events(user)
             if e["type"] == "admin.action"]
    assert audit == [("user.block", "operator-1", True), ("user.block", "operator-1", False),
                     ("user.unblock", "operator-1", True)]
    assert [e["data"]["reason"] for e in outbox_events(user) if e["type"] == "session.stopped"] == ["user_blocked"]


def test_an_operators_budget_override_replaces_the_users_limits_until_cleared(
        ops: Gateway, configure_stage: Callable[..., None]) -> None:
    from tests.integration.test_usage import used_before

    configure_stage(ADMIN_GROUP=ADMINS, USER_SECONDS_PER_DAY="100")
    user = new_user()
    used_before(user, 150)
    assert_error(ops.start(user, {"transport": "daily"}), 429, "usage_budget_exceeded")
    assert body(as_admin(ops, "PUT", f"/admin/users/{user}/budget", {"day": 3600, "month": 0}))[
        "budgetOverride"] == {"day": 3600, "month": 0}
    started = ops.start(user, {"transport": "daily"})
    assert started.status_code == 200  # the override lifted this user's day budget
    view = body(as_admin(ops, "GET", f"/admin/users/{user}"))
    assert view["blocked"] is False and view["budgetOverride"] == {"day": 3600, "month": 0}
    assert view["usage"]["day"]["limitSeconds"] == 3600 and view["usage"]["day"]["endedSeconds"] == 150
    assert [s["sessionId"] for s in view["sessions"]] == [body(started)["sessionId"]]
    assert body(as_admin(ops, "DELETE", f"/admin/users/{user}/budget"))["changed"] is True
    assert_error(ops.start(user, {"transport": "daily"}), 429, "usage_budget_exceeded")  # the default again
    for bad in ({"day": -1, "month": 0}, {"day": 10}, {"day": 1, "month": 1, "extra": 1}):
        assert_error(as_admin(ops, "PUT", f"/admin/users/{user}/budget", bad), 422, "validation_error")
    assert_error(ops.request("PUT", f"/admin/users/{user}/budget", user=user, json_body={"day": 0, "month": 0}),
                 403, "admin_only")  # a user cannot lift their own budget


def test_sessions_across_users_page_by_cursor_and_filter_by_agent_and_user(ops: Gateway,
                                                                          emulator: EmulatorServer) -> None:
    users = [new_user() for _ in range(3)]
    mine = {body(ops.start(u, {"transport": "daily"}))["sessionId"]: u for u in users}
    assert ops.start(users[0], {"agent": "open-ws", "transport": "websocket"}).status_code == 200
    seen: dict[str, str] = {}
    cursor: str | None = None
    pages = 0
    while True:  # pages of 7 through every active session (earlier tests' records in this process included)
        query = "/admin/sessions?limit=7" + (f"&cursor={cursor}" if cursor else "")
        page = body(as_admin(ops, "GET", query))
        pages += 1
        assert len(page["sessions"]) <= 7 and pages < 10_000
        seen.update({s["sessionId"]: s["userId"] for s in page["sessions"]})
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert pages >= 1
    assert all(seen.get(sid) == user for sid, user in mine.items())  # every active one, with its owner
    by_agent = body(as_admin(ops, "GET", "/admin/sessions?agent=open-ws&limit=100"))["sessions"]
    assert all(s["agent"] == "open-ws" for s in by_agent)
    by_user = body(as_admin(ops, "GET", f"/admin/sessions?user={users[0]}&status=active"))["sessions"]
    assert len(by_user) == 2 and all(s["userId"] == users[0] for s in by_user)
    assert set(mine) <= emulator.org.active_session_ids()
    assert_error(as_admin(ops, "GET", "/admin/sessions?status=ended"), 422, "validation_error")  # needs a user
    assert_error(as_admin(ops, "GET", "/admin/sessions?cursor=bm90IGEgY3Vyc29y"), 400, "invalid_cursor")
    assert_error(as_admin(ops, "GET", "/admin/sessions?limit=0"), 422, "validation_error")
