"""The Pipecat Cloud emulator behaves as docs/pipecat-cloud-api.md describes (over real HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from infra.pcc_emulator import EmulatorServer
from tests.conftest import emulator_admin
from tests.support import wait_for


def pub(emu: EmulatorServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.org.public_key}"}


def priv(emu: EmulatorServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.org.private_key}"}


def start(emu: EmulatorServer, payload: Any = None, agent: str = "my-agent",
          headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{emu.url}/v1/public/{agent}/start", json=payload if payload is not None else {},
                      headers=pub(emu) if headers is None else headers)


def test_start_requires_the_public_key(emulator: EmulatorServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, priv(emulator)):
        response = start(emulator, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorized / token expired", "code": "401"}


def test_unknown_agent_is_404_and_not_ready_is_pcc_1001(emulator: EmulatorServer) -> None:
    assert start(emulator, agent="nope").status_code == 404
    emulator_admin(emulator, "agents/my-agent", {"ready": False})
    response = start(emulator)
    assert response.status_code == 400
    assert response.json()["code"] == "PCC-1001"


def test_transport_specific_answers(emulator: EmulatorServer) -> None:
    daily = start(emulator, {"createDailyRoom": True}).json()
    assert set(daily) == {"sessionId", "dailyRoom", "dailyToken"}
    webrtc = start(emulator, {"transport": "webrtc", "enableDefaultIceServers": True}).json()
    assert set(webrtc) == {"sessionId", "iceConfig"}
    assert webrtc["iceConfig"]["iceServers"][0]["urls"]
    ws = start(emulator, {"transport": "websocket", "body": {"a": 1}}).json()
    # the guide: the body goes through the authenticated session, not into the URL
    assert set(ws) == {"sessionId", "wsUrl", "token"} and "?" not in ws["wsUrl"]
    assert emulator.org.sessions[ws["sessionId"]].body == {"a": 1}


def test_a_room_only_when_create_daily_room_is_true(emulator: EmulatorServer) -> None:
    for payload in ({"transport": "daily"}, {"createDailyRoom": False}, {"createDailyRoom": "yes"}, {}):
        answer = start(emulator, payload)
        assert answer.status_code == 200 and set(answer.json()) == {"sessionId"}, payload
    # room properties without a room are ignored, not a 400
    ignored = start(emulator, {"transport": "webrtc", "dailyRoomProperties": {"enable_recording": "cloud"}})
    assert ignored.status_code == 200 and set(ignored.json()) == {"sessionId"}
    with_room = start(emulator, {"createDailyRoom": True, "dailyRoomProperties": {"enable_recording": "cloud"}})
    assert set(with_room.json()) == {"sessionId", "dailyRoom", "dailyToken"}


def test_size_limits_are_413(emulator: EmulatorServer) -> None:
    """1 MB of JSON across all transports."""
    big = {"blob": "x" * (1024 * 1024)}
    for transport in ("daily", "webrtc", "websocket"):
        assert start(emulator, {"transport": transport, "body": big}).status_code == 413, transport
        assert start(emulator, {"transport": transport, "body": {"blob": "x" * 8000}}).status_code == 200, transport
    assert start(emulator, {"transport": "websocket", "body": {"blob": "x" * (1024 * 1024 - 20)}}).status_code == 200


def test_websocket_body_rejected_when_auth_none(emulator: EmulatorServer) -> None:
    response = start(emulator, {"transport": "websocket", "body": {"a": 1}}, agent="open-ws")
    assert response.status_code == 400
    assert start(emulator, {"transport": "websocket"}, agent="open-ws").status_code == 200


def test_max_agents_gives_429_and_stop_frees_capacity(emulator: EmulatorServer) -> None:
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 2})
    ids = [start(emulator, {"createDailyRoom": True}).json()["sessionId"] for _ in range(2)]
    refused = start(emulator, {"createDailyRoom": True})
    assert refused.status_code == 429
    assert refused.json() == {"error": "Rate limit exceeded. Please try again later.", "code": "429"}
    emulator_admin(emulator, "agents/my-agent", {"capacity_error_style": "pcc_code"})
    assert start(emulator).json()["code"] == "PCC-AGENT-AT-CAPACITY"
    stopped = httpx.delete(f"{emulator.url}/v1/agents/my-agent/sessions/{ids[0]}", headers=priv(emulator))
    assert stopped.json() == {"status": "terminated", "session_id": ids[0]}
    assert start(emulator, {"createDailyRoom": True}).status_code == 200


def test_websocket_tokens_are_single_use(emulator: EmulatorServer) -> None:
    ws = start(emulator, {"transport": "websocket"}).json()
    path = ws["wsUrl"].split("/", 3)[3]
    first = httpx.get(f"{emulator.url}/{path}/{ws['token']}")
    assert first.status_code == 200 and first.json()["connected"] is True
    again = httpx.get(f"{emulator.url}/{path}/{ws['token']}")
    assert again.status_code == 403
    forged = httpx.get(f"{emulator.url}/{path}", params={"token": ws["token"][:-2] + "xx"})
    assert forged.status_code == 403


def test_session_proxy_all_methods_and_header_rules(emulator: EmulatorServer) -> None:
    sid = start(emulator, {"createDailyRoom": True}).json()["sessionId"]
    base = f"{emulator.url}/v1/public/my-agent/sessions/{sid}"
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        response = httpx.request(method, f"{base}/deep/path?x=1", headers={**pub(emulator), "X-Custom": "v"},
                                 content=b"data" if method in ("POST", "PUT", "PATCH") else None)
        assert response.status_code == 200, method
    calls = emulator_admin_get(emulator, "proxy-calls")
    assert [c["method"] for c in calls] == ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    for call in calls:
        assert call["path"] == "deep/path" and call["query"] == "x=1"
        assert call["headers"]["x-custom"] == "v"
        assert not {"authorization", "host", "content-length"} & set(call["headers"])
    assert calls[1]["body"] == "data"
    offer = httpx.post(f"{base}/api/offer", headers=pub(emulator), json={"sdp": "o", "type": "offer"})
    assert offer.json()["type"] == "answer"
    assert httpx.patch(f"{base}/api/offer", headers=pub(emulator), json={"candidates": []}).status_code == 200
    assert httpx.get(f"{base}/x", headers=priv(emulator)).status_code == 401
    assert httpx.get(f"{emulator.url}/v1/public/my-agent/sessions/nope/x", headers=pub(emulator)).status_code == 404


def emulator_admin_get(emulator: EmulatorServer, path: str) -> Any:
    return httpx.get(f"{emulator.url}/_emulator/{path}").json()


SUMMARY_FIELDS = {"sessionId": str, "serviceId": str, "organizationId": str, "deploymentId": str,
                  "endedAt": (str, type(None)), "botStartSeconds": int, "coldStart": bool,
                  "completionStatus": (str, type(None)), "createdAt": str, "updatedAt": str}
METRIC_FIELDS = [f"{kind}P{p}" for kind in ("cpuMillicores", "memoryBytes") for p in (50, 90, 95, 99)]


def assert_session_details_shape(details: dict[str, Any]) -> None:
    """The private API's session details, field by field, as the guide documents them."""
    assert set(details) == {*SUMMARY_FIELDS, "meetingIds", "resourceMetrics"}
    for name, kind in SUMMARY_FIELDS.items():
        value = details[name]
        assert isinstance(value, kind), (name, value)
        assert kind is bool or not isinstance(value, bool), (name, value)  # an int field is no bool
    assert all(set(m) == {"participantId", "meetingId"} and all(isinstance(v, str) for v in m.values())
               for m in details["meetingIds"])
    metrics = details["resourceMetrics"]
    # as the API reference's example and Pipecat Cloud's OpenAPI have them
    assert set(metrics) == {*METRIC_FIELDS, "sampleCount", "timeseries", "id", "sessionId", "eventTs", "createdAt"}
    assert metrics["sessionId"] == details["sessionId"] and isinstance(metrics["id"], str) and metrics["id"]
    assert all(isinstance(metrics[f], str) and metrics[f].endswith("Z") for f in ("eventTs", "createdAt"))
    assert all(isinstance(metrics[f], int) for f in METRIC_FIELDS)
    assert metrics["sampleCount"] == len(metrics["timeseries"]) >= 1
    assert all(set(sample) == {"t", "c", "m"} and all(isinstance(v, int) for v in sample.values())
               for sample in metrics["timeseries"])


