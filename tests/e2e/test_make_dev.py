"""`make dev`'s orchestrator on a free set of ports: health, a /start through moto's secret to the
emulator, and Ctrl-C stopping everything it started (config restored)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(180)
def test_local_stack_serves_health_and_start_then_stops_cleanly() -> None:
    config = ROOT / ".chalice" / "config.json"
    before = config.read_text()
    api, moto, emu = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "API_PORT": str(api), "MOTO_PORT": str(moto), "EMULATOR_PORT": str(emu)}
    env.pop("PCC_PUBLIC_KEY", None)
    env.pop("AWS_ENDPOINT_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "infra.local_stack"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{api}/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert health is not None and health.json() == {"status": "ok", "stage": "local"}
        started = httpx.post(f"http://127.0.0.1:{api}/start", json={"transport": "daily"},
                             headers={"X-Dev-User": "e2e-user"}, timeout=20)
        assert started.status_code == 200, started.text
        session_id = started.json()["sessionId"]
        stats = httpx.get(f"http://127.0.0.1:{emu}/_emulator/stats").json()
        assert stats["started"] == 1
        listed = httpx.get(f"http://127.0.0.1:{emu}/v1/agents/my-agent/sessions",
                           headers={"Authorization": "Bearer sk_emulator_private"}).json()
        assert [s["sessionId"] for s in listed["sessions"]] == [session_id]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert "[make dev] stopped" in out, out[-3000:]
    assert config.read_text() == before
    for port in (api, moto, emu):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
