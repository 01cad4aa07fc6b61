"""`make dev`'s orchestrator on a free set of ports: health, a /start through moto's secret to the
emulator, and Ctrl-C stopping everything it started (config restored)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LocalStack

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_local_stack_serves_health_and_start_then_stops_cleanly() -> None:
    config = ROOT / ".chalice" / "config.json"
    before = config.read_text()
    stack = LocalStack()
    try:
        stack.wait_ready()
        health = httpx.get(f"{stack.api_url}/health", timeout=5)
        assert health.json() == {"status": "ok", "stage": "local"}
        started = httpx.post(f"{stack.api_url}/start", json={"transport": "daily"},
                             headers={"X-Dev-User": "e2e-user"}, timeout=20)
        assert started.status_code == 200, started.text
        session_id = started.json()["sessionId"]
        assert httpx.get(f"{stack.emulator_url}/_emulator/stats").json()["started"] == 1
        listed = httpx.get(f"{stack.emulator_url}/v1/agents/my-agent/sessions",
                           headers={"Authorization": "Bearer sk_emulator_private"}).json()
        assert [s["sessionId"] for s in listed["sessions"]] == [session_id]
    finally:
        out = stack.stop()
    assert "[make dev] stopped" in out, out[-3000:]
    assert config.read_text() == before
    for port in (stack.api, stack.moto, stack.emu, stack.demo):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