def test_session_details_carry_meeting_ids_as_objects(emulator: EmulatorServer) -> None:
    sid = start(emulator, {"createDailyRoom": True}).json()["sessionId"]
    details = httpx.get(f"{emulator.url}/v1/agents/my-agent/sessions/{sid}", headers=priv(emulator)).json()
    assert_session_details_shape(details)
    assert [m["meetingId"] for m in details["meetingIds"]] == [f"emu-{sid[:8]}"]


def test_private_list_get_filters_and_max_duration(emulator: EmulatorServer) -> None:
    ids = [start(emulator, {"createDailyRoom": True}).json()["sessionId"] for _ in range(3)]
    emulator_admin(emulator, f"sessions/{ids[0]}/end")
    listing = httpx.get(f"{emulator.url}/v1/agents/my-agent/sessions", params={"status": "active"},
                        headers=priv(emulator)).json()
    assert listing["total_count"] == 2
    assert {s["sessionId"] for s in listing["sessions"]} == set(ids[1:])
    assert all(s["endedAt"] is None for s in listing["sessions"])
    ended = httpx.get(f"{emulator.url}/v1/agents/my-agent/sessions", params={"status": "ended"},
                      headers=priv(emulator)).json()
    assert [s["sessionId"] for s in ended["sessions"]] == [ids[0]]
    details = httpx.get(f"{emulator.url}/v1/agents/my-agent/sessions/{ids[0]}", headers=priv(emulator)).json()
    assert details["completionStatus"] == "HTTP_COMPLETED"
    assert_session_details_shape(details)
    assert httpx.get(f"{emulator.url}/v1/agents/my-agent/sessions", headers=pub(emulator)).status_code == 401
    assert httpx.delete(f"{emulator.url}/v1/agents/my-agent/sessions/not-a-uuid",
                        headers=priv(emulator)).status_code == 400
    emulator_admin(emulator, "agents/my-agent", {"max_session_seconds": 0.2})
    time.sleep(0.3)
    agent = httpx.get(f"{emulator.url}/v1/agents/my-agent", headers=priv(emulator)).json()
    assert agent["activeSessionCount"] == 0


