"""How a local server tells whoever started it which port it got: `PORT_FILE` in its environment names a file it
writes the port into once it listens (written whole: a reader never sees half a number).

The launcher (`make dev`), the tests and the benchmarks start servers on port 0 (the kernel picks a free one while
it binds) and read the port here, instead of picking a free port, releasing it and hoping nothing takes it first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def announce(port: int) -> None:
    """Write `port` to `PORT_FILE` (when set): call it once the server listens."""
    target = os.environ.get("PORT_FILE")
    if not target:
        return
    partial = Path(f"{target}.partial")
    partial.write_text(str(port))
    os.replace(partial, target)


def serve(server: Any, port: int) -> None:
    """Announce `port`, then serve until interrupted (the servers' shared main loop)."""
    announce(port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def read_port(path: Path, alive: Callable[[], None], timeout: float = 120) -> int:
    """The port announced in `path`, waiting for it; `alive()` raises when the server died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        if path.exists():
            return int(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"no port announced in {path} within {timeout:.0f} s")
