"""`chalice local` with every HTTP method routed to the app, as API Gateway routes them.

Chalice's dev server handles only the seven methods the app can register; any other (TRACE, CONNECT,
QUERY, ...) gets http.server's own 501 without reaching the app, which no deployed stage ever answers.
Routing every method through the app gives the app's answer instead (405 as `{detail, code}`).

    python -m infra.chalice_local --project-dir DIR local --stage local --port 8000
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> int:
    from chalice.cli import main as chalice_main
    from chalice.local import ChaliceRequestHandler

    def any_method(self: Any, name: str) -> Any:
        # http.server looks up `do_<METHOD>`; only names it does not define get here
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    ChaliceRequestHandler.__getattr__ = any_method  # type: ignore[attr-defined]
    return int(chalice_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