def test_session_lengths_by_marker_override_the_agents_max_duration(emulator: EmulatorServer) -> None:
    """bench/queue_scale.py --lengths exponential: each start's session lives the length given for its body's `n`."""
    emulator_admin(emulator, "session-lengths", {"by_marker": {"1": 0.2, "2": 3600}})
    short = start(emulator, {"body": {"n": 1}}).json()["sessionId"]
    long = start(emulator, {"body": {"n": 2}}).json()["sessionId"]
    other = start(emulator, {"body": {"n": 3}}).json()["sessionId"]  # no length given: the agent's max (7200 s)
    time.sleep(0.3)
    active = {s["sessionId"] for s in httpx.get(f"{emulator.url}/v1/agents/my-agent/sessions",
                                                params={"status": "active", "limit": 100},
                                                headers=priv(emulator)).json()["sessions"]}
    assert short not in active and {long, other} <= active
    emulator_admin(emulator, "reset")
    assert emulator.org.session_lengths == {}


def test_cold_start_and_connection_counting(emulator: EmulatorServer) -> None:
    """The first start of an agent is a cold start; one after a stop is served by the instance the stop freed
    (the emulator's own details say which, not the time the call took)."""
    emulator_admin(emulator, "knobs", {"latency_ms": 100, "cold_start_ms": 200})
    with httpx.Client() as client:
        first = client.post(f"{emulator.url}/v1/public/my-agent/start", json={}, headers=pub(emulator))
        sid = first.json()["sessionId"]
        client.delete(f"{emulator.url}/v1/agents/my-agent/sessions/{sid}", headers=priv(emulator))
        second = client.post(f"{emulator.url}/v1/public/my-agent/start", json={}, headers=pub(emulator))
    stats = emulator_admin_get(emulator, "stats")
    assert stats["connections"] >= 1

    def details(session_id: str) -> Any:
        return httpx.get(f"{emulator.url}/v1/agents/my-agent/sessions/{session_id}", headers=priv(emulator)).json()

    assert details(sid)["coldStart"] is True
    assert details(second.json()["sessionId"])["coldStart"] is False  # the warm instance freed by the stop


def test_held_answers_wait_until_released(emulator: EmulatorServer) -> None:
    """`POST /_emulator/hold {"held": true}`: a successful start's bot exists at once, its answer waits until the
    hold is lifted (and a hang fault "until": "released" likewise)."""
    import threading

    emulator_admin(emulator, "hold", {"held": True})
    answers: list[int] = []
    caller = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{emulator.url}/v1/public/my-agent/start", json={}, headers=pub(emulator), timeout=60).status_code))
    caller.start()
    assert wait_for(lambda: emulator.org.started == 1)
    assert answers == [] and emulator.org.start_log == []
    emulator_admin(emulator, "hold", {"held": False})
    caller.join()
    assert answers == [200] and [c["status"] for c in emulator.org.start_log] == [200]


@pytest.mark.timeout(120)
def test_official_pipecatcloud_library_starts_a_session(emulator: EmulatorServer) -> None:
    script = (
        "import asyncio, json\n"
        "from pipecatcloud.session import Session, SessionParams\n"
        f"s = Session('my-agent', api_key={emulator.org.public_key!r}, "
        "params=SessionParams(data={'k': 1}, use_daily=True))\n"
        "print(json.dumps(asyncio.run(s.start())))\n"
    )
    env = {**os.environ, "PIPECAT_API_HOST": emulator.url, "HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sessionId"] in emulator.org.sessions
    assert result["dailyRoom"].startswith("https://")
    assert emulator.org.sessions[result["sessionId"]].body == {"k": 1}


@pytest.mark.timeout(120)
def test_official_library_shows_a_readable_message_at_capacity(emulator: EmulatorServer) -> None:
    """The 429 body has the documented {error, code} shape, which the official library turns into its message."""
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    script = (
        "import asyncio\n"
        "from pipecatcloud.session import Session, SessionParams\n"
        f"s = Session('my-agent', api_key={emulator.org.public_key!r}, params=SessionParams(use_daily=True))\n"
        "try:\n"
        "    asyncio.run(s.start())\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, '|', exc)\n"
    )
    env = {**os.environ, "PIPECAT_API_HOST": emulator.url, "HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90)
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("AgentStartError |"), out.stdout + out.stderr[-2000:]
    assert "Rate limit exceeded" in last and "None" not in last, last
