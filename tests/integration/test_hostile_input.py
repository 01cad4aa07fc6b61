"""Hostile input gets a clear 4xx with {detail, code}, never a 5xx and never a traceback in the log
(issue #13's probe findings, each reproduced here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.platform import http
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway
from tests.integration.test_start import assert_error
from tests.support import LambdaContext, OidcIssuer, api_gateway_event


@pytest.fixture()
def tracebacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every `logger.exception` the error middleware makes (an unhandled error: a bug on bad input)."""
    seen: list[str] = []
    original = http.logger.exception

    def record(msg: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(str(msg))
        original(msg, *args, **kwargs)

    monkeypatch.setattr(http.logger, "exception", record)
    yield seen


DEEP = b'{"body": ' + b'{"a": ' * 1200 + b"1" + b"}" * 1200 + b"}"
BODIES = {
    "nested 1,200 levels": DEEP,
    "nested 33 levels": b'{"body": ' + b"[" * 32 + b"]" * 32 + b"}",
    "lone surrogate in a key": b'{"body": {"\\ud800": 1}}',
    "lone surrogate in a value": b'{"body": {"k": "x\\udfffy"}}',
    "NaN": b'{"body": {"n": NaN}}',
    "Infinity": b'{"body": {"n": -Infinity}}',
    "1e999": b'{"body": {"n": 1e999}}',
    "an integer of 5,000 digits": b'{"body": {"n": ' + b"9" * 5000 + b"}}",
    "not UTF-8": b'{"body": {"k": "\xff\xfe"}}',
    "truncated": b'{"body": {"k": ',
}


@pytest.mark.parametrize("raw", list(BODIES.values()), ids=list(BODIES))
def test_bad_json_bodies_are_400_invalid_json(gateway: Gateway, emulator: EmulatorServer, user: str, raw: bytes,
                                              tracebacks: list[str]) -> None:
    for path in ("/start", "/telephony/daily/dialout"):
        response = gateway.request("POST", path, user=user, body=raw)
        assert_error(response, 400, "invalid_json")
    assert emulator.org.sessions == {}  # nothing reached Pipecat Cloud
    assert tracebacks == []


def test_a_valid_surrogate_pair_and_32_levels_are_fine(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    nested: Any = 1
    for _ in range(30):  # + the request object and `body`: 32 levels
        nested = {"a": nested}
    raw = json.dumps({"transport": "daily", "body": {"emoji": "\U0001f600", "n": nested}}).encode()
    assert b"\\ud83d\\ude00" in raw  # json.dumps escapes it as a surrogate pair
    response = gateway.request("POST", "/start", user=user, body=raw)
    assert response.status_code == 200, response.body
    [session] = emulator.org.sessions.values()
    assert session.body["emoji"] == "\U0001f600"


@pytest.mark.parametrize("alg", ["ES256", "ES384", "HS256", "PS256", "none"])
def test_a_token_whose_alg_does_not_match_the_key_is_401(gateway: Gateway, oidc: OidcIssuer, user: str, alg: str,
                                                          tracebacks: list[str]) -> None:
    """The issuer's RSA key id with another algorithm in the header and a junk signature."""
    import base64

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    good = oidc.token(user).split(".")
    forged = ".".join([b64({"alg": alg, "kid": oidc.kid, "typ": "JWT"}), good[1], b64({"junk": 1})])
    response = gateway.request("POST", "/start", json_body={}, headers={"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, "unauthorized")
    assert tracebacks == []


# ------------------------------------------------------------------ the session proxy
def _session(gateway: Gateway, user: str) -> str:
    response = gateway.start(user, {"transport": "daily"})
    assert response.status_code == 200, response.body
    return str(response.headers["X-Session-Id"])


def test_a_hostile_bot_cannot_set_cookies_cors_or_redirects_on_our_origin(
        gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    sid = _session(gateway, user)
    hostile = ["Set-Cookie:sid=evil; Domain=evil.example", "Access-Control-Allow-Origin:https://evil.example",
               "Access-Control-Allow-Credentials:true", "Location:https://evil.example/phish", "X-Session-Id:other",
               "X-Request-Id:forged", "Strict-Transport-Security:max-age=0", "Refresh:0;url=https://evil.example",
               "X-Bot-Version:7", "Cache-Control:no-store", "ETag:\"v1\""]
    query = "&".join(f"h={h}" for h in hostile)
    response = gateway.request("GET", f"/sessions/{sid}/echo/headers?{query}", user=user)
    assert response.status_code == 200, response.body
    names = {k.lower(): v for k, v in response.headers.items()}
    for banned in ("set-cookie", "location", "x-request-id", "strict-transport-security", "refresh",
                   "access-control-allow-credentials"):
        assert banned not in names, banned
    assert names.get("x-session-id") != "other"
    from app import CORS

    assert names["access-control-allow-origin"] == CORS.allow_origin  # ours, not the bot's
    assert names["x-bot-version"] == "7" and names["cache-control"] == "no-store" and names["etag"] == '"v1"'


def test_credentials_forwarding_and_aws_headers_never_reach_the_bot(gateway: Gateway, emulator: EmulatorServer,
                                                                    user: str) -> None:
    sid = _session(gateway, user)
    sent = {"Cookie": "session=ours", "X-Forwarded-For": "10.0.0.1", "Forwarded": "for=10.0.0.1",
            "X-Api-Key": "k", "X-Amz-Security-Token": "t", "X-Amzn-Trace-Id": "Root=1", "Via": "1.1 cf",
            "X-Real-Ip": "10.0.0.2", "X-Custom": "kept", "Accept-Language": "fr"}
    assert gateway.request("GET", f"/sessions/{sid}/status", user=user, headers=sent).status_code == 200
    [call] = [c for c in emulator_proxy_calls(emulator) if c["path"] == "status"]
    received = set(call["headers"])
    assert {"x-custom", "accept-language"} <= received
    assert not received & {"cookie", "x-forwarded-for", "forwarded", "x-api-key", "x-amz-security-token",
                           "x-amzn-trace-id", "via", "x-real-ip", "authorization"}


def test_the_request_header_allow_list_is_configurable(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                       configure_stage: Any) -> None:
    configure_stage(PROXY_REQUEST_HEADERS="content-type,x-bot-*")
    sid = _session(gateway, user)
    headers = {"X-Bot-Mode": "a", "X-Other": "b", "Cookie": "c"}
    assert gateway.request("GET", f"/sessions/{sid}/status", user=user, headers=headers).status_code == 200
    [call] = emulator_proxy_calls(emulator)
    assert "x-bot-mode" in call["headers"] and "x-other" not in call["headers"] and "cookie" not in call["headers"]


def test_a_header_value_that_cannot_be_forwarded_is_400(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                         tracebacks: list[str]) -> None:
    sid = _session(gateway, user)
    response = gateway.request("GET", f"/sessions/{sid}/status", user=user, headers={"X-Name": "Zoë"})
    assert_error(response, 400, "invalid_header")
    assert emulator_proxy_calls(emulator) == [] and tracebacks == []


@pytest.mark.parametrize("segment", ["..%2F..%2Fstart", "a%2Fb", "..", ".hidden", "a%5Cb", "%2e%2e", "a%00b"])
def test_path_segments_that_could_change_the_path_are_400(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                           segment: str, configure_stage: Any) -> None:
    configure_stage(PROXY_ALLOWED_PATHS="api/*")
    sid = _session(gateway, user)
    response = gateway.request("GET", f"/sessions/{sid}/api/{segment}/admin", user=user)
    assert response.status_code in (400, 404), response.body  # 404: the route itself does not match
    assert emulator_proxy_calls(emulator) == []


@pytest.mark.parametrize("decoded", ["../../start", "..", "a/b", "a\\b", ".env", "%2e%2e", "a\x00b"])
def test_decoded_path_parameters_from_api_gateway_are_400(app_env: Gateway, emulator: EmulatorServer, user: str,
                                                          decoded: str, configure_stage: Any,
                                                          tracebacks: list[str]) -> None:
    """API Gateway decodes `..%2F..%2Fstart` into the path parameter `../../start`: the handler sees that."""
    configure_stage(PROXY_ALLOWED_PATHS="api/*")
    sid = _session(app_env, user)
    params = {"session_id": sid, "p1": "api", "p2": decoded}
    event = api_gateway_event("GET", "/sessions/{session_id}/{p1}/{p2}", params,
                              headers={"Accept": "application/json", **app_env.auth(user)})
    response = app_env.app(event, LambdaContext())
    assert response["statusCode"] == 400 and json.loads(response["body"])["code"] == "invalid_path", response
    assert emulator_proxy_calls(emulator) == [] and tracebacks == []


def emulator_proxy_calls(emulator: EmulatorServer) -> list[dict[str, Any]]:
    import httpx

    return list(httpx.get(f"{emulator.url}/_emulator/proxy-calls").json())
