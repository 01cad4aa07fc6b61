"""Property: no API Gateway event, however hostile, makes the Lambda handler answer 5xx or log a traceback.

Hypothesis builds REST API (v1) proxy events for every route of the app (and methods it does not serve):
path parameters as API Gateway hands them over (already decoded: `/`, `%`, `..`, any Unicode), random
headers and query strings, bodies that are random bytes, random JSON, or known-hostile JSON; half the
events carry a valid token for a user who owns a live session, so the deep paths run too (start, the
proxy, the queue, telephony signatures). The Pipecat Cloud emulator and moto answer behind it. Fixed
seed (derandomize), a few thousand examples.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.platform import http
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway
from tests.support import LambdaContext, api_gateway_event, new_user

EXAMPLES = 3000
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
HOSTILE_BODIES = [
    b'{"body": ' + b"[" * 1500 + b"]" * 1500 + b"}", b'{"body": {"\\ud800": NaN}}', b'{"n": 1e999}',
    b'{"transport": "websocket", "body": {"x": "' + b"a" * 5000 + b'"}}', b"\xff\xfe\x00", b"[]", b"null",
    b'{"transport": "daily", "dailyRoomProperties": {"sip": {}}}', b'{"phoneNumber": "+19005551234"}',
    b'{"agent": "../../admin"}', b'{"body": {"user": {"id": "admin"}}}',
]
# Decoded path parameters: separators, dots, encodings, control characters, any Unicode but surrogates
# (API Gateway hands over valid strings).
SEGMENT = st.one_of(
    st.sampled_from(["..", ".", "../../start", "a/b", "%2F", "a\\b", ".env", "api", "offer", "\x00", " ", "é"]),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=0, max_size=12),
)
HEADER_NAME = st.sampled_from(["Content-Type", "Accept", "Origin", "Access-Control-Request-Method", "Cookie",
                               "Idempotency-Key", "X-Api-Key", "X-Forwarded-For", "X-Custom", "X-Twilio-Signature",
                               "Telnyx-Timestamp", "X-Pinless-Timestamp", "Range", "If-None-Match"])
HEADER_VALUE = st.one_of(st.sampled_from(["application/json", "text/plain", "application/octet-stream",
                                          "application/x-www-form-urlencoded", "*/*", "GET", "1700000000"]),
                         st.text(st.characters(exclude_categories=("Cs",)), max_size=20))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=10)
BODY = st.one_of(st.just(b""), st.binary(max_size=64), st.sampled_from(HOSTILE_BODIES),
                 JSON.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(["transport", "agent", "body", "dailyRoomProperties", "sipUri",
                                                  "phoneNumber", "callerId", "createDailyRoom"]), JSON, max_size=4)
                 .map(lambda v: json.dumps(v).encode()))


@pytest.fixture()
def owner(app_env: Gateway, emulator: EmulatorServer) -> dict[str, str]:
    user = new_user()
    response = app_env.start(user, {"transport": "daily"})
    assert response.status_code == 200, response.body
    return {"user": user, "session_id": str(response.headers["X-Session-Id"])}


@pytest.mark.timeout(900)
def test_no_event_makes_the_handler_answer_5xx_or_log_a_traceback(
        app_env: Gateway, owner: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    app = app_env.app
    routes = sorted((path, method) for path, methods in app.routes.items() for method in methods)
    tracebacks: list[str] = []
    monkeypatch.setattr(http.logger, "exception", lambda msg, *a, **k: tracebacks.append(str(msg)))
    token = app_env.auth(owner["user"])
    failures: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(routes), other_method=st.sampled_from(METHODS) | st.none(),
           params=st.lists(SEGMENT, min_size=8, max_size=8), own_session=st.booleans(), authed=st.booleans(),
           headers=st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=5),
           query=st.dictionaries(st.text(max_size=6), st.lists(st.text(max_size=8), min_size=1, max_size=2),
                                 max_size=3) | st.none(),
           body=BODY)
    def probe(route: tuple[str, str], other_method: str | None, params: list[str], own_session: bool,
              authed: bool, headers: dict[str, str], query: dict[str, list[str]] | None, body: bytes) -> None:
        path, method = route
        names = [segment[1:-1] for segment in path.split("/") if segment.startswith("{")]
        values = dict(zip(names, params, strict=False))
        if own_session and "session_id" in values:
            values["session_id"] = owner["session_id"]
        sent = {**headers, **(token if authed else {})}
        event = api_gateway_event(other_method or method, path, values, headers=sent, body=body,
                                  binary_types=app.api.binary_types, query=query)
        response: dict[str, Any] = app(event, LambdaContext())
        if response["statusCode"] >= 500 or tracebacks:
            failures.append(f"{event['httpMethod']} {path} {values} -> {response['statusCode']} "
                            f"{str(response.get('body'))[:200]} {tracebacks[-1:]}")
            tracebacks.clear()

    probe()
    assert not failures, "\n".join(failures[:20])
