"""The identity the bot runs with is the one the gateway verified, whatever the client sends through the
session proxy. Counted from the source of truth: the body each emulated bot runs with (the emulator decides it
as Pipecat Cloud's base image does: an offer's non-empty `requestData` replaces the /start body)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway
from tests.integration.test_hostile_input import emulator_proxy_calls
from tests.integration.test_start import assert_error, body
from tests.support import LambdaContext, api_gateway_event

SPOOF = {"user": {"id": "someone-else"}, "role": "admin"}


def webrtc_session(gateway: Gateway, user: str) -> str:
    response = gateway.start(user, {"transport": "webrtc", "body": {"topic": "billing"}})
    assert response.status_code == 200, response.body
    return str(body(response)["sessionId"])


def bot_body(emulator: EmulatorServer, session_id: str) -> Any:
    """What the bot runs with, read from the emulator's own records."""
    sessions = httpx.get(f"{emulator.url}/_emulator/sessions").json()["sessions"]
    [found] = [s for s in sessions if s["sessionId"] == session_id]
    return found["body"]


def offer(gateway: Gateway, user: str, sid: str, raw: bytes, method: str = "POST",
          content_type: str = "application/json") -> Any:
    return gateway.request(method, f"/sessions/{sid}/api/offer", user=user, body=raw,
                           headers={"Content-Type": content_type})


SDP = {"sdp": "v=0\r\n", "type": "offer"}
HOSTILE_OFFERS = {
    "camelCase": json.dumps({**SDP, "requestData": SPOOF}).encode(),
    "snake_case": json.dumps({**SDP, "request_data": SPOOF}).encode(),
    "both": json.dumps({**SDP, "request_data": SPOOF, "requestData": SPOOF}).encode(),
    "escaped key": b'{"sdp": "v=0", "type": "offer", "request\\u0044ata": {"user": {"id": "someone-else"}}}',
    "utf-16": json.dumps({**SDP, "requestData": SPOOF}).encode("utf-16"),
    "nested under a lone surrogate": json.dumps({**SDP, "x": "\ud800", "requestData": SPOOF}).encode(),
}


@pytest.mark.parametrize("raw", HOSTILE_OFFERS.values(), ids=HOSTILE_OFFERS.keys())
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/octet-stream"])
def test_an_offer_cannot_replace_the_verified_body(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                   raw: bytes, content_type: str, tracebacks: list[str]) -> None:
    sid = webrtc_session(gateway, user)
    response = offer(gateway, user, sid, raw, content_type=content_type)
    assert response.status_code == 200, response.body
    assert body(response)["type"] == "answer"
    assert bot_body(emulator, sid) == {"topic": "billing", "user": {"id": user}}
    echoed = gateway.request("GET", f"/sessions/{sid}/echo/body", user=user)
    assert body(echoed) == {"body": {"topic": "billing", "user": {"id": user}}}
    [call] = [c for c in emulator_proxy_calls(emulator) if c["path"] == "api/offer"]
    forwarded = json.loads(base64.b64decode(call["bodyBase64"]))
    assert {k.lower().replace("_", "") for k in forwarded}.isdisjoint({"requestdata"})
    assert forwarded["sdp"] and forwarded["type"] == "offer"  # the rest of the offer is intact
    assert tracebacks == []


