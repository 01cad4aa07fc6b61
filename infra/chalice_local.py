"""`chalice local` with every HTTP method routed to the app, as API Gateway routes them, and one readable
line per request.

Chalice's dev server handles only the seven methods the app can register; any other (TRACE, CONNECT,
QUERY, ...) gets http.server's own 501 without reaching the app, which no deployed stage ever answers.
Routing every method through the app gives the app's answer instead (405 as `{detail, code}`).

Each request is logged as `POST /start 202 41 ms user=alice` (the local stage's `X-Dev-User`, else `-`)
instead of http.server's access line; the query string is left out (it may carry tokens).

A path no route matches is answered as the deployed stage answers it (infra/api_guard_rails.py's gateway
responses): 404 `{"detail": "No such route", "code": "route_not_found"}`, not Chalice's 403 "Missing Authentication
Token". The server listens with a backlog of LISTEN_BACKLOG connections (http.server's default, 5, overflows when
a burst of clients connect at once, and the kernel then drops or resets some of them), and announces its port in
PORT_FILE (infra/port_file.py), so `--port 0` works.

    python -m infra.chalice_local --project-dir DIR local --stage local --port 8000
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

_USER = re.compile(r"[A-Za-z0-9@._:|+\-]{1,128}")
LISTEN_BACKLOG = 1024


def route_not_found() -> dict[str, Any]:
    """The answer to a path no route matches, as the deployed stage's gateway response gives it."""
    from infra.api_guard_rails import GATEWAY_RESPONSES

    status, code, detail = GATEWAY_RESPONSES["MISSING_AUTHENTICATION_TOKEN"]
    return {"statusCode": int(status or 404), "multiValueHeaders": {},
            "headers": {"Content-Type": "application/json",
                        "Access-Control-Allow-Origin": os.environ.get("CORS_ALLOW_ORIGIN") or "*"},
            "body": json.dumps({"detail": detail, "code": code})}


def request_line(method: str, path: str, status: int | str, seconds: float, user: str | None) -> str:
    """The one line a request is logged as (no query string, no header but the dev user's id)."""
    shown = user if user and _USER.fullmatch(user) else "-"
    return f"{method} {path.split('?', 1)[0]} {status} {seconds * 1000:.0f} ms user={shown}"


def main() -> int:
    from chalice.cli import main as chalice_main
    from chalice.local import ChaliceRequestHandler, LocalGateway, ThreadedHTTPServer

    from infra.port_file import announce

    def any_method(self: Any, name: str) -> Any:
        # http.server looks up `do_<METHOD>`; only names it does not define get here
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    handle = ChaliceRequestHandler._generic_handle

    def timed_handle(self: Any) -> None:
        self._started = time.monotonic()
        handle(self)

    def log_request(self: Any, code: Any = "-", size: Any = "-") -> None:
        seconds = time.monotonic() - getattr(self, "_started", time.monotonic())
        line = request_line(self.command, self.path, getattr(code, "value", code), seconds,
                            self.headers.get("x-dev-user"))
        sys.stderr.write(line + "\n")  # one write: print() writes the newline apart, and threads interleave
        sys.stderr.flush()

    ChaliceRequestHandler.__getattr__ = any_method  # type: ignore[attr-defined]
    ChaliceRequestHandler._generic_handle = timed_handle  # type: ignore[method-assign]
    for name in ("do_GET", "do_POST", "do_PUT", "do_PATCH", "do_DELETE", "do_OPTIONS", "do_HEAD"):
        setattr(ChaliceRequestHandler, name, timed_handle)  # bound to the original at class definition
    ChaliceRequestHandler.log_request = log_request  # type: ignore[method-assign]

    gateway_handle = LocalGateway.handle_request

    def handle_request(self: Any, method: str, path: str, headers: Any, body: Any) -> Any:
        try:  # the gateway's own matcher, which would refuse the path with Chalice's 403 below
            self.event_converter._route_matcher.match_route(path)
        except ValueError:
            return route_not_found()
        return gateway_handle(self, method, path, headers, body)

    LocalGateway.handle_request = handle_request  # type: ignore[method-assign]

    activate = ThreadedHTTPServer.server_activate

    def server_activate(self: Any) -> None:
        activate(self)
        announce(int(self.server_address[1]))

    ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
    ThreadedHTTPServer.server_activate = server_activate  # type: ignore[method-assign]
    return int(chalice_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
