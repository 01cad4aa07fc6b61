"""`make dev`'s orchestrator on free ports: it serves, and however it is stopped (Ctrl-C, SIGTERM, or the
launcher killed outright) nothing tracked changes and nothing it started keeps running. It names a taken
port or a component that died, runs the reconcile schedule locally, and says what dev auth expects."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LocalStack
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]


def repo_state() -> tuple[str, str]:
    """Which tracked files differ from HEAD (and how), and which untracked, unignored files exist."""
    status = subprocess.run(["git", "status", "--porcelain=v1", "-uall"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return status, diff


def served(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_closed(ports: tuple[int, ...], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        still = [p for p in ports if served(p)]
        if not still:
            return []
        time.sleep(0.2)
    return [p for p in ports if served(p)]


def own_run_dirs(stack: LocalStack) -> list[Path]:
    return list((ROOT / ".local").glob(f"dev-{stack.proc.pid}"))


@pytest.mark.timeout(180)
def test_local_stack_serves_health_and_start_then_stops_cleanly_on_ctrl_c() -> None:
    before = repo_state()
    stack = LocalStack()
    try:
        stack.wait_ready()
        assert repo_state() == before  # running writes nothing tracked either
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
        # a local load test meets DynamoDB's semantics (moto with atomic writes, infra/moto_atomic.py): 20
        # concurrent starts against capacity 5 are started or queued, none fails on a moto race
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda n: httpx.post(
                f"{stack.api_url}/start", json={"transport": "daily"}, headers={"X-Dev-User": f"load-{n}"},
                timeout=60), range(20)))
        statuses = [a.status_code for a in answers]
        odd = [(a.status_code, a.text) for a in answers if a.status_code not in (200, 202)]
        assert not odd and statuses.count(200) <= 4, (statuses, odd, stack.gateway_log_tail())
        # the events outbox's stream is fed to the same handler Lambda runs: the starts' events reach EventBridge
        events_log = stack.log_dir / "events.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and '"message":"events delivered"' not in events_log.read_text():
            time.sleep(0.2)
        assert '"message":"events delivered"' in events_log.read_text(), events_log.read_text()[-3000:]
        unauthenticated = httpx.post(f"{stack.api_url}/start", json={}, timeout=10)
        assert unauthenticated.status_code == 401 and "X-Dev-User" in unauthenticated.json()["detail"]
        assert own_run_dirs(stack)
    finally:
        out = stack.stop()
    assert "[make dev] stopped" in out and "killed after" not in out, out[-3000:]
    assert repo_state() == before
    assert not own_run_dirs(stack)
    assert wait_closed(stack.ports) == []
    # a console a person can read: one line per request, moto's and the emulator's output in named files
    assert re.search(r"^POST /start 200 \d+ ms user=e2e-user$", out, re.M), out[-3000:]
    assert re.search(r"^POST /start 401 \d+ ms user=-$", out, re.M), out[-3000:]
    assert "-m infra.moto_atomic" in out  # the AWS the tests trust
    assert f"(output: {stack.log_dir}/moto.log)" in out and f"(output: {stack.log_dir}/emulator.log)" in out
    assert '"POST / HTTP/1.1"' not in out and "HTTP/1.1\" 200" not in out  # no access lines
    assert '"_aws"' not in out  # EMF metric records stay in the log file
    assert (stack.log_dir / "moto.log").stat().st_size > 0
    assert '"_aws"' in (stack.log_dir / "gateway.log").read_text()


@pytest.mark.timeout(180)
def test_sigterm_stops_like_ctrl_c() -> None:
    before = repo_state()
    stack = LocalStack()
    stack.wait_ready()
    out = stack.stop(signal.SIGTERM)
    assert stack.proc.returncode == 0 and "[make dev] stopped" in out, out[-3000:]
    assert repo_state() == before and not own_run_dirs(stack)
    assert wait_closed(stack.ports) == []


@pytest.mark.timeout(360)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_started_with_nohup_it_still_stops_on_ctrl_c_and_sigterm_and_restarts_at_once(sig: int) -> None:
    """`nohup make dev &` starts the launcher with SIGINT ignored; Ctrl-C (SIGINT) and SIGTERM must still stop
    it and every child (each on its own signal, none killed after the STOP_GRACE_SECONDS that keep a stop under
    5 s), and the next `make dev` on the same ports must start at once (the sockets the last one left in TIME_WAIT
    are no "port in use"). A port freed is free for anyone: should another process's connection take one in
    between (its "already in use" names a port nobody listens on), the pair is tried again on new ports."""
    for _ in range(3):
        first = LocalStack(ignore_sigint=True)
        first.wait_ready()
        httpx.post(f"{first.api_url}/start", json={}, headers={"X-Dev-User": "restart-user"}, timeout=20)
        out = first.stop(sig)
        assert first.proc.returncode == 0 and "[make dev] stopped" in out, out[-3000:]
        assert "killed after" not in out, out[-3000:]  # every component stopped on its signal
        assert wait_closed(first.ports) == []
        second = LocalStack(ports=(first.api, first.moto, first.emu, first.demo))
        try:
            second.wait_ready()
            assert httpx.get(f"{second.api_url}/health", timeout=5).status_code == 200
        except RuntimeError:
            raced = second.proc.returncode == 2 and "already in use" in second.output
            if raced and not [p for p in first.ports if served(p)]:
                continue  # taken by another process's connection, not by a listener of ours
            raise
        finally:
            out = second.stop()
        assert "already in use" not in out, out[-3000:]
        return
    pytest.fail("three pairs of ports were taken by other processes between stop and restart")


@pytest.mark.timeout(180)
def test_kill_9_of_the_launcher_takes_its_children_down_and_the_next_run_cleans_up() -> None:
    before = repo_state()
    stack = LocalStack()
    stack.wait_ready()
    os.kill(stack.proc.pid, signal.SIGKILL)
    stack.proc.wait()
    assert wait_closed(stack.ports) == []  # the kernel told every child (PR_SET_PDEATHSIG)
    assert repo_state() == before
    left = own_run_dirs(stack)
    assert left  # an ignored generated dir is all that stays...
    second = LocalStack()
    try:
        second.wait_ready()
        assert not [p for p in left if p.exists()]  # ...until the next run removes it
    finally:
        second.stop()
    assert repo_state() == before


@pytest.mark.timeout(60)
def test_a_taken_port_is_named_before_anything_starts() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        stack = LocalStack(API_PORT=str(taken))
        stack.proc.wait(timeout=30)
        out = stack.stop()
    assert stack.proc.returncode == 2, out
    assert f"port {taken} (API_PORT, for the chalice local) is already in use" in out
    assert "starting" not in out and "Traceback" not in out


@pytest.mark.timeout(90)
def test_a_component_that_dies_is_named() -> None:
    stack = LocalStack(EMULATOR_MAX_AGENTS="lots")
    stack.proc.wait(timeout=60)
    out = stack.stop()
    assert stack.proc.returncode == 1, out
    assert "[make dev] Pipecat Cloud emulator exited with code 2" in out, out[-3000:]
    assert wait_closed(stack.ports) == []


@pytest.mark.timeout(120)
def test_the_reconcile_schedule_runs_locally() -> None:
    stack = LocalStack(LOCAL_SCHEDULE_SECONDS="1")
    try:
        stack.wait_ready()
        user = {"X-Dev-User": "schedule-user"}
        session_id = httpx.post(f"{stack.api_url}/start", json={}, headers=user, timeout=20).json()["sessionId"]
        httpx.post(f"{stack.emulator_url}/_emulator/sessions/{session_id}/end", json={}).raise_for_status()
        deadline = time.monotonic() + 30
        status = "active"
        while time.monotonic() < deadline and status == "active":
            time.sleep(0.5)
            listed = httpx.get(f"{stack.api_url}/sessions", headers=user, timeout=10).json()
            status = listed["sessions"][0]["status"]
        assert status == "ended"  # our record, updated by the schedules the local event sources run
        # detect_ended (every 1 s here too) may record the end first: wait for reconcile_sessions' own run, which
        # the stop below could otherwise cut short before it prints (a CI-loaded run did)
        events = stack.log_dir / "events.log"
        assert wait_for(lambda: "[local events] reconcile_sessions" in events.read_text(errors="replace"))
    finally:
        out = stack.stop()
    assert "[local events] reconcile_sessions" in out


def listen_backlog(port: int) -> int:
    """The accept queue a listener on 127.0.0.1:`port` was given (`ss` shows it as Send-Q of a LISTEN socket)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return max(int(line.split()[2]) for line in out.splitlines() if line.strip())


