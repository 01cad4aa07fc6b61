"""Session lifecycle: list, details, stop, the session API proxy, WebRTC offer, reconciliation."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from chalicelib.platform import dynamo
from chalicelib.store import session_records, slots
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_start import assert_error, body
from tests.support import new_user


def started(gateway: Gateway, user: str, transport: str = "daily") -> str:
    response = gateway.start(user, {"transport": transport})
    assert response.status_code == 200, response.body
    return str(response.headers["X-Session-Id"])


def proxy_calls(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return list(httpx.get(f"{emulator.url}/_emulator/proxy-calls").json())


# ------------------------------------------------------------------ list
def test_list_is_newest_first_paginated_and_filtered(gateway: Gateway, user: str,
                                                     configure_stage: Any) -> None:
    configure_stage(USER_SESSION_LIMIT="10")
    ids = [started(gateway, user) for _ in range(5)]
    started(gateway, new_user())  # someone else's
    assert gateway.request("DELETE", f"/sessions/{ids[0]}", user=user).status_code == 200

    first = body(gateway.request("GET", "/sessions?limit=2", user=user))
    assert [s["sessionId"] for s in first["sessions"]] == [ids[4], ids[3]]
    assert first["nextCursor"]
    rest: list[str] = []
    cursor = first["nextCursor"]
    while cursor:
        page = body(gateway.request("GET", f"/sessions?limit=2&cursor={cursor}", user=user))
        rest += [s["sessionId"] for s in page["sessions"]]
        cursor = page["nextCursor"]
    assert rest == [ids[2], ids[1], ids[0]]

    active = body(gateway.request("GET", "/sessions?status=active", user=user))["sessions"]
    assert [s["sessionId"] for s in active] == ids[:0:-1]
    stopped = body(gateway.request("GET", "/sessions?status=stopped", user=user))["sessions"]
    assert [(s["sessionId"], s["status"]) for s in stopped] == [(ids[0], "stopped")]
    assert set(active[0]) >= {"sessionId", "agent", "transport", "status", "createdAt"}


def test_list_rejects_bad_parameters_and_foreign_cursors(gateway: Gateway, user: str) -> None:
    weird = gateway.request("GET", "/sessions?status=weird", user=user)
    assert_error(weird, 422, "validation_error")
    assert "must be one of ['active', 'ended', 'stopped']" in body(weird)["detail"]  # the values, not enum reprs
    assert_error(gateway.request("GET", "/sessions?limit=0", user=user), 422, "validation_error")
    assert_error(gateway.request("GET", "/sessions?cursor=%%%", user=user), 400, "invalid_cursor")
    other = new_user()
    for _ in range(3):
        started(gateway, other)
    cursor = body(gateway.request("GET", "/sessions?limit=1", user=other))["nextCursor"]
    assert_error(gateway.request("GET", f"/sessions?cursor={cursor}", user=user), 400, "invalid_cursor")
    assert_error(gateway.request("GET", "/sessions"), 401, "unauthorized")


# ------------------------------------------------------------------ details
def test_details_merge_our_record_and_pipecat(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    sid = started(gateway, user)
    data = body(gateway.request("GET", f"/sessions/{sid}", user=user))
    assert data["sessionId"] == sid and data["status"] == "active"
    assert data["pipecat"]["endedAt"] is None
    assert "resourceMetrics" in data["pipecat"] and "coldStart" in data["pipecat"]
    emulator_admin(emulator, f"sessions/{sid}/end", {"status": "HTTP_COMPLETED"})
    ended = body(gateway.request("GET", f"/sessions/{sid}", user=user))
    assert ended["pipecat"]["completionStatus"] == "HTTP_COMPLETED"
    assert ended["status"] == "ended"  # our record followed, and the slot is free again
    assert slots.active_slots(user) == 0


def test_details_without_pipecat_still_answer(gateway: Gateway, user: str, configure_stage: Any) -> None:
    sid = started(gateway, user)
    configure_stage(PCC_API_URL="http://127.0.0.1:9")
    data = body(gateway.request("GET", f"/sessions/{sid}", user=user))
    assert data["sessionId"] == sid and data["pipecat"] is None


# ------------------------------------------------------------------ stop
def test_stop_is_idempotent_and_frees_the_slot(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    sid = started(gateway, user)
    first = gateway.request("DELETE", f"/sessions/{sid}", user=user)
    assert first.status_code == 200 and body(first)["status"] == "stopped"
    assert emulator.org.sessions[sid].completion_status == "STOPPED_BY_API"
    again = gateway.request("DELETE", f"/sessions/{sid}", user=user)
    assert again.status_code == 200 and body(again)["status"] == "stopped"
    assert slots.active_slots(user) == 0


def test_stopping_a_session_that_already_ended_at_pipecat(gateway: Gateway, emulator: EmulatorServer,
                                                          user: str) -> None:
    sid = started(gateway, user)
    emulator.org.sessions.pop(sid)  # Pipecat Cloud no longer knows it: 404 on DELETE
    response = gateway.request("DELETE", f"/sessions/{sid}", user=user)
    assert response.status_code == 200 and body(response)["status"] == "stopped"


# ------------------------------------------------------------------ owner checks
def test_other_users_sessions_are_404_on_every_route(gateway: Gateway, emulator: EmulatorServer,
                                                     user: str) -> None:
    sid = started(gateway, user)
    intruder = new_user()
    for method, path in [("GET", f"/sessions/{sid}"), ("DELETE", f"/sessions/{sid}"),
                         ("GET", f"/sessions/{sid}/status"), ("POST", f"/sessions/{sid}/api/offer"),
                         ("PATCH", f"/sessions/{sid}/api/offer"), ("PUT", f"/sessions/{sid}/a/b/c")]:
        response = gateway.request(method, path, user=intruder, json_body={})
        assert_error(response, 404, "session_not_found")
        unknown = gateway.request(method, path.replace(sid, "00000000-0000-0000-0000-000000000000"),
                                  user=intruder, json_body={})
        assert unknown.body == response.body  # indistinguishable from a missing session
    assert emulator.org.sessions[sid].active
    assert proxy_calls(emulator) == []


# ------------------------------------------------------------------ proxy
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
def test_proxy_forwards_each_method_with_header_rules(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                      method: str) -> None:
    sid = started(gateway, user)
    response = gateway.request(method, f"/sessions/{sid}/app/state/deep?x=1&x=2&y=z", user=user,
                               body=b'{"hello": "bot"}' if method in ("POST", "PUT", "PATCH") else b"",
                               headers={"X-Custom": "kept", "Idempotency-Key": "ours", "X-Dev-User": "ours"})
    assert response.status_code == 200
    assert response.headers["x-echo-bot"] == "1"  # the bot's own headers come back
    [call] = proxy_calls(emulator)
    assert call["method"] == method and call["path"] == "app/state/deep"
    assert call["query"] == "x=1&x=2&y=z"
    assert call["headers"]["x-custom"] == "kept"
    for dropped in ("authorization", "host", "content-length", "idempotency-key", "x-dev-user"):
        assert dropped not in call["headers"]
    if method in ("POST", "PUT", "PATCH"):
        assert call["body"] == '{"hello": "bot"}'
    if method == "HEAD":
        assert response.body == b""
    else:
        assert json.loads(response.body)["path"] == "app/state/deep"


def test_proxy_depth_limits_allow_list_and_size(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                configure_stage: Any) -> None:
    configure_stage(PROXY_ALLOWED_PATHS="api/*,status", PROXY_MAX_BODY_BYTES="100")
    sid = started(gateway, user)
    assert gateway.request("GET", f"/sessions/{sid}/status", user=user).status_code == 200
    assert gateway.request("GET", f"/sessions/{sid}/api/x/y/z", user=user).status_code == 200
    assert_error(gateway.request("GET", f"/sessions/{sid}/admin", user=user), 403, "path_not_allowed")
    assert_error(gateway.request("POST", f"/sessions/{sid}/api/offer", user=user, body=b"x" * 101), 413,
                 "request_too_large")
    assert [c["path"] for c in proxy_calls(emulator)] == ["status", "api/x/y/z"]


def test_proxy_to_an_ended_session_passes_pipecat_404(gateway: Gateway, emulator: EmulatorServer,
                                                      user: str) -> None:
    sid = started(gateway, user)
    emulator_admin(emulator, f"sessions/{sid}/end")
    response = gateway.request("GET", f"/sessions/{sid}/status", user=user)
    assert response.status_code == 404


def test_proxy_preflight_needs_no_auth_and_allows_methods(gateway: Gateway, user: str) -> None:
    sid = started(gateway, user)
    response = gateway.client.http._local_gateway.handle_request(
        method="OPTIONS", path=f"/sessions/{sid}/api/offer", body=b"",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"})
    assert response["statusCode"] == 200
    assert "PATCH" in response["headers"]["Access-Control-Allow-Methods"]
    assert "Authorization" in response["headers"]["Access-Control-Allow-Headers"]


def test_proxy_preflight_allows_the_headers_the_proxy_forwards_and_no_others(gateway: Gateway, user: str) -> None:
    sid = started(gateway, user)
    response = gateway.client.http._local_gateway.handle_request(
        method="OPTIONS", path=f"/sessions/{sid}/api/offer", body=b"",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,x-bot-mode,range,cache-control,cookie,"
                                                   "x-forwarded-for,x-daily-room-url"})
    allowed = {h.strip().lower() for h in response["headers"]["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "x-bot-mode", "range", "cache-control", "x-dev-groups"} <= allowed
    assert not allowed & {"cookie", "x-forwarded-for", "x-daily-room-url"}


def test_smallwebrtc_offer_flow_like_client_js(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    """client-js replaces `/start` in the start URL with `/sessions/{id}/api/offer`, same headers."""
    auth = gateway.auth(user)
    start = gateway.client.http.request("POST", "/start", headers={**auth, "Content-Type": "application/json"},
                                        body=json.dumps({"transport": "webrtc"}).encode())
    data = body(start)
    offer_url = "/start".replace("/start", f"/sessions/{data['sessionId']}/api/offer", 1)
    answer = gateway.client.http.request(
        "POST", offer_url, headers={**auth, "Content-Type": "application/json"},
        body=json.dumps({"sdp": "v=0...", "type": "offer", "pc_id": None}).encode())
    assert answer.status_code == 200
    assert body(answer)["type"] == "answer"
    patch = gateway.client.http.request(
        "PATCH", offer_url, headers={**auth, "Content-Type": "application/json"},
        body=json.dumps({"pc_id": body(answer)["pc_id"], "candidates": [{"candidate": "c"}]}).encode())
    assert patch.status_code == 200
    assert [c["method"] for c in proxy_calls(emulator)] == ["POST", "PATCH"]


def test_our_wait_parameter_never_reaches_the_bot(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    """Following docs/capacity-queue.md's `/start?wait=5`, client-js derives `.../api/offer?wait=5`: the gateway's own
    parameter is dropped, the bot's parameters pass."""
    auth = {**gateway.auth(user), "Content-Type": "application/json"}
    start_url = "/start?wait=5"
    data = body(gateway.client.http.request("POST", start_url, headers=auth,
                                            body=json.dumps({"transport": "webrtc"}).encode()))
    offer_url = start_url.replace("/start", f"/sessions/{data['sessionId']}/api/offer", 1)
    for method in ("POST", "PATCH"):
        sent = gateway.client.http.request(method, offer_url, headers=auth,
                                           body=json.dumps({"sdp": "v=0", "type": "offer", "pc_id": "pc-1"}).encode())
        assert sent.status_code == 200, sent.body
    assert gateway.request("GET", f"/sessions/{data['sessionId']}/status?wait=1&mine=2", user=user).status_code == 200
    assert [c["query"] for c in proxy_calls(emulator)] == ["", "", "mine=2"]


