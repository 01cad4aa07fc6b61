"""Per-user limits answer 429 with Retry-After and {detail, code}: starts, status polls, session API proxy
calls, concurrent long-polls. Each limit is a documented setting (docs/security.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.platform import dynamo
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_start import assert_error, body
from tests.support import new_user

# every count of this file falls in one window of the limits, however slow the machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("rate_clock")


def limited(response: Any, code: str) -> dict[str, Any]:
    data = assert_error(response, 429, code)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    return data


def test_starts_per_minute(gateway: Gateway, emulator: EmulatorServer, configure_stage: Callable[..., None]) -> None:
    configure_stage(START_RATE_PER_MINUTE="2", USER_SESSION_LIMIT="10")
    user, other = new_user(), new_user()
    assert gateway.start(user, {"transport": "daily"}).status_code == 200
    assert gateway.start(user, {"transport": "daily"}).status_code == 200
    started = emulator.org.start_calls
    data = limited(gateway.start(user, {"transport": "daily"}), "start_rate_limited")
    assert "at most 2 per 60 s" in data["detail"]
    assert emulator.org.start_calls == started  # refused before Pipecat Cloud is asked
    assert gateway.start(other, {"transport": "daily"}).status_code == 200  # per user


def test_status_polls_per_minute(gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
                                 configure_stage: Callable[..., None]) -> None:
    configure_stage(STATUS_RATE_PER_MINUTE="3")
    user = new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    status_url = body(gateway.start(user, {"transport": "daily"}))["statusUrl"]
    for _ in range(3):
        assert gateway.request("GET", status_url, user=user).status_code == 202
    limited(gateway.request("GET", status_url, user=user), "status_rate_limited")
    limited(gateway.request("GET", "/start/req_nope", user=user), "status_rate_limited")  # any id counts


def test_proxy_calls_per_minute(gateway: Gateway, emulator: EmulatorServer,
                                configure_stage: Callable[..., None]) -> None:
    configure_stage(PROXY_RATE_PER_MINUTE="2")
    user = new_user()
    session_id = body(gateway.start(user, {"transport": "daily"}))["sessionId"]
    for _ in range(2):
        assert gateway.request("GET", f"/sessions/{session_id}/status", user=user).status_code == 200
    before = len(emulator.org.proxy_calls)
    limited(gateway.request("GET", f"/sessions/{session_id}/status", user=user), "proxy_rate_limited")
    assert len(emulator.org.proxy_calls) == before  # the bot never saw it


def test_concurrent_long_polls_per_user(gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
                                        configure_stage: Callable[..., None]) -> None:
    configure_stage(LONG_POLLS_PER_USER="1")
    user = new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    status_url = body(gateway.start(user, {"transport": "daily"}))["statusUrl"]
    first: list[Any] = []
    poller = threading.Thread(target=lambda: first.append(gateway.request("GET", f"{status_url}?wait=8", user=user)))
    poller.start()
    seat = {"PK": f"HOLD#longpoll#{user}", "SK": "0"}
    deadline = time.monotonic() + 30  # until the first long-poll holds its seat (observed, not assumed)
    while "Item" not in dynamo.table().get_item(Key=seat, ConsistentRead=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    limited(gateway.request("GET", f"{status_url}?wait=3", user=user), "too_many_long_polls")
    assert gateway.request("GET", status_url, user=user).status_code == 202  # a plain poll is not a long-poll
    poller.join()
    assert first[0].status_code == 202
    assert gateway.request("GET", f"{status_url}?wait=1", user=user).status_code == 202  # the seat was given back