@pytest.mark.timeout(300)
def test_kept_alive_clients_under_load_get_the_gateways_answers_never_a_reset() -> None:
    """256 starts from 32 callers sharing one pool of kept-alive connections (as browsers and app servers call),
    Pipecat Cloud answering in 1 s with room for all: every start is answered 200 by the gateway, and the emulator
    started exactly one bot per start, each for its own user. Before, http.server's listen backlog of 5 overflowed
    when the callers connected at once, and some got `Connection reset by peer` with no request ever logged."""
    stack = LocalStack(EMULATOR_MAX_AGENTS="1000")
    try:
        stack.wait_ready()
        assert listen_backlog(stack.api) >= 128 and listen_backlog(stack.emu) >= 128  # http.server's default: 5
        httpx.post(f"{stack.emulator_url}/_emulator/knobs", json={"start_latency_ms": 1000}).raise_for_status()
        users = [f"keepalive-{n}" for n in range(256)]
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        with httpx.Client(limits=limits, timeout=120) as client:

            def start(user: str) -> str:
                try:
                    answer = client.post(f"{stack.api_url}/start", json={"transport": "daily"},
                                         headers={"X-Dev-User": user})
                except httpx.HTTPError as exc:
                    return f"{type(exc).__name__}: {exc}"
                return str(answer.status_code)

            with ThreadPoolExecutor(max_workers=32) as pool:
                answers = list(pool.map(start, users))
        odd = [a for a in answers if a != "200"]
        assert not odd, (len(odd), sorted(set(odd))[:5], stack.gateway_log_tail())
        bots = httpx.get(f"{stack.emulator_url}/_emulator/sessions").json()["sessions"]
        assert sorted(b["body"]["user"]["id"] for b in bots) == sorted(users)  # one bot per start, its own user
    finally:
        stack.stop()


