"""`make test`'s two phases (the parallel suite, then the load tests marked `alone`): the second runs whatever the
first gave, so one red test never hides another; the target fails if either fails, and a phase that collected no
test (pytest's exit 5) is a failure, never a silent pass. Driven with a stand-in for the venv's python."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def phases(tmp_path: Path, first: int, alone: int) -> tuple[int, list[str], str]:
    calls = tmp_path / "calls"
    stub = tmp_path / "python"
    stub.write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$*" in *"not alone"*) exit {first};; *) exit {alone};; esac
""")
    stub.chmod(0o755)
    done = subprocess.run(["make", "--no-print-directory", "-s", "test-suites", f"PY={stub}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, calls.read_text().splitlines(), done.stdout + done.stderr


@pytest.mark.parametrize(("first", "alone", "passes"), [(0, 0, True), (1, 0, False), (0, 1, False), (1, 1, False),
                                                         (5, 0, False), (0, 5, False)])
def test_both_phases_always_run_and_either_fails_the_target(tmp_path: Path, first: int, alone: int,
                                                            passes: bool) -> None:
    code, calls, out = phases(tmp_path, first, alone)
    assert len(calls) == 2 and "not alone" in calls[0] and calls[1].endswith("-m alone"), calls
    assert (code == 0) is passes, out
    assert f"parallel phase exit {1 if first == 5 else first}, alone phase exit {1 if alone == 5 else alone}" in out
    if first == 5:
        assert "no tests were collected" in out
    if alone == 5:
        assert "no load test was collected" in out
