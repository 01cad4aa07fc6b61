"""Telephony webhooks, signed with each provider's real algorithm (twilio's RequestValidator and plivo's
SDK as oracles, Ed25519 via cryptography); the XML answers are parsed and checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from plivo.utils import signature_v3 as plivo_sdk
from twilio.request_validator import RequestValidator

from chalicelib.store import session_records, slots
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_start import assert_error, body

BASE = "https://gw.example.com/api"
TWILIO_TOKEN = "twilio-auth-token-123"
PLIVO_TOKEN = "plivo-auth-token-456"
DAILY_SECRET = base64.b64encode(b"daily-pinless-secret-bytes").decode()
TELNYX_KEY = Ed25519PrivateKey.generate()
TELNYX_PUBLIC = base64.b64encode(TELNYX_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
DIALOUT_KEY = "server-to-server-key"
OWNER = "svc#telephony"  # the telephony principal's namespace: no token's sub can be this


@pytest.fixture()
def phone(gateway: Gateway, stack: dict[str, Any], configure_stage: Callable[..., None],
          emulator: EmulatorServer) -> Iterator[Callable[..., None]]:
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    original = secrets.get_secret_value(SecretId=name)["SecretString"]
    value = {**json.loads(original), "twilio_auth_token": TWILIO_TOKEN, "plivo_auth_token": PLIVO_TOKEN,
             "telnyx_public_key": TELNYX_PUBLIC, "daily_pinless_secret": DAILY_SECRET,
             "dialout_api_key": DIALOUT_KEY}
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps(value))

    def configure(**env: str) -> None:
        configure_stage(TELEPHONY_PUBLIC_BASE_URL=BASE, PCC_ORG="emu-org", TELEPHONY_HOLD_ATTEMPTS="2",
                        DAILY_DIALIN_RETRY_SECONDS="0.2", **env)

    configure()
    yield configure
    secrets.put_secret_value(SecretId=name, SecretString=original)


def form_request(gateway: Gateway, path: str, params: dict[str, str], headers: dict[str, str],
                 method: str = "POST") -> Any:
    data = urlencode(params).encode() if method == "POST" else b""
    sent = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    return gateway.client.http.request(method, path, headers=sent, body=data)


def twilio_call(gateway: Gateway, params: dict[str, str], query: str = "", signature: str | None = None) -> Any:
    url = f"{BASE}/telephony/twilio" + (f"?{query}" if query else "")
    sig = signature if signature is not None else RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    return form_request(gateway, "/telephony/twilio" + (f"?{query}" if query else ""), params,
                        {"X-Twilio-Signature": sig})


def parse(response: Any) -> ET.Element:
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/xml"
    return ET.fromstring(response.body)


def new_call() -> dict[str, str]:
    """A call with its own CallSid (dedupe records outlive a test)."""
    return {"CallSid": f"CA{uuid.uuid4().hex}", "AccountSid": "AC1", "From": "+15550001111",
            "To": "+15550002222", "CallStatus": "ringing", "Direction": "inbound"}


# ------------------------------------------------------------------ Twilio
def test_twilio_static_stream_with_service_host_parameter(phone: Any, gateway: Gateway,
                                                          emulator: EmulatorServer) -> None:
    CALL = new_call()
    root = parse(twilio_call(gateway, {**CALL, "From": "+1555<&>\"'"}))
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://api.pipecat.daily.co/ws/twilio"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["_pipecatCloudServiceHost"] == "my-agent.emu-org"
    assert params["From"] == "+1555<&>\"'"  # escaped in the XML, intact once parsed
    assert params["CallId"] == CALL["CallSid"]
    assert emulator.org.start_calls == 0  # static mode: the stream itself starts the bot


def test_twilio_token_mode_starts_session_records_it_and_dedupes(phone: Any, gateway: Gateway,
                                                                 emulator: EmulatorServer) -> None:
    CALL = new_call()
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    first = parse(twilio_call(gateway, CALL))
    url = first.find("./Connect/Stream").get("url")  # type: ignore[union-attr]
    assert url.startswith(f"ws://{urlsplit(emulator.url).netloc}/ws/my-agent/")
    assert "?" not in url  # Twilio drops query strings
    [session] = emulator.org.sessions.values()
    assert session.transport == "websocket"
    assert session.body["telephony"] == {"provider": "twilio", "call_id": CALL["CallSid"], "from": CALL["From"],
                                         "to": CALL["To"]}
    assert session.body["user"] == {"id": OWNER}
    record = session_records.get_session(session.session_id)
    assert record is not None and record.user_id == OWNER and record.call_id == CALL["CallSid"]
    replay = parse(twilio_call(gateway, CALL))  # Twilio retries the same webhook
    assert replay.find("./Connect/Stream").get("url") == url  # type: ignore[union-attr]
    assert emulator.org.start_calls == 1


def test_twilio_forged_or_missing_signature_is_403(phone: Any, gateway: Gateway,
                                                   emulator: EmulatorServer) -> None:
    CALL = new_call()
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    assert_error(twilio_call(gateway, CALL, signature="bm9wZQ=="), 403, "invalid_signature")
    assert_error(twilio_call(gateway, CALL, signature=""), 403, "invalid_signature")
    signed_for_other_host = RequestValidator(TWILIO_TOKEN).compute_signature(
        "https://evil.example/api/telephony/twilio", CALL)
    assert_error(twilio_call(gateway, CALL, signature=signed_for_other_host), 403, "invalid_signature")
    tampered = form_request(gateway, "/telephony/twilio", {**CALL, "From": "+1999"},
                            {"X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(
                                f"{BASE}/telephony/twilio", CALL)})
    assert_error(tampered, 403, "invalid_signature")
    assert emulator.org.start_calls == 0


def test_twilio_missing_credential_fails_closed(gateway: Gateway, stack: dict[str, Any],
                                                configure_stage: Callable[..., None]) -> None:
    CALL = new_call()
    configure_stage(TELEPHONY_PUBLIC_BASE_URL=BASE)  # the secret has no twilio_auth_token
    assert_error(twilio_call(gateway, CALL), 403, "invalid_signature")


def test_twilio_hold_loop_at_capacity_then_connects_or_hangs_up(phone: Any, gateway: Gateway,
                                                                 emulator: EmulatorServer) -> None:
    CALL = new_call()
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    held = slots.active_slots(OWNER)
    root = parse(twilio_call(gateway, CALL))
    assert root.find("Say") is not None and root.find("Pause") is not None
    redirect = root.find("Redirect").text  # type: ignore[union-attr]
    query = dict(parse_qsl(urlsplit(redirect).query))
    assert redirect.startswith(f"{BASE}/telephony/twilio?") and query["attempt"] == "1"
    # a caller cannot reset the counter: a forged hold token is refused even with a valid Twilio signature
    forged = urlencode({"attempt": "0", "hold": "0" * 32})
    assert_error(twilio_call(gateway, CALL, query=forged), 403, "invalid_signature")
    # Twilio follows the redirect (signed over the full URL): still full -> attempt 2 -> apology
    second = parse(twilio_call(gateway, CALL, query=urlsplit(redirect).query))
    redirect2 = second.find("Redirect").text  # type: ignore[union-attr]
    final = parse(twilio_call(gateway, CALL, query=urlsplit(redirect2).query))
    assert final.find("Hangup") is not None and final.find("Say") is not None
    assert slots.active_slots(OWNER) == held
    # capacity frees: the next redirect connects
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    connected = parse(twilio_call(gateway, CALL, query=urlsplit(redirect).query))
    assert connected.find("./Connect/Stream") is not None
    assert emulator.org.started == 0 and len(emulator.org.sessions) == 1  # websocket: starts on connect


# ------------------------------------------------------------------ Telnyx
def telnyx_call(gateway: Gateway, params: dict[str, str], *, timestamp: int | None = None,
                key: Ed25519PrivateKey = TELNYX_KEY, query: str = "") -> Any:
    raw = urlencode(params).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    signature = base64.b64encode(key.sign(f"{ts}|".encode() + raw)).decode()
    return gateway.client.http.request(
        "POST", "/telephony/telnyx" + (f"?{query}" if query else ""), body=raw,
        headers={"Content-Type": "application/x-www-form-urlencoded", "telnyx-timestamp": ts,
                 "telnyx-signature-ed25519": signature})


def test_telnyx_valid_forged_stale_and_capacity(phone: Any, gateway: Gateway, emulator: EmulatorServer) -> None:
    CALL = new_call()
    root = parse(telnyx_call(gateway, CALL))
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://api.pipecat.daily.co/ws/telnyx?serviceHost=my-agent.emu-org"
    assert stream.get("bidirectionalMode") == "rtp"
    assert_error(telnyx_call(gateway, CALL, key=Ed25519PrivateKey.generate()), 403, "invalid_signature")
    assert_error(telnyx_call(gateway, CALL, timestamp=int(time.time()) - 301), 403, "invalid_signature")
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    hold = parse(telnyx_call(gateway, CALL))
    assert hold.find("Redirect") is not None
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    ok = parse(telnyx_call(gateway, CALL, query=urlsplit(hold.find("Redirect").text).query))  # type: ignore[union-attr,arg-type]
    assert ok.find("./Connect/Stream").get("url").startswith("ws://")  # type: ignore[union-attr]
    assert emulator.org.start_calls == 1 + 1  # one refused at capacity, one served


# ------------------------------------------------------------------ Plivo
def plivo_call(gateway: Gateway, params: dict[str, str], method: str = "POST", *, token: str = PLIVO_TOKEN,
               extra_signatures: list[str] | None = None, nonce: str = "12345678901234567890") -> Any:
    uri = f"{BASE}/telephony/plivo"
    if method == "GET":
        base_url = plivo_sdk.construct_get_url(uri, dict(params))
        path = "/telephony/plivo?" + urlencode(params)
    else:
        base_url = plivo_sdk.construct_post_url(uri, dict(params))
        path = "/telephony/plivo"
    signature = plivo_sdk.get_signature_v3(token.encode(), base_url, nonce.encode()).decode()
    header = ",".join([*(extra_signatures or []), signature])
    assert plivo_sdk.validate_v3_signature(method, uri, nonce, token, header, dict(params))  # the oracle agrees
    return form_request(gateway, path, params, {"X-Plivo-Signature-V3": header,
                                                "X-Plivo-Signature-V3-Nonce": nonce}, method=method)


def plivo_new_call() -> dict[str, str]:
    return {"CallUUID": str(uuid.uuid4()), "From": "15550001111", "To": "15550002222", "Direction": "inbound"}


def test_plivo_post_and_get_with_several_signatures(phone: Any, gateway: Gateway) -> None:
    PLIVO_CALL = plivo_new_call()
    root = parse(plivo_call(gateway, PLIVO_CALL, extra_signatures=["b2xkLXRva2VuLXNpZw=="]))
    stream = root.find("Stream")
    assert stream is not None and stream.get("bidirectional") == "true"
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"
    assert stream.text == "wss://api.pipecat.daily.co/ws/plivo?serviceHost=my-agent.emu-org"
    assert parse(plivo_call(gateway, PLIVO_CALL, "GET")).find("Stream") is not None


def test_plivo_forged_and_replayed(phone: Any, gateway: Gateway, emulator: EmulatorServer) -> None:
    PLIVO_CALL = plivo_new_call()
    assert_error(plivo_call(gateway, PLIVO_CALL, token="wrong-token"), 403, "invalid_signature")
    no_nonce = form_request(gateway, "/telephony/plivo", PLIVO_CALL, {"X-Plivo-Signature-V3": "abc"})
    assert_error(no_nonce, 403, "invalid_signature")
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    first = parse(plivo_call(gateway, PLIVO_CALL)).find("Stream").text  # type: ignore[union-attr]
    replay = parse(plivo_call(gateway, PLIVO_CALL)).find("Stream").text  # type: ignore[union-attr]
    assert first == replay and emulator.org.start_calls == 1


def test_plivo_capacity_hold_uses_plivo_verbs(phone: Any, gateway: Gateway, emulator: EmulatorServer) -> None:
    PLIVO_CALL = plivo_new_call()
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    root = parse(plivo_call(gateway, PLIVO_CALL))
    assert root.find("Speak") is not None and root.find("Wait") is not None and root.find("Redirect") is not None


# ------------------------------------------------------------------ Daily dial-in / dial-out
def daily_dialin(gateway: Gateway, payload: dict[str, Any], *, timestamp: int | None = None,
                 secret: str = DAILY_SECRET) -> Any:
    raw = json.dumps(payload).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    signature = base64.b64encode(hmac.new(base64.b64decode(secret), f"{ts}.".encode() + raw,
                                          hashlib.sha256).digest()).decode()
    return gateway.client.http.request("POST", "/telephony/daily/dialin", body=raw, headers={
        "Content-Type": "application/json", "x-pinless-timestamp": ts, "x-pinless-signature": signature})


def new_dialin() -> dict[str, Any]:
    return {"To": "+15550002222", "From": "+15550001111", "callId": f"call-{uuid.uuid4().hex}",
            "callDomain": "dom-1", "sipHeaders": {"X-Foo": "bar"}}


def test_daily_dialin_test_request_valid_forged_stale(phone: Any, gateway: Gateway,
                                                      emulator: EmulatorServer) -> None:
    DIALIN = new_dialin()
    assert body(daily_dialin(gateway, {"Test": "test"})) == {"status": "ok"}
    response = daily_dialin(gateway, DIALIN)
    assert response.status_code == 200, response.body
    data = body(response)
    assert data["status"] == "started" and "dailyToken" not in data
    session = emulator.org.sessions[data["sessionId"]]
    assert session.body["dialin_settings"] == {"From": "+15550001111", "To": "+15550002222",
                                               "call_id": DIALIN["callId"], "call_domain": "dom-1",
                                               "sip_headers": {"X-Foo": "bar"}}
    assert session.transport == "daily"
    replay = daily_dialin(gateway, DIALIN)
    assert body(replay)["sessionId"] == data["sessionId"] and emulator.org.start_calls == 1
    forged_secret = base64.b64encode(b"not-the-secret").decode()
    assert_error(daily_dialin(gateway, DIALIN, secret=forged_secret), 403, "invalid_signature")
    assert_error(daily_dialin(gateway, DIALIN, timestamp=int(time.time()) - 3600), 403, "invalid_signature")
    unsigned = gateway.client.http.request("POST", "/telephony/daily/dialin", body=json.dumps(DIALIN).encode(),
                                           headers={"Content-Type": "application/json"})
    assert_error(unsigned, 403, "invalid_signature")


def test_daily_dialin_retries_briefly_on_capacity(phone: Any, gateway: Gateway, emulator: EmulatorServer) -> None:
    DIALIN = new_dialin()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    held = slots.active_slots(OWNER)
    assert_error(daily_dialin(gateway, DIALIN), 503, "pcc_at_capacity")
    assert emulator.org.rejected_capacity == 3  # DAILY_DIALIN_ATTEMPTS, then the answer: no longer loop
    assert slots.active_slots(OWNER) == held  # every refused attempt gave its slot back


def test_daily_dialout_with_api_key_or_user(phone: Any, gateway: Gateway, emulator: EmulatorServer,
                                            user: str, oidc: Any) -> None:
    phone(DIALOUT_ALLOWED_GROUPS="dialers", DIALOUT_ALLOWED_PREFIXES="+1555", DIALOUT_ALLOWED_SIP_DOMAINS="b.c",
          DIALOUT_CALLER_IDS="caller-1")
    payload = {"phoneNumber": "+15550003333", "callerId": "caller-1"}
    keyed = gateway.client.http.request("POST", "/telephony/daily/dialout", body=json.dumps(payload).encode(),
                                        headers={"Content-Type": "application/json", "X-Api-Key": DIALOUT_KEY})
    assert keyed.status_code == 200, keyed.body
    session = emulator.org.sessions[body(keyed)["sessionId"]]
    assert session.body["dialout_settings"] == [{"phoneNumber": "+15550003333", "callerId": "caller-1"}]
    assert session.body["user"] == {"id": OWNER}
    dialer = {"Authorization": f"Bearer {oidc.token(user, **{'cognito:groups': ['dialers']})}"}
    as_user = gateway.request("POST", "/telephony/daily/dialout", headers=dialer, json_body={"sipUri": "sip:a@b.c"})
    assert as_user.status_code == 200
    assert emulator.org.sessions[body(as_user)["sessionId"]].body["user"] == {"id": user}
    bad_key = gateway.client.http.request("POST", "/telephony/daily/dialout", body=json.dumps(payload).encode(),
                                          headers={"Content-Type": "application/json", "X-Api-Key": "nope"})
    assert_error(bad_key, 401, "unauthorized")
    assert_error(gateway.request("POST", "/telephony/daily/dialout", json_body=payload), 401, "unauthorized")
    both = {"phoneNumber": "+15550003333", "sipUri": "sip:a@b.c"}
    assert_error(gateway.request("POST", "/telephony/daily/dialout", headers=dialer, json_body=both), 422,
                 "validation_error")


def test_telnyx_replayed_webhook_starts_one_bot(phone: Any, gateway: Gateway, emulator: EmulatorServer) -> None:
    CALL = new_call()
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    ts = int(time.time())
    first = parse(telnyx_call(gateway, CALL, timestamp=ts)).find("./Connect/Stream")
    replay = parse(telnyx_call(gateway, CALL, timestamp=ts)).find("./Connect/Stream")  # byte-identical replay
    assert first is not None and replay is not None and first.get("url") == replay.get("url")
    assert emulator.org.start_calls == 1