@pytest.mark.timeout(120)
def test_an_unknown_route_is_404_route_not_found_as_deployed(local_stack: LocalStack) -> None:
    """The deployed stage answers a path no route matches with its gateway response (infra/api_guard_rails.py):
    404 `route_not_found` as JSON {detail, code}; `make dev` does the same, with or without a token."""
    from infra.api_guard_rails import GATEWAY_RESPONSES

    status, code, detail = GATEWAY_RESPONSES["MISSING_AUTHENTICATION_TOKEN"]
    for headers in ({}, {"Authorization": "Bearer x"}, {"X-Dev-User": "someone"}):
        for method, path in (("GET", "/session"), ("POST", "/nope/deeper"), ("DELETE", "/")):
            answer = httpx.request(method, f"{local_stack.api_url}{path}", headers=headers, timeout=10)
            assert answer.status_code == int(status or 0) == 404, (method, path, answer.text)
            assert answer.json() == {"detail": detail, "code": code}
            assert answer.headers["content-type"] == "application/json"
    assert httpx.get(f"{local_stack.api_url}/health", timeout=10).status_code == 200  # routes still route



@pytest.mark.timeout(180)
def test_events_locally_as_the_events_page_says() -> None:
    """docs/events.md, "Locally": with EVENTS_WEBHOOK_URL pointing at a local receiver, `make dev` signs the
    lifecycle events (EVENTS_WEBHOOK_SECRET, or the published local default) and they arrive, verifiable with the
    standardwebhooks library; before, the local secret had no signing key and every event went to the DLQ."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from standardwebhooks.webhooks import Webhook

    from infra.local_stack import LOCAL_EVENTS_SECRET

    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    docs = (ROOT / "docs" / "events.md").read_text()
    assert LOCAL_EVENTS_SECRET in docs and "EVENTS_WEBHOOK_SECRET" in docs
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    stack = LocalStack(EVENTS_WEBHOOK_URL=f"http://127.0.0.1:{receiver.server_address[1]}/events")
    try:
        stack.wait_ready()
        started = httpx.post(f"{stack.api_url}/start", json={"transport": "daily"},
                             headers={"X-Dev-User": "events-user"}, timeout=20)
        assert started.status_code == 200, started.text
        wait_for(lambda: any(b'"session.started"' in body for _, body in received))
    finally:
        out = stack.stop()
        receiver.shutdown()
    assert f"EVENTS_WEBHOOK_SECRET={LOCAL_EVENTS_SECRET}" in out
    events = [Webhook(LOCAL_EVENTS_SECRET).verify(body, headers) for headers, body in received]  # raises if forged
    started_event = next(e for e in events if e["type"] == "session.started")
    assert started_event["sessionId"] == started.json()["sessionId"], json.dumps(events)[:2000]