# ------------------------------------------------------------------ reconciliation
def test_reconciliation_frees_slot_after_emulator_ends_session(gateway: Gateway, emulator: EmulatorServer,
                                                               user: str) -> None:
    ids = [started(gateway, user) for _ in range(3)]
    assert_error(gateway.start(user, {}), 429, "user_session_limit")
    emulator_admin(emulator, f"sessions/{ids[1]}/end", {"status": "WS_CONNECTION_CLOSED"})
    event = gateway.client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                    detail={}, resources=[])
    result = gateway.client.lambda_.invoke("reconcile_sessions", event)
    assert result.payload["ended"] >= 1
    record = session_records.get_session(ids[1])
    assert record is not None
    assert record.status == "ended" and record.end_reason == "WS_CONNECTION_CLOSED"
    assert session_records.get_session(ids[0]).status == "active"  # type: ignore[index]
    assert gateway.start(user, {}).status_code == 200  # the slot was freed


def test_reconciliation_stops_sessions_past_the_hard_cap(app_env: Gateway, emulator: EmulatorServer,
                                                         user: str) -> None:
    import time

    from chalicelib.upkeep import reconcile

    sid = started(app_env, user)
    young = started(app_env, new_user())
    summary = reconcile.run(now=time.time() + 7200 + 60)
    assert summary["stopped"] >= 1
    assert emulator.org.sessions[sid].completion_status == "STOPPED_BY_API"
    assert session_records.get_session(sid).status == "stopped"  # type: ignore[union-attr]
    assert summary["stopped"] == 2 and emulator.org.sessions[young].completion_status == "STOPPED_BY_API"
    assert reconcile.run()["checked"] == 0  # nothing active is left to check


def test_reconciliation_heals_a_drifted_slot_counter(app_env: Gateway, emulator: EmulatorServer,
                                                     user: str) -> None:
    import time

    from chalicelib.upkeep import reconcile

    started(app_env, user)
    for _ in range(2):  # counted up with nothing that holds the slot (drift): only healing gives it back
        dynamo.table().update_item(Key={"PK": f"USER#{user}", "SK": "ACTIVE_SESSIONS"},
                                          UpdateExpression="ADD active :one", ExpressionAttributeValues={":one": 1})
    assert slots.active_slots(user) == 3
    assert_error(app_env.start(user, {}), 429, "user_session_limit")
    assert reconcile.run()["slots_healed"] == 0  # too recent: a start may still be in flight
    summary = reconcile.run(now=time.time() + 3600)
    assert summary["slots_healed"] >= 1
    assert slots.active_slots(user) == 1  # the one real active session
    assert app_env.start(user, {}).status_code == 200
