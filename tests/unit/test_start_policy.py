from __future__ import annotations

import json

import pytest

from chalicelib.api.models import StartRequest
from chalicelib.platform.errors import Refused
from chalicelib.platform.settings import parse_settings
from chalicelib.start.policy import plan_start

SETTINGS = parse_settings({
    "STAGE": "dev", "PCC_SECRET_ID": "s", "TABLE_NAME": "t", "OIDC_ISSUER": "https://i", "OIDC_AUDIENCE": "a",
    "PCC_DEFAULT_AGENT": "bot",
    "PCC_AGENTS": json.dumps({
        "bot": {"allowed_room_properties": ["enable_recording"], "room_properties": {"exp": 1},
                "token_properties": {"is_owner": False}},
        "ws": {"transports": ["websocket"], "websocket_auth": "none"},
        "nortc": {"transports": ["daily"]},
    }),
})


def plan(**request: object) -> dict[str, object]:
    return plan_start(SETTINGS, StartRequest.model_validate(request), "u1").pcc_request


def code_of(**request: object) -> str:
    with pytest.raises(Refused) as caught:
        plan(**request)
    return caught.value.kind


def test_daily_request_is_built_from_policy_not_forwarded() -> None:
    assert code_of(transport="daily", dailyRoomProperties={"exp": 999}) == "property_not_allowed"
    pcc = plan(transport="daily", body={"lang": "en"}, dailyRoomProperties={"enable_recording": "cloud"})
    assert pcc == {
        "transport": "daily",
        "createDailyRoom": True,
        "dailyRoomProperties": {"enable_recording": "cloud", "exp": 1},
        "dailyMeetingTokenProperties": {"is_owner": False},
        "body": {"lang": "en", "user": {"id": "u1"}},
    }


def test_server_fixed_properties_win_and_token_keys_default_to_none() -> None:
    assert code_of(transport="daily", dailyMeetingTokenProperties={"is_owner": True}) == "property_not_allowed"


def test_identity_is_injected_and_client_value_rejected() -> None:
    assert plan(transport="webrtc")["body"] == {"user": {"id": "u1"}}
    assert code_of(body={"user": {"id": "someone-else"}}) == "reserved_body_key"


def test_webrtc_gets_default_ice_servers_and_no_daily_properties() -> None:
    assert plan(transport="webrtc")["enableDefaultIceServers"] is True
    assert code_of(transport="webrtc", dailyRoomProperties={"enable_recording": "x"}) == "property_not_allowed"


def test_agent_allow_list_and_transports() -> None:
    assert code_of(agent="other") == "unknown_agent"
    assert code_of(agent="nortc", transport="webrtc") == "transport_not_allowed"
    assert plan(agent="ws")["transport"] == "websocket"  # the agent's first transport is the default


def test_websocket_auth_none_sends_no_body() -> None:
    assert plan(agent="ws") == {"transport": "websocket"}
    assert code_of(agent="ws", body={"a": 1}) == "websocket_body_not_allowed"


def test_size_limits_before_calling_pcc() -> None:
    """1 MB of JSON for every transport, the identity included."""
    for transport in ("daily", "webrtc", "websocket"):
        assert code_of(transport=transport, body={"x": "y" * (1024 * 1024)}) == "body_too_large"
        assert plan(transport=transport, body={"x": "y" * (1024 * 1024 - 100)})["body"]


def test_unknown_fields_and_wrong_types_are_rejected_by_the_model() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        StartRequest.model_validate({"createDailyRoom": True})
    with pytest.raises(ValidationError):
        StartRequest.model_validate({"body": "not an object"})
    with pytest.raises(ValidationError):
        StartRequest.model_validate({"transport": "carrier-pigeon"})
