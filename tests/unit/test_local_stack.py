"""Pieces of `make dev`'s launcher: the generated project dir, port checks, stale-run clean-up, schedules."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from infra import local_stack
from infra.sqs_poller import schedules

ROOT = Path(__file__).resolve().parents[2]


def test_generated_project_links_only_the_app_code(tmp_path: Path) -> None:
    project = local_stack.generated_project(tmp_path / "dev-1")
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file() or p.is_symlink())
    expected = sorted(["app.py", ".chalice/config.json",
                       *(f"chalicelib/{p.name}" for p in (ROOT / "chalicelib").glob("*.py"))])
    assert files == expected  # chalice --autoreload watches this dir: no .venv, no node_modules
    assert (project / "app.py").resolve() == ROOT / "app.py"
    assert (project / ".chalice" / "config.json").read_text() == (ROOT / ".chalice" / "config.json").read_text()
    assert not (project / ".chalice" / "config.json").is_symlink()  # a copy: writing it leaves ours alone


def test_taken_ports_are_named_with_the_variable_to_change() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        problems = local_stack.taken_ports({"API_PORT": (taken, "chalice local"), "MOTO_PORT": (free, "moto")})
    assert len(problems) == 1 and f"port {taken} (API_PORT" in problems[0] and f"API_PORT={taken + 1}" in problems[0]


def test_only_runs_of_dead_launchers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"dev-{dead.pid}").mkdir()
    (tmp_path / f"dev-{os.getpid()}").mkdir()
    local_stack.remove_stale_runs(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"dev-{os.getpid()}"]


def test_schedules_run_at_their_rate_unless_overridden() -> None:
    from app import app

    assert schedules(app) == {"reconcile_sessions": 300.0}
    assert schedules(app, 2.0) == {"reconcile_sessions": 2.0}
