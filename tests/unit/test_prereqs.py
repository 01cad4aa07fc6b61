"""`make dev` / `make test` say what the machine lacks, and how to get it, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from infra.prereqs import problems

ROOT = Path(__file__).resolve().parents[2]


def everything(tool: str) -> str | None:
    return f"/usr/bin/{tool}"


def test_a_complete_machine_has_no_problems(tmp_path: Path) -> None:
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    assert problems("test", {"CHROMIUM_PATH": str(chromium)}, everything, (3, 11)) == []


def test_an_old_python_is_named_with_the_fix() -> None:
    [found] = problems("dev", {}, everything, (3, 9))
    assert "Python 3.11 or newer" in found and "3.9" in found and "apt-get install" in found


def test_missing_node_and_chromium_are_named(tmp_path: Path) -> None:
    found = problems("test", {"CHROMIUM_PATH": str(tmp_path / "nope")}, lambda t: None if t == "node" else "/x",
                     (3, 12))
    assert any("`node`" in f and "apt-get install nodejs" in f for f in found)
    assert any("CHROMIUM_PATH" in f and "apt-get install chromium" in f for f in found)
    assert problems("dev", {"CHROMIUM_PATH": str(tmp_path / "nope")}, everything, (3, 12)) == []  # dev needs none


def test_the_script_exits_1_and_says_so() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "infra" / "prereqs.py"), "test"], capture_output=True,
                         text=True, env={"PATH": "/nonexistent", "CHROMIUM_PATH": "/nonexistent/chromium"})
    assert out.returncode == 1
    assert "[make test] missing:" in out.stderr and "then run `make test` again" in out.stderr
