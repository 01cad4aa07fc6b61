"""One error shape everywhere, costs that do not grow with a user's history, and the smaller holes of issue
#19 (user ids, cursors, per-user limits on the private API, strict SIP URIs)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import boto3
import pytest

from chalicelib.platform import dynamo
from chalicelib.store import session_records
from chalicelib.store.session_records import SessionRecord
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_start import assert_error, body
from tests.integration.test_telephony_abuse import dialout
from tests.support import OidcIssuer, new_user


def count_queries(run: Any) -> tuple[Any, int]:
    calls: list[str] = []

    def on_call(model: Any, **_: Any) -> None:
        if model.name == "Query":
            calls.append(model.name)

    events = dynamo.table().meta.client.meta.events
    events.register("before-call.dynamodb", on_call)
    try:
        result = run()
    finally:
        events.unregister("before-call.dynamodb", on_call)
    return result, len(calls)


def seed_sessions(user: str, ended: int) -> str:
    """One active session (the oldest) and `ended` ended ones after it, written straight to DynamoDB."""
    table = boto3.resource("dynamodb").Table(dynamo.table().name)  # seeding: the resource's batch writer
    active = SessionRecord.new(user_id=user, session_id=f"s-active-{user}", agent="my-agent", transport="daily",
                               ttl_seconds=3600)
    oldest = {**active.to_item(), "GSI1SK": f"2000-01-01T00:00:00.000000Z#{active.session_id}"}
    with table.batch_writer() as batch:
        batch.put_item(Item=oldest)
        for i in range(ended):
            item = SessionRecord.new(user_id=user, session_id=f"s-{i}-{user}", agent="my-agent", transport="daily",
                                     ttl_seconds=3600)
            batch.put_item(Item=replace(item, status=session_records.ENDED).to_item())
    return active.session_id


# ------------------------------------------------------------------ 5. GET /sessions costs O(1) queries
@pytest.mark.parametrize("ended", [151, 400])
def test_listing_active_sessions_costs_a_bounded_number_of_queries(app_env: Gateway, emulator: EmulatorServer,
                                                                   user: str, ended: int) -> None:
    gateway = app_env
    active = seed_sessions(user, ended)
    found: list[str] = []
    cursor: str | None = None
    calls_per_request = []
    for _ in range(10):
        path = "/sessions?status=active&limit=1" + (f"&cursor={cursor}" if cursor else "")
        response, queries = count_queries(lambda p=path: gateway.request("GET", p, user=user))
        assert response.status_code == 200, response.body
        calls_per_request.append(queries)
        data = body(response)
        found += [s["sessionId"] for s in data["sessions"]]
        cursor = data["nextCursor"]
        if not cursor:
            break
    assert found == [active]
    assert max(calls_per_request) <= session_records.LIST_PAGES_PER_CALL, calls_per_request
    assert len(calls_per_request) <= 1 + ended // (session_records.LIST_PAGES_PER_CALL * 100)


def test_an_unfiltered_listing_still_pages_exactly(app_env: Gateway, emulator: EmulatorServer, user: str) -> None:
    gateway = app_env
    seed_sessions(user, 5)
    first = body(gateway.request("GET", "/sessions?limit=4", user=user))
    second = body(gateway.request("GET", f"/sessions?limit=4&cursor={first['nextCursor']}", user=user))
    assert len(first["sessions"]) == 4 and len(second["sessions"]) == 2 and second["nextCursor"] is None
    assert not {s["sessionId"] for s in first["sessions"]} & {s["sessionId"] for s in second["sessions"]}


# ------------------------------------------------------------------ 7. smaller holes
def cursor_of(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.mark.parametrize("change", [{"PK": ""}, {"GSI1SK": ""}, {"GSI1SK": "x" * 1025}, {"SK": "OTHER"},
                                    {"PK": "USER#x"}])
def test_cursors_with_empty_or_oversized_keys_are_400(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                      change: dict[str, str], tracebacks: list[str]) -> None:
    key = {"PK": "SESSION#s1", "SK": "META", "GSI1PK": f"USER#{user}#SESSIONS", "GSI1SK": "2026#s1", **change}
    assert_error(gateway.request("GET", f"/sessions?cursor={cursor_of(key)}", user=user), 400, "invalid_cursor")
    assert_error(gateway.request("GET", "/sessions?cursor=" + "A" * 9000, user=user), 400, "invalid_cursor")
    assert tracebacks == []


@pytest.mark.parametrize("sub", ["alice\n", "alice\r\n", "alice\x00"])
def test_a_user_id_with_a_trailing_newline_is_refused(gateway: Gateway, oidc: OidcIssuer, sub: str) -> None:
    response = gateway.request("POST", "/start", json_body={}, headers={"Authorization": f"Bearer {oidc.token(sub)}"})
    assert_error(response, 401, "unauthorized")


def test_session_details_are_rate_limited_per_user(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                   configure_stage: Any, rate_clock: float) -> None:
    configure_stage(DETAILS_RATE_PER_MINUTE="2")
    sid = gateway.start(user, {"transport": "daily"}).headers["X-Session-Id"]
    answers = [gateway.request("GET", f"/sessions/{sid}", user=user) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert_error(answers[2], 429, "details_rate_limited")
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert gateway.request("GET", f"/sessions/{sid}", user=new_user()).status_code in (404, 200)


HOSTILE_SIP = ["sip:a@pbx.example.com>@evil.example", "sip:pbx.example.com?@evil.example",
               "sip:a@pbx.example.com;maddr=evil.example", "sip:a%40evil.example@pbx.example.com",
               "sip:a@pbx.example.com?X-Header=1", "<sip:a@pbx.example.com>", "sip:a@pbx.example.com:99999",
               "sip:a@pbx.example.com\n"]


def test_sip_uris_are_parsed_strictly(phone: Any, gateway: Gateway, emulator: EmulatorServer, oidc: OidcIssuer,
                                      user: str, tracebacks: list[str]) -> None:
    phone(DIALOUT_ALLOWED_GROUPS="dialers", DIALOUT_ALLOWED_PREFIXES="+1415",
          DIALOUT_ALLOWED_SIP_DOMAINS="pbx.example.com")
    token = oidc.token(user, **{"cognito:groups": ["dialers"]})
    for uri in HOSTILE_SIP:
        response = dialout(gateway, {"sipUri": uri}, token=token)
        assert response.status_code in (403, 422), (uri, response.body)
    # a phone number behind an allowed SIP domain is dialled by the trunk: the prefixes apply to it too
    for premium in ("sip:+19005551234@pbx.example.com", "sip:19005551234@pbx.example.com;user=phone"):
        assert_error(dialout(gateway, {"sipUri": premium}, token=token), 403, "destination_not_allowed")
    assert emulator.org.start_calls == 0
    for good in ("sip:+14155550123@pbx.example.com;user=phone", "sips:desk@PBX.example.com:5061;transport=tls"):
        assert dialout(gateway, {"sipUri": good}, token=token).status_code == 200, good
    assert emulator.org.start_calls == 2 and tracebacks == []


# ------------------------------------------------------------------ 8. one error shape everywhere
def test_pipecat_clouds_own_refusals_of_a_proxied_call_are_detail_and_code(gateway: Gateway,
                                                                          emulator: EmulatorServer,
                                                                          user: str) -> None:
    sid = gateway.start(user, {"transport": "daily"}).headers["X-Session-Id"]
    emulator.org.end_session(sid)
    assert_error(gateway.request("GET", f"/sessions/{sid}/status", user=user), 404, "session_not_found")
    live = gateway.start(user, {"transport": "daily"}).headers["X-Session-Id"]
    emulator_admin(emulator, "agents/my-agent", {"ready": False})
    not_ready = gateway.request("GET", f"/sessions/{live}/status", user=user)
    assert_error(not_ready, 400, "agent_not_ready")
    assert "error" not in body(not_ready)


def test_a_bots_own_error_answers_pass_unchanged(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    sid = gateway.start(user, {"transport": "daily"}).headers["X-Session-Id"]
    for status in (404, 400, 500):
        response = gateway.request("GET", f"/sessions/{sid}/echo/status?s={status}", user=user)
        assert response.status_code == status
        assert body(response) == {"error": "no such thing", "code": "x", "bot": True}


def test_chalices_own_errors_use_snake_case_codes(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    assert_error(gateway.request("POST", "/start", user=user, body=b"x", headers={"Content-Type": "text/plain"}),
                 415, "unsupported_media_type")
    assert_error(gateway.request("PUT", "/start", user=user, json_body={}), 405, "method_not_allowed")


@pytest.mark.parametrize(("path", "name"), [("/sessions?limit=abc", "limit"), ("/sessions?status=nope", "status"),
                                            ("/sessions?limit=0", "limit"), ("/start/req_x?wait=x", "wait")])
def test_a_422_on_a_query_parameter_lists_its_errors(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                     path: str, name: str) -> None:
    response = gateway.request("GET", path, user=user)
    assert_error(response, 422, "validation_error")
    assert body(response)["errors"][0]["loc"] == ["query", name]
