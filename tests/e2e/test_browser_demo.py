"""The demo page, built on the real @pipecat-ai/client-js, driven in headless Debian Chromium against the
local stack: a direct start, a queued start polled to success, listing and stopping a session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, LocalStack

DEMO = ROOT / "infra" / "demo"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.mark.timeout(300)
def test_demo_page_starts_queues_lists_and_stops(local_stack: LocalStack, tmp_path: Path) -> None:
    assert (DEMO / "dist" / "demo.js").exists(), "build the demo first: make demo"
    assert Path(CHROMIUM).exists(), "install Debian's chromium (apt-get install chromium)"
    assert shutil.which("node"), "node is required"
    screenshot = tmp_path / "demo.png"
    out = subprocess.run(["node", "e2e.mjs", local_stack.demo_url, local_stack.api_url, local_stack.emulator_url,
                          str(screenshot)], cwd=DEMO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["consoleErrors"] == []
    assert result["sessionId"] and result["started"].startswith("started: ")
    assert result["sessionId"] in result["listed"]
    assert result["queuedText"].startswith("queued: position 1, attempt")
    assert result["startedAfterQueue"] and result["startedAfterQueue"] != result["sessionId"]
    assert result["stoppedStatus"] == f"stopped: {result['sessionId']}"
    # giving up a queued start cancels it: the gateway holds nothing pending for the user
    assert result["cancelledText"].startswith("cancelled:"), result["cancelledText"]
    assert result["pendingAfterCancel"] == {"starts": []}
    # a 422 reads as a sentence in client-js, never "[object Object]"
    assert result["invalidText"].startswith("error: Invalid request: transport:"), result["invalidText"]
    assert "[object Object]" not in result["invalidText"]
    # a websocket start with an 8 KB body: exactly {token, wsUrl}, no query in the URL, id found via /sessions
    ws = result["ws"]
    assert ws["state"] == "started", ws
    assert ws["keys"] == "token,wsUrl" and "?" not in ws["wsUrl"]
    active_ids = {s["sessionId"] for s in result["wsSessions"]["sessions"]}
    assert ws["sessionId"] in active_ids
    stats = httpx.get(f"{local_stack.emulator_url}/_emulator/stats").json()
    assert stats["started"] >= 2
    assert screenshot.stat().st_size > 5000
    keep = os.environ.get("DEMO_SCREENSHOT_DIR")
    if keep:
        shutil.copy(screenshot, Path(keep) / "demo.png")