def test_a_plain_offer_passes_unchanged_in_meaning(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    sid = webrtc_session(gateway, user)
    sent = {**SDP, "pc_id": "pc-1", "restart_pc": False}
    assert offer(gateway, user, sid, json.dumps(sent).encode()).status_code == 200
    [call] = emulator_proxy_calls(emulator)
    assert json.loads(call["body"]) == sent
    assert bot_body(emulator, sid) == {"topic": "billing", "user": {"id": user}}


@pytest.mark.parametrize("raw", [
    b'{"sdp": "v=0", "type": "offer", "requestData": {}, "requestData": {"user": {"id": "x"}}}',
    b'{"sdp": "v=0", "sdp": "v=1", "type": "offer"}',
    b'[{"requestData": {"user": {"id": "x"}}}]',
    b'{"sdp": "v=0", "type": "offer"',
    b"\xff\xfe\xfa",
], ids=["duplicate requestData", "duplicate sdp", "array", "truncated", "not text"])
def test_an_offer_we_cannot_vet_is_400_and_never_forwarded(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                           raw: bytes, tracebacks: list[str]) -> None:
    sid = webrtc_session(gateway, user)
    assert_error(offer(gateway, user, sid, raw), 400, "invalid_offer")
    assert emulator_proxy_calls(emulator) == [] and tracebacks == []
    assert bot_body(emulator, sid) == {"topic": "billing", "user": {"id": user}}


def test_ice_candidates_lose_client_data_too(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    sid = webrtc_session(gateway, user)
    patch = {"pc_id": "pc-1", "candidates": [{"candidate": "c", "sdp_mid": "0", "sdp_mline_index": 0}],
             "requestData": SPOOF}
    assert offer(gateway, user, sid, json.dumps(patch).encode(), method="PATCH").status_code == 200
    [call] = emulator_proxy_calls(emulator)
    assert "requestData" not in json.loads(call["body"]) and json.loads(call["body"])["pc_id"] == "pc-1"


def test_refuse_policy_answers_422_and_forwards_nothing(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                        configure_stage: Any) -> None:
    configure_stage(PROXY_OFFER_REQUEST_DATA="refuse")
    sid = webrtc_session(gateway, user)
    assert_error(offer(gateway, user, sid, HOSTILE_OFFERS["camelCase"]), 422, "offer_request_data_not_allowed")
    assert emulator_proxy_calls(emulator) == []
    # an empty requestData says nothing: the offer goes through without it
    assert offer(gateway, user, sid, json.dumps({**SDP, "requestData": {}}).encode()).status_code == 200
    assert bot_body(emulator, sid) == {"topic": "billing", "user": {"id": user}}


def test_an_agents_policy_overrides_the_default(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                configure_stage: Any) -> None:
    agents = {"my-agent": {"offer_request_data": "refuse"}, "open-ws": {"transports": ["websocket"],
                                                                        "websocket_auth": "none"}}
    configure_stage(PCC_AGENTS=json.dumps(agents), PROXY_OFFER_REQUEST_DATA="strip")
    sid = webrtc_session(gateway, user)
    assert_error(offer(gateway, user, sid, HOSTILE_OFFERS["snake_case"]), 422, "offer_request_data_not_allowed")


@pytest.mark.parametrize("path", ["bot", "BOT", "ws", "whatsapp", "bot?x=1", "ws/extra", "Whatsapp/"])
@pytest.mark.parametrize("allowed", ["*", "bot,ws,whatsapp,bot/*,ws/*,whatsapp/*,api/*"])
def test_the_base_images_own_routes_are_never_proxied(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                      path: str, allowed: str, configure_stage: Any) -> None:
    configure_stage(PROXY_ALLOWED_PATHS=allowed)
    sid = webrtc_session(gateway, user)
    for method in ("POST", "GET", "PUT"):
        response = gateway.request(method, f"/sessions/{sid}/{path}", user=user, json_body=SPOOF)
        assert response.status_code in (403, 404), (method, response.body)  # 404: a route with a trailing '/'
        if response.status_code == 403:
            assert body(response)["code"] == "path_not_allowed"
    assert emulator_proxy_calls(emulator) == []


@pytest.mark.parametrize("decoded", ["bot", "ws", "whatsapp", "Bot"])
def test_internal_routes_as_api_gateway_delivers_them(app_env: Gateway, emulator: EmulatorServer, user: str,
                                                      decoded: str) -> None:
    """`/sessions/{id}/%62ot` reaches the handler as the decoded path parameter `bot`."""
    sid = webrtc_session(app_env, user)
    event = api_gateway_event("POST", "/sessions/{session_id}/{p1}", {"session_id": sid, "p1": decoded},
                              headers={"Content-Type": "application/json", **app_env.auth(user)},
                              body=json.dumps(SPOOF).encode())
    response = app_env.app(event, LambdaContext())
    assert response["statusCode"] == 403 and json.loads(response["body"])["code"] == "path_not_allowed"
    assert emulator_proxy_calls(emulator) == []


def test_pipecat_clouds_own_headers_never_pass_from_the_client(gateway: Gateway, emulator: EmulatorServer,
                                                               user: str) -> None:
    sid = webrtc_session(gateway, user)
    sent = {"X-Daily-Session-Id": "other", "X-Daily-Room-Url": "https://evil.daily.co/r",
            "X-Daily-Room-Token": "t", "X-Daily-Transport-Type": "daily", "X-PCC-Max-Session-Seconds": "99999",
            "X-Custom": "kept"}
    response = gateway.request("POST", f"/sessions/{sid}/api/offer", user=user, headers=sent,
                               body=json.dumps(SDP).encode())
    assert response.status_code == 200
    [call] = emulator_proxy_calls(emulator)
    assert "x-custom" in call["headers"]
    assert not [h for h in call["headers"] if h.startswith(("x-daily-", "x-pcc-"))], call["headers"]


@pytest.mark.parametrize("key", ["user", "telephony", "dialin_settings", "dialout_settings"])
def test_keys_the_server_sets_are_refused_at_start(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                   key: str) -> None:
    response = gateway.start(user, {"transport": "daily", "body": {key: {"From": "+15551234567"}}})
    assert_error(response, 422, "reserved_body_key")
    assert emulator.org.stats()["startCalls"] == 0
