"""The test harness itself: concurrent calls through Chalice's test client must not leak the stage's
environment into the process. Chalice swaps `os.environ` for a patched copy around each call and swaps the
original back afterwards; two overlapping calls restore each other's copy, so the stage environment stayed
in `os.environ` for the rest of the run and broke unrelated unit tests (CI, stop 17)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import Gateway


def test_overlapping_calls_leave_os_environ_as_it_was(gateway: Gateway) -> None:
    before_object, before = os.environ, dict(os.environ)
    assert "PCC_DEFAULT_AGENT" not in before  # the stage's variable; only the stage sets it

    def call(_: int) -> int:
        return int(gateway.request("GET", "/health").status_code)

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(call, range(400)))

    assert statuses == [200] * 400
    assert os.environ is before_object
    assert dict(os.environ) == before
