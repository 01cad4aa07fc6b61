"""The demo page, built on the real @pipecat-ai/client-js, driven in headless Debian Chromium against the
local stack: each transport started and connected through the gateway as far as the emulator lets it, a queued
start polled to success and one cancelled, a double click, a 401, a guest's start, local times, the favicon, a
narrow screen."""

from __future__ import annotations

import json
import os
import re
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
    assert result["favicon"] == 200
    # SmallWebRTC, double-clicked: one bot; the offer went through the gateway's proxy and was answered, and
    # the page says plainly why no audio follows against the emulator
    webrtc = result["webrtc"]
    assert webrtc["text"].startswith("started: ") and webrtc["transport"] == "webrtc"
    assert webrtc["keys"] == "iceConfig,sessionId"
    assert result["botsAfterDoubleClick"] == 1
    offers = json.loads(result["webrtcConnection"]["offers"])  # client-js retries a failed connection 3 times
    assert 1 <= result["offerCalls"] == len(offers) <= 4 and {o["status"] for o in offers} == {200}
    assert "offer reached the bot through the gateway and was answered (200)" in result["webrtcConnection"]["text"]
    assert "PCC_PUBLIC_KEY" in result["webrtcConnection"]["text"]
    # times are shown local and readable, never raw ISO UTC
    assert not re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", result["listedText"]), result["listedText"]
    # a 422 reads as a sentence in client-js, never "[object Object]"
    assert result["invalidText"].startswith("error: Invalid request: transport:"), result["invalidText"]
    assert "[object Object]" not in result["invalidText"]
    # websocket: exactly {token, wsUrl}, no query in the URL, the session id found via /sessions, token redeemed
    ws = result["websocket"]
    assert ws["keys"] == "token,wsUrl" and ws["sessionId"]
    assert result["websocketBot"] is not None and result["websocketBot"]["connected"] is True  # token redeemed
    assert "websocket" in result["websocketConnection"]["text"] or result["websocketConnection"]["state"] != "error"
    # daily: a room from the gateway; joining it needs the real Daily, said plainly
    assert result["daily"]["keys"] == "dailyRoom,dailyToken,sessionId"
    daily = result["dailyConnection"]
    assert daily["state"] == "ready" or "could not join it" in daily["text"], daily
    assert result["hungUpStatus"] == f"stopped: {result['daily']['sessionId']}"  # hanging up stops the session
    # a queued websocket start goes through the helper: queued, then started (never "websocket: undefined")
    assert result["queuedText"].startswith("queued: position 1, attempt"), result["queuedText"]
    assert result["startedAfterQueue"]["keys"] == "token,wsUrl" and result["startedAfterQueue"]["sessionId"]
    assert result["startedAfterQueue"]["sessionId"] != ws["sessionId"]
    # giving up a queued start cancels it: the gateway holds nothing pending, no bot was started for it
    assert result["cancelledText"].startswith("cancelled:"), result["cancelledText"]
    assert result["pendingAfterCancel"] == {"starts": []}
    assert result["botsStartedByCancelled"] == 0
    assert result["stoppedStatus"] == f"stopped: {webrtc['sessionId']}"
    # a 401 is said, not shown as an empty list
    assert result["unauthorizedText"].startswith("error: could not list your sessions (401)"), \
        result["unauthorizedText"]
    # a guest: a token from the fake human check, a start the bot sees as a guest's, only its own session listed
    guest = result["guest"]
    assert guest["guestId"].startswith("guest_") and guest["keys"] == "dailyRoom,dailyToken,sessionId"
    assert result["guestBot"] == {"id": guest["guestId"], "guest": True}
    assert result["guestListed"] == [guest["sessionId"]]
    assert result["guestHungUp"] == f"stopped: {guest['sessionId']}"
    # the operator view: our active sessions and Pipecat Cloud's count as the emulator has them; a block ends the
    # user's bot and every route refuses them; the gate closes and opens from the page
    view = result["operatorView"]
    assert view["gate"] == "open" and int(view["ours"]) == int(view["pipecat"]) == result["emulatorActive"] >= 1, view
    assert result["victimBotActive"] is False
    assert result["victimListed"] == {"status": 403, "code": "user_blocked"}
    assert "closed (maintenance: Closed from the demo's operator view)" in result["closedView"]
    assert result["startWhileClosed"] == {"status": 503, "code": "starts_closed"}
    assert result["startAfterOpen"] == 200
    assert result["narrowOverflow"] <= 0
    stats = httpx.get(f"{local_stack.emulator_url}/_emulator/stats").json()
    assert stats["started"] >= 4
    assert screenshot.stat().st_size > 5000
    keep = os.environ.get("DEMO_SCREENSHOT_DIR")
    if keep:
        shutil.copy(screenshot, Path(keep) / "demo.png")
