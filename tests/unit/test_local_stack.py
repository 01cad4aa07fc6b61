"""Pieces of `make dev`'s launcher: the generated project dir, port checks, stale-run clean-up, schedules."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infra import local_stack
from infra.sqs_poller import schedules

ROOT = Path(__file__).resolve().parents[2]


def test_generated_project_links_only_the_app_code(tmp_path: Path) -> None:
    project = local_stack.generated_project(tmp_path / "dev-1")
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file() or p.is_symlink())
    expected = sorted(["app.py", ".chalice/config.json",
                       *(str(p.relative_to(ROOT)) for p in (ROOT / "chalicelib").rglob("*.py")
                         if "__pycache__" not in p.parts)])
    assert files == expected  # chalice --autoreload watches this dir: no .venv, no node_modules
    assert (project / "app.py").resolve() == ROOT / "app.py"
    assert (project / ".chalice" / "config.json").read_text() == (ROOT / ".chalice" / "config.json").read_text()
    assert not (project / ".chalice" / "config.json").is_symlink()  # a copy: writing it leaves ours alone


def test_taken_ports_are_named_with_the_variable_to_change() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with socket.socket() as probe:  # bound, not listening: free for a server binding as ours do, and kept
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ours while checked (no race for it)
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
            problems = local_stack.taken_ports({"API_PORT": (taken, "chalice local"), "MOTO_PORT": (free, "moto")})
    assert len(problems) == 1 and f"port {taken} (API_PORT" in problems[0] and f"API_PORT={taken + 1}" in problems[0]


def test_a_port_whose_last_server_left_time_wait_sockets_is_free() -> None:
    """A server that closed its connections first leaves them in TIME_WAIT on its port for ~60 s; a new
    server binding with SO_REUSEADDR (as ours do) gets the port, so the check must not call it taken."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server closes first: its end goes to TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    states = subprocess.run(["ss", "-tan", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert "TIME-WAIT" in states or not states, states  # (ss missing: nothing to show, the check still runs)
    assert not local_stack.port_in_use(port)
    with socket.socket() as holder:  # while something listens, it is taken
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert local_stack.port_in_use(port)


def test_only_runs_of_dead_launchers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"dev-{dead.pid}").mkdir()
    (tmp_path / f"dev-{os.getpid()}").mkdir()
    local_stack.remove_stale_runs(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"dev-{os.getpid()}"]


def test_schedules_run_at_their_rate_unless_overridden() -> None:
    from app import app

    assert schedules(app) == {"detect_ended": 60.0, "reconcile_sessions": 300.0}
    assert schedules(app, 2.0) == {"detect_ended": 2.0, "reconcile_sessions": 2.0}


def test_the_console_shows_the_gateways_records_as_short_lines() -> None:
    record = {"level": "INFO", "location": "x:1", "message": "session started",
              "timestamp": "2026-12-02 06:44:19,123+0000", "service": "pipecat-gateway", "session_id": "s1",
              "user_id": "alice", "xray_trace_id": "1-2"}
    assert local_stack.readable(json.dumps(record) + "\n") == \
        "06:44:19 INFO    session started  user_id=alice session_id=s1"
    failed = {**record, "level": "ERROR", "message": "unhandled error", "exception": "Traceback ...\nValueError: x"}
    assert local_stack.readable(json.dumps(failed)).endswith("\nTraceback ...\nValueError: x")
    assert local_stack.readable('{"_aws": {"CloudWatchMetrics": []}, "SessionsStarted": [1]}') is None
    assert local_stack.readable("POST /start 200 12 ms user=alice") == "POST /start 200 12 ms user=alice"
    assert local_stack.readable("{not json") == "{not json"


def test_a_metric_record_glued_to_other_output_is_still_kept_off_the_console() -> None:
    """Under concurrent requests Powertools' print of a record and of its newline are two writes, and another
    thread's output lands between them (seen in CI: a record followed by urllib3's pool warning)."""
    metric = '{"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "N"}]}, "StartsQueued": [1.0]}'
    assert local_stack.readable(metric + "Connection pool is full\n") == "Connection pool is full"
    assert local_stack.readable("=load-18" + metric) == "=load-18"
    assert local_stack.readable(metric + metric) is None
    record = {"level": "INFO", "message": "queued", "timestamp": "2026-12-02 06:44:19,123+0000", "user_id": "u"}
    assert local_stack.readable(metric + json.dumps(record)) == "06:44:19 INFO    queued  user_id=u"
    assert local_stack.readable('{"_aws" is not json') == '{"_aws" is not json'
    assert local_stack.readable("") == ""


def test_a_request_line_names_method_route_status_time_and_user_but_no_query() -> None:
    from infra.chalice_local import request_line

    assert request_line("GET", "/start/req_1?wait=5&token=x", 202, 0.0412, "alice") == \
        "GET /start/req_1 202 41 ms user=alice"
    assert request_line("POST", "/start", 401, 0.001, None).endswith("user=-")
    assert request_line("POST", "/start", 401, 0.001, "evil\nINJECTED").endswith("user=-")


def test_events_are_signed_with_your_secret_which_is_never_printed(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`make dev` with EVENTS_WEBHOOK_URL: your EVENTS_WEBHOOK_SECRET goes into the local secret and never to the
    console; without one, the published local default is used and named."""
    monkeypatch.setenv("PCC_PUBLIC_KEY", "pk_test")  # the real-keys path: nothing is started
    monkeypatch.setenv("EVENTS_WEBHOOK_URL", "http://127.0.0.1:9/events")
    monkeypatch.setenv("EVENTS_WEBHOOK_SECRET", "whsec_bXktb3duLXNlY3JldC1ub2JvZHktc2hvdWxkLXNlZQ==")
    ports = local_stack.Ports(api=0, moto=0, emulator=0, demo=0)
    env, secret = local_stack.backend(local_stack.Stack(), Path("/nonexistent"), ports, ports, real_keys=True)
    printed = capsys.readouterr().out
    assert secret["events_webhook_secret"] == "whsec_bXktb3duLXNlY3JldC1ub2JvZHktc2hvdWxkLXNlZQ=="
    assert "bXktb3du" not in printed and "your EVENTS_WEBHOOK_SECRET" in printed
    assert env["EVENTS_WEBHOOK_URL"] == "http://127.0.0.1:9/events" and "pk_test" not in printed
    monkeypatch.delenv("EVENTS_WEBHOOK_SECRET")
    _, secret = local_stack.backend(local_stack.Stack(), Path("/nonexistent"), ports, ports, real_keys=True)
    assert secret["events_webhook_secret"] == local_stack.LOCAL_EVENTS_SECRET
    assert f"EVENTS_WEBHOOK_SECRET={local_stack.LOCAL_EVENTS_SECRET}" in capsys.readouterr().out
