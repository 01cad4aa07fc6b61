"""Schemathesis against `chalice local` (emulator + moto behind it): no 5xx, every response matches the
OpenAPI document the app serves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import LocalStack

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(local_stack: LocalStack,
                                                                    tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [str(st), "run", f"{local_stack.api_url}/openapi.json", "--checks", CHECKS, "--max-examples", "10",
         "--header", "X-Dev-User: fuzzer", "--seed", "20261122", "--phases", "examples,coverage,fuzzing,stateful",
         "--request-timeout", "30"],
        cwd=tmp_path, capture_output=True, text=True, timeout=540)
    tail = result.stdout[-4000:]
    assert result.returncode == 0, tail
    counts = re.search(r"(\d+) generated, (\d+) passed", tail)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) > 100, tail
