"""Telephony abuse (issue #13): captured webhooks replayed later, dial-out toll fraud, a token whose `sub`
collides with the telephony principal, and Exotel's unsigned webhooks (URL token + source allow-list)."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_start import assert_error, body
from tests.integration.test_telephony import (
    DIALOUT_KEY,
    OWNER,
    daily_dialin,
    new_call,
    new_dialin,
    parse,
    plivo_call,
    twilio_call,
)
from tests.support import LambdaContext, OidcIssuer, api_gateway_event

EXOTEL_TOKEN = "exotel-url-token-0123456789abcdef"


class CallClock:
    """The clock replay protection reads (chalicelib.store.call_records), moved on by the test: a verdict about a
    window never depends on how fast a loaded machine delivered the first webhook."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture()
def call_clock(monkeypatch: pytest.MonkeyPatch) -> CallClock:
    from chalicelib.store import call_records

    clock = CallClock()
    monkeypatch.setattr(call_records, "time", clock)
    return clock


# ------------------------------------------------------------------ replays
def test_a_twilio_webhook_replayed_after_the_retry_window_starts_nothing(phone: Any, gateway: Gateway,
                                                                         emulator: EmulatorServer,
                                                                         call_clock: CallClock) -> None:
    """Twilio signs no timestamp: replayed after both the retry window and the idempotency TTL, the
    captured webhook is still refused (the call id is remembered for 24 h on its own)."""
    phone(TELEPHONY_WEBSOCKET_AUTH="token", TELEPHONY_RETRY_WINDOW_SECONDS="60", IDEMPOTENCY_TTL_SECONDS="1")
    call = new_call()
    before = time.time()
    first = parse(twilio_call(gateway, call)).find("./Connect/Stream")
    retried = parse(twilio_call(gateway, call)).find("./Connect/Stream")  # the provider's own retry
    assert first is not None and retried is not None and first.get("url") == retried.get("url")
    call_clock.advance(61)  # past the retry window (and, for the idempotency store, far past its 1 s TTL)
    assert_error(twilio_call(gateway, call), 409, "call_replayed")
    assert emulator.org.start_calls == 1
    item = boto3.resource("dynamodb").Table(gateway_table()).get_item(
        Key={"PK": f"CALL#twilio#{call['CallSid']}", "SK": "META"})["Item"]
    assert int(item["ttl"]) >= int(before) + 86400  # remembered for a day from the first webhook


