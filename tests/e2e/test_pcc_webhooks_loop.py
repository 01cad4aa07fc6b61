"""The whole loop of Pipecat Cloud's organisation webhooks under `make dev` (docs/operations.md): the emulator signs
and sends them to the gateway (`chalice local`, over HTTP), which acts on them. Counted at the emulator: what it
sent and how the gateway answered, and every start call it had."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from tests.e2e.conftest import LocalStack


@pytest.fixture(scope="module")
def stack(local_stack: LocalStack) -> Iterator[LocalStack]:
    yield local_stack
    admin(local_stack, "org", {"spend_limited": False})
    admin(local_stack, "agents/my-agent", {"suspended": None})


def admin(stack: LocalStack, path: str, body: Any) -> Any:
    return httpx.post(f"{stack.emulator_url}/_emulator/{path}", json=body, timeout=10).raise_for_status().json()


def delivered(stack: LocalStack, event_type: str, seen: int) -> dict[str, Any]:
    """The next delivery of `event_type` after the first `seen` (waits for the emulator's sender: no time is
    asserted, only that it arrives and how the gateway answered it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [d for d in httpx.get(f"{stack.emulator_url}/_emulator/webhooks").json()["deliveries"]
                 if d["event_type"] == event_type]
        if len(found) > seen:
            return dict(found[seen])
        time.sleep(0.2)
    raise AssertionError(f"the emulator sent no {event_type}")


def count(stack: LocalStack, event_type: str) -> int:
    return sum(1 for d in httpx.get(f"{stack.emulator_url}/_emulator/webhooks").json()["deliveries"]
               if d["event_type"] == event_type)


def start(stack: LocalStack, user: str) -> httpx.Response:
    return httpx.post(f"{stack.api_url}/start", json={"transport": "daily"}, headers={"X-Dev-User": user},
                      timeout=30)


def start_calls(stack: LocalStack) -> int:
    return int(httpx.get(f"{stack.emulator_url}/_emulator/stats").json()["startCalls"])


@pytest.mark.timeout(240)
def test_the_emulator_tells_the_gateway_and_the_gateway_acts(stack: LocalStack) -> None:
    hooks = httpx.get(f"{stack.emulator_url}/_emulator/webhooks").json()
    assert hooks["url"] == f"{stack.api_url}/pcc/webhooks"  # make dev wired it
    # a session we started: Pipecat Cloud's session.started confirms our record
    seen = count(stack, "session.started")
    started = start(stack, "webhook-user")
    assert started.status_code == 200, started.text
    session_id = started.json()["sessionId"]
    confirmation = delivered(stack, "session.started", seen)
    assert confirmation["status"] == 200
    table = boto3.resource("dynamodb", endpoint_url=f"http://127.0.0.1:{stack.moto}", region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    sessions = table.Table("pipecat-gateway-local-sessions")
    deadline = time.monotonic() + 60  # confirmed at once, or by the first look if it beat the record (5 s)
    while time.monotonic() < deadline and not sessions.get_item(
            Key={"PK": f"SESSION#{session_id}", "SK": "META"})["Item"].get("pcc_confirmed_at"):
        time.sleep(0.5)
    assert sessions.get_item(Key={"PK": f"SESSION#{session_id}", "SK": "META"})["Item"].get("pcc_confirmed_at")
    # the spend limit, then a suspension: each webhook closes its gate (no start reaches Pipecat Cloud while it is
    # closed), and the one that lifts it opens it again
    closes_then_opens(stack, "org", {"spend_limited": True}, {"spend_limited": False},
                      ("spend.limit_reached", "spend.limit_cleared"), "spend_limit_reached", "webhook-user-2")
    closes_then_opens(stack, "agents/my-agent", {"suspended": "trial_exhausted"}, {"suspended": None},
                      ("service.suspended", "service.resumed"), "agent_suspended", "webhook-user-3")


def closes_then_opens(stack: LocalStack, path: str, close: Any, reopen: Any, events: tuple[str, str], code: str,
                      user: str) -> None:
    closed_by, opened_by = events
    seen = count(stack, closed_by)
    admin(stack, path, close)
    assert delivered(stack, closed_by, seen)["status"] == 200
    calls = start_calls(stack)
    refused = start(stack, user)
    assert refused.status_code == 503 and refused.json()["code"] == code, refused.text
    assert start_calls(stack) == calls
    seen = count(stack, opened_by)
    admin(stack, path, reopen)
    assert delivered(stack, opened_by, seen)["status"] == 200
    assert start(stack, user).status_code == 200
