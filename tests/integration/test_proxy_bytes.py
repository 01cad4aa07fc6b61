"""The session proxy carries bodies byte-exact on the deployed path: API Gateway-shaped events into the
Lambda handler (binary media types base64-encoded, as API Gateway does), the bot's answer back out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway
from tests.integration.test_sessions import proxy_calls, started
from tests.support import LambdaContext, api_gateway_event

RESOURCE = "/sessions/{session_id}/{p1}/{p2}"
SDP = b"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
BINARY = bytes(range(256)) + b"\x00\xff\xfe not utf-8: \xc3\x28"


@pytest.mark.parametrize(("content_type", "payload"), [
    ("application/octet-stream", BINARY),
    ("application/sdp", SDP),
    ("application/json", json.dumps({"offer": "é", "n": [1, 2]}, ensure_ascii=False).encode()),
])
def test_proxy_bodies_are_byte_exact_both_ways(app_env: Gateway, emulator: EmulatorServer, user: str,
                                               content_type: str, payload: bytes) -> None:
    app = app_env.app
    session_id = started(app_env, user)
    headers = {"Content-Type": content_type, "Accept": content_type, **app_env.auth(user)}
    event = api_gateway_event("POST", RESOURCE, {"session_id": session_id, "p1": "echo", "p2": "raw"},
                              headers=headers, body=payload, binary_types=app.api.binary_types)
    assert event["isBase64Encoded"] is (content_type == "application/octet-stream")
    response: dict[str, Any] = app(event, LambdaContext())
    assert response["statusCode"] == 200, response
    [call] = proxy_calls(emulator)
    assert base64.b64decode(call["bodyBase64"]) == payload  # what the bot received
    returned = base64.b64decode(response["body"]) if response.get("isBase64Encoded") else response["body"].encode()
    assert returned == payload  # what API Gateway hands back to the client
    assert response.get("isBase64Encoded", False) is (content_type == "application/octet-stream")
