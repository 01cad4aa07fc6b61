"""A local stand-in for a human-check provider's siteverify (Turnstile, hCaptcha, reCAPTCHA share its protocol: a
form POST of `secret`, `response`, `remoteip`; docs/guests.md), for `make dev` and the tests.

What a token's prefix makes it answer (the secret must be SECRET, else `invalid-input-secret`):
- `pass-...`: success, hostname HOSTNAME, action ACTION, challenge_ts now;
- `fail-...`: `invalid-input-response`;  `spent-...`: `timeout-or-duplicate`;
- `old-...`: success with a challenge solved an hour ago;  `host-...`: success for another hostname;
- `action-...`: success for another action;  `score-0.1-...`: success with that score (reCAPTCHA v3).
A token answered once answers `timeout-or-duplicate` after (as Turnstile does). `POST /_admin {"mode": ...}` makes
it `ok`, `slow` (answers after `slow_seconds`), `down` (500) or `garbage` (not JSON); `GET /_admin` counts calls.

    python -m infra.fake_siteverify --port 0   (PORT_FILE: see infra/port_file.py)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from infra.port_file import serve

SECRET = "local-human-check-secret"
HOSTNAME = "localhost"
ACTION = "guest"


class Provider:
    """The fake's state: its mode, the tokens it answered, the calls it had."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode, self.slow_seconds, self.calls = "ok", 5.0, 0
        self.answered: set[str] = set()

    def answer(self, form: dict[str, str]) -> dict[str, Any]:
        token = form.get("response", "")
        with self.lock:
            seen = token in self.answered
            self.answered.add(token)
        if form.get("secret") != SECRET:
            return {"success": False, "error-codes": ["invalid-input-secret"]}
        if seen or token.startswith("spent-"):
            return {"success": False, "error-codes": ["timeout-or-duplicate"]}
        now = time.time()
        good = {"success": True, "hostname": HOSTNAME, "action": ACTION, "error-codes": [],
                "challenge_ts": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")}
        if token.startswith("pass-"):
            return good
        if token.startswith("old-"):
            return {**good, "challenge_ts": datetime.fromtimestamp(now - 3600, UTC).isoformat()}
        if token.startswith("host-"):
            return {**good, "hostname": "elsewhere.example"}
        if token.startswith("action-"):
            return {**good, "action": "another"}
        if token.startswith("score-"):
            return {**good, "score": float(token.split("-")[1])}
        return {"success": False, "error-codes": ["invalid-input-response"]}


class _Handler(BaseHTTPRequestHandler):
    provider: Provider

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/_admin":
            body = {"mode": self.provider.mode, "calls": self.provider.calls}
            self._send(200, json.dumps(body).encode())
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_admin":
            change = json.loads(raw or b"{}")
            self.provider.mode = str(change.get("mode", self.provider.mode))
            self.provider.slow_seconds = float(change.get("slow_seconds", self.provider.slow_seconds))
            self._send(200, b"{}")
            return
        with self.provider.lock:
            self.provider.calls += 1  # counted as it arrives (a slow answer must not count in a later test)
        mode = self.provider.mode
        if mode == "down":
            self._send(500, b"internal error", "text/plain")
            return
        if mode == "garbage":
            self._send(200, b"<html>not json</html>", "text/html")
            return
        if mode == "slow":
            time.sleep(self.provider.slow_seconds)
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        self._send(200, json.dumps(self.provider.answer(form)).encode())


class FakeSiteverify:
    """The fake in this process (tests): `url` to point GUEST_SITEVERIFY_URL at, `provider` to steer it."""

    def __init__(self, bind: str = "127.0.0.1", port: int = 0) -> None:
        self.provider = Provider()
        handler = type("Handler", (_Handler,), {"provider": self.provider})
        self.server = ThreadingHTTPServer((bind, port), handler)
        self.server.daemon_threads = True
        self.url = f"http://{bind}:{self.server.server_address[1]}/siteverify"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSiteverify:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args(argv)
    fake = FakeSiteverify(args.bind, args.port)
    serve(fake.server, fake.server.server_address[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