@pytest.mark.parametrize(("ttl", "window"), [("1", "3600"), ("600", "900")])
def test_inside_the_retry_window_a_call_always_gets_its_first_answer(phone: Any, gateway: Gateway,
                                                                     emulator: EmulatorServer, ttl: str,
                                                                     window: str) -> None:
    """IDEMPOTENCY_TTL_SECONDS shorter than the retry window (settings accept it; the defaults do with a
    window above 600 s): the call's answer is kept for the whole window, so a provider retry after the
    idempotency TTL still gets the first answer and never a second bot."""
    phone(TELEPHONY_WEBSOCKET_AUTH="token", IDEMPOTENCY_TTL_SECONDS=ttl, TELEPHONY_RETRY_WINDOW_SECONDS=window)
    call = new_call()

    def answers() -> dict[str, int]:  # the telephony principal's stored answers, by record
        items = boto3.resource("dynamodb").Table(gateway_table()).query(
            KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": f"IDEMPOTENCY#{OWNER}"})["Items"]
        return {str(i["SK"]): int(i["ttl"]) for i in items}

    earlier, before = answers(), time.time()
    first = parse(twilio_call(gateway, call)).find("./Connect/Stream")
    [kept_until] = [ttl for sk, ttl in answers().items() if sk not in earlier]
    assert kept_until >= int(before) + int(window)
    if ttl == "1":
        time.sleep(1.5)  # at least past the idempotency TTL, however loaded the machine (well inside 3600 s)
    again = parse(twilio_call(gateway, call)).find("./Connect/Stream")
    assert first is not None and again is not None and again.get("url") == first.get("url")
    assert emulator.org.start_calls == 1 and len(emulator.org.sessions) == 1


def gateway_table() -> str:
    import os

    return os.environ["TABLE_NAME"]


def test_plivo_and_daily_replays_are_refused_too(phone: Any, gateway: Gateway, emulator: EmulatorServer,
                                                call_clock: CallClock) -> None:
    phone(TELEPHONY_WEBSOCKET_AUTH="token", TELEPHONY_RETRY_WINDOW_SECONDS="60")
    plivo = {"CallUUID": f"uuid-{time.time_ns()}", "From": "+15550001111", "To": "+15550002222"}
    assert plivo_call(gateway, plivo).status_code == 200
    dialin = new_dialin()
    assert daily_dialin(gateway, dialin).status_code == 200
    call_clock.advance(61)
    assert_error(plivo_call(gateway, plivo), 409, "call_replayed")
    assert_error(daily_dialin(gateway, dialin), 409, "call_replayed")  # freshly signed, same call id
    assert emulator.org.start_calls == 2


# ------------------------------------------------------------------ dial-out
def dialout(gateway: Gateway, payload: dict[str, Any], *, token: str | None = None, api_key: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if api_key:
        headers["X-Api-Key"] = api_key
    return gateway.client.http.request("POST", "/telephony/daily/dialout", body=json.dumps(payload).encode(),
                                       headers=headers)


def test_dialout_is_denied_by_default(phone: Any, gateway: Gateway, emulator: EmulatorServer, oidc: OidcIssuer,
                                      user: str) -> None:
    assert_error(dialout(gateway, {"phoneNumber": "+15550003333"}, token=oidc.token(user)), 403,
                 "dialout_not_allowed")
    # even the service key reaches no destination until one is allowed
    assert_error(dialout(gateway, {"phoneNumber": "+15550003333"}, api_key=DIALOUT_KEY), 403,
                 "destination_not_allowed")
    assert emulator.org.start_calls == 0


def test_dialout_policy_decides_who_where_and_as_whom(phone: Any, gateway: Gateway, emulator: EmulatorServer,
                                                      oidc: OidcIssuer, user: str) -> None:
    phone(DIALOUT_ALLOWED_GROUPS="dialers", DIALOUT_ALLOWED_SCOPES="gateway/dialout",
          DIALOUT_ALLOWED_PREFIXES="+1415,+4420", DIALOUT_ALLOWED_SIP_DOMAINS="pbx.example.com",
          DIALOUT_CALLER_IDS="+14155550100")
    grouped = oidc.token(user, **{"cognito:groups": ["dialers"]})
    scoped = oidc.token(user, scope="openid gateway/dialout")
    plain = oidc.token(user, **{"cognito:groups": ["users"]})
    assert_error(dialout(gateway, {"phoneNumber": "+14155550123"}, token=plain), 403, "dialout_not_allowed")
    for premium in ("+19005551234", "+882345678901", "+4420"):  # premium, satellite, a prefix alone is no number
        response = dialout(gateway, {"phoneNumber": premium}, token=grouped)
        assert response.status_code in (403, 422), response.body
    for uri in ("sip:anyone@evil.example", "sip:x@pbx.example.com.evil.example", "sips:pbx.example.com@evil.example"):
        assert_error(dialout(gateway, {"sipUri": uri}, token=grouped), 403, "destination_not_allowed")
    assert_error(dialout(gateway, {"phoneNumber": "+14155550123", "callerId": "+19005550000"}, token=grouped),
                 403, "caller_id_not_allowed")
    assert emulator.org.start_calls == 0
    ok = dialout(gateway, {"phoneNumber": "+14155550123", "callerId": "+14155550100"}, token=grouped)
    assert ok.status_code == 200, ok.body
    assert dialout(gateway, {"sipUri": "sip:desk@PBX.example.com;transport=tls"}, token=scoped).status_code == 200
    assert emulator.org.start_calls == 2


def test_dialout_rate_limit_per_principal(phone: Any, gateway: Gateway, emulator: EmulatorServer,
                                          oidc: OidcIssuer, user: str, rate_clock: float) -> None:
    phone(DIALOUT_ALLOWED_GROUPS="dialers", DIALOUT_ALLOWED_PREFIXES="+1415", DIALOUT_RATE_PER_HOUR="2",
          USER_SESSION_LIMIT="10")
    token = oidc.token(user, **{"cognito:groups": ["dialers"]})
    assert [dialout(gateway, {"phoneNumber": "+14155550123"}, token=token).status_code for _ in range(2)] == [200, 200]
    limited = dialout(gateway, {"phoneNumber": "+14155550123"}, token=token)
    assert_error(limited, 429, "dialout_rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 3600
    other = oidc.token(f"{user}-2", **{"cognito:groups": ["dialers"]})
    assert dialout(gateway, {"phoneNumber": "+14155550123"}, token=other).status_code == 200  # per principal
    assert emulator.org.start_calls == 3


def test_no_token_can_be_the_telephony_principal(phone: Any, gateway: Gateway, emulator: EmulatorServer,
                                                 oidc: OidcIssuer) -> None:
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    parse(twilio_call(gateway, new_call()))  # a call session, owned by the telephony principal
    as_telephony = gateway.client.http.request("GET", "/sessions", headers={
        "Authorization": f"Bearer {oidc.token('telephony')}"})
    assert as_telephony.status_code == 200 and body(as_telephony)["sessions"] == []
    forged_owner = gateway.client.http.request("GET", "/sessions", headers={
        "Authorization": f"Bearer {oidc.token(OWNER)}"})
    assert_error(forged_owner, 401, "unauthorized")


# ------------------------------------------------------------------ Exotel
def exotel(app_env: Gateway, token: str, params: dict[str, str], *, source_ip: str = "203.0.113.7",
           method: str = "GET") -> dict[str, Any]:
    event = api_gateway_event(method, "/telephony/exotel/{token}", {"token": token},
                              headers={"Accept": "application/json"}, source_ip=source_ip,
                              query={k: [v] for k, v in params.items()})
    response: dict[str, Any] = app_env.app(event, LambdaContext())
    return {"status": response["statusCode"], "body": json.loads(response["body"] or "{}")}


@pytest.fixture()
def exotel_secret(phone: Any, stack: dict[str, Any]) -> Any:
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    value = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps({**value, "exotel_webhook_token": EXOTEL_TOKEN}))
    return phone


def exotel_call() -> dict[str, str]:
    return {"CallSid": f"exo-{time.time_ns()}", "CallFrom": "09876543210", "CallTo": "08012345678",
            "Direction": "incoming"}


def test_exotel_without_a_configured_token_fails_closed(phone: Any, app_env: Gateway) -> None:
    answer = exotel(app_env, "anything", exotel_call())
    assert answer["status"] == 403 and answer["body"]["code"] == "invalid_signature"


def test_exotel_url_token_source_allow_list_and_replay(exotel_secret: Any, app_env: Gateway,
                                                        emulator: EmulatorServer, call_clock: CallClock) -> None:
    assert exotel(app_env, EXOTEL_TOKEN[:-1] + "0", exotel_call())["status"] == 403
    assert exotel(app_env, "", exotel_call())["status"] in (403, 404)
    call = exotel_call()
    static = exotel(app_env, EXOTEL_TOKEN, call)
    assert static["status"] == 200
    assert static["body"] == {"url": "wss://api.pipecat.daily.co/ws/exotel?serviceHost=my-agent.emu-org"}
    exotel_secret(EXOTEL_ALLOWED_IPS="198.51.100.0/24", TELEPHONY_WEBSOCKET_AUTH="token",
                  TELEPHONY_RETRY_WINDOW_SECONDS="60")
    assert exotel(app_env, EXOTEL_TOKEN, exotel_call(), source_ip="203.0.113.7")["status"] == 403
    call = exotel_call()
    started = exotel(app_env, EXOTEL_TOKEN, call, source_ip="198.51.100.9")
    assert started["status"] == 200 and started["body"]["url"].startswith("ws://")  # {wsUrl}/{token}
    [session] = emulator.org.sessions.values()
    assert session.body["telephony"]["provider"] == "exotel" and session.body["user"] == {"id": OWNER}
    call_clock.advance(61)
    replay = exotel(app_env, EXOTEL_TOKEN, call, source_ip="198.51.100.9")
    assert replay["status"] == 409 and replay["body"]["code"] == "call_replayed"
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    full = exotel(app_env, EXOTEL_TOKEN, exotel_call(), source_ip="198.51.100.9")
    assert full["status"] == 503 and full["body"]["code"] == "pcc_at_capacity"
    assert len(emulator.org.sessions) == 1  # the replay started nothing; the full agent refused the last
