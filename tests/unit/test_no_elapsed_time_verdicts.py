"""No test's verdict rests on elapsed time: an assert may not use a duration measured on the clock (a difference
of time.monotonic() / time.perf_counter() / time.time() readings, or a name holding one). A loaded machine makes
every duration longer, so such a verdict fails on a slow run; tests judge order, overlap and progress from what
the emulator and DynamoDB observed. Waiting with a timeout is fine (it ends a run that would hang, it is no
verdict); bracketing a stored time by the clock readings around the call that wrote it is fine too (a comparison
of instants, not a duration)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
CLOCKS = {"monotonic", "perf_counter", "time"}


def _reads_clock(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in CLOCKS
               and isinstance(n.func.value, ast.Name) and n.func.value.id == "time" for n in ast.walk(node))


def _is_duration(node: ast.AST, durations: set[str], readings: set[str]) -> bool:
    """A subtraction whose two sides both read the clock (directly or through a name holding a reading)."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)):
        return False

    def side(operand: ast.AST) -> bool:
        return _reads_clock(operand) or any(isinstance(n, ast.Name) and n.id in readings for n in ast.walk(operand))

    return side(node.left) and side(node.right)


def elapsed_time_verdicts(source: str) -> list[int]:
    """Line numbers of asserts that use a measured duration."""
    found = []
    for function in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)):
        readings: set[str] = set()
        durations: set[str] = set()
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                if any(_is_duration(n, durations, readings) for n in ast.walk(node.value)):
                    durations |= names
                elif _reads_clock(node.value):
                    readings |= names
        for node in ast.walk(function):
            if isinstance(node, ast.Assert) and any(
                    _is_duration(n, durations, readings) or (isinstance(n, ast.Name) and n.id in durations)
                    or (isinstance(n, ast.Attribute) and n.attr == "stop_seconds")
                    for n in ast.walk(node.test)):
                found.append(node.lineno)
    return found


def test_no_assert_in_the_suite_uses_a_measured_duration() -> None:
    offenders = {str(path.relative_to(TESTS)): lines for path in sorted(TESTS.rglob("*.py"))
                 if (lines := elapsed_time_verdicts(path.read_text()))}
    assert offenders == {}


def test_the_check_finds_the_shapes_it_forbids() -> None:
    assert elapsed_time_verdicts("""
def test_a():
    t0 = time.monotonic()
    work()
    took = time.monotonic() - t0
    assert took < 3.2

def test_b():
    t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 5

def test_c(stack):
    assert stack.stop_seconds < 5
""") == [6, 10, 13]
    assert elapsed_time_verdicts("""
def test_fine():
    before = time.time()
    item = write()
    assert before <= item["at"] <= time.time()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not done():
        pass
    assert done()
""") == []
