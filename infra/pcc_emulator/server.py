"""A real HTTP server that speaks the Pipecat Cloud API, backed by `state.Organisation`.

Admin endpoints under `/_emulator/` let tests and `make dev` change capacity, readiness, latency and
cold starts, end sessions, and read counters (including how many TCP connections were accepted).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .state import Organisation, PccError, ProxyCall

_START = re.compile(r"^/v1/public/(?P<agent>[^/]+)/start$")
_PROXY = re.compile(r"^/v1/public/(?P<agent>[^/]+)/sessions/(?P<sid>[^/]+)(?:/(?P<path>.*))?$")
_SESSIONS = re.compile(r"^/v1/agents/(?P<agent>[^/]+)/sessions$")
_SESSION = re.compile(r"^/v1/agents/(?P<agent>[^/]+)/sessions/(?P<sid>[^/]+)$")
_AGENT = re.compile(r"^/v1/agents/(?P<agent>[^/]+)$")
_WS = re.compile(r"^/ws/(?P<agent>[^/]+)(?:/(?P<token>[^/]+))?$")
_WS_MAGIC = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOLD_LIMIT_SECONDS = 300  # a held answer goes by itself after this (a test that never released it)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # http.server's 5 overflows under a burst of new connections (resets, retries)

    def __init__(self, address: tuple[str, int], org: Organisation) -> None:
        super().__init__(address, _Handler)
        self.org = org

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.org.lock:
            self.org.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, a kept-alive connection waits ~40 ms
    # for the client's delayed ACK before the body leaves.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tokens travel in URLs

    # one entry point for every method
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("content-type", "application/json")
        for key, value in headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode())

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        org = self.server.org
        body = self._read_body()
        try:
            if path.startswith("/_emulator/"):
                self._admin(path, body)
                return
            if org.latency_seconds:
                time.sleep(org.latency_seconds)
            auth = self.headers.get("authorization")
            if m := _WS.match(path):
                self._websocket(m["agent"], m["token"] or _query_token(url.query) or _bearer(auth))
                return
            if (m := _START.match(path)) and self.command == "POST":
                org.check_key(auth, private=False)
                try:
                    payload = json.loads(body or b"{}")
                except ValueError as exc:
                    raise PccError(400, {"error": "Invalid JSON", "code": "400"}) from exc
                host = self.headers.get("host", "localhost")
                fault = org.take_start_fault()
                if fault and fault["when"] == "before":
                    with org.lock:
                        org.start_calls += 1
                    self._fault(fault)
                    return
                arrived = time.time()
                try:
                    response, delay = org.start(m["agent"], payload, host)
                except PccError as exc:
                    org.log_start(arrived, exc.status, payload)
                    raise
                if delay:
                    time.sleep(delay)
                org.answers_open.wait(HOLD_LIMIT_SECONDS)
                if fault:  # the bot exists; its answer is lost
                    self._fault(fault)
                    return
                self._json(200, response)
                org.log_start(arrived, 200, payload)
                return
            if m := _PROXY.match(path):
                org.check_key(auth, private=False)
                headers = {k: v for k, v in self.headers.items()}
                status, out_headers, out = org.proxy(
                    m["agent"], m["sid"], self.command, m["path"] or "", url.query, headers, body
                )
                self._send(status, out, out_headers)
                return
            if (m := _SESSIONS.match(path)) and self.command == "GET":
                org.check_key(auth, private=True)
                self._json(200, org.list_sessions(m["agent"], dict(parse_qsl(url.query))))
                return
            if m := _SESSION.match(path):
                org.check_key(auth, private=True)
                if self.command == "GET":
                    self._json(200, org.get_session(m["agent"], m["sid"]))
                    return
                if self.command == "DELETE":
                    self._json(200, org.stop_session(m["agent"], m["sid"]))
                    return
            if (m := _AGENT.match(path)) and self.command == "GET":
                org.check_key(auth, private=True)
                self._json(200, org.agent_details(m["agent"]))
                return
            self._json(404, {"error": "Not found", "code": "404"})
        except PccError as exc:
            self._json(exc.status, exc.body)

    def _fault(self, fault: dict[str, Any]) -> None:
        kind = fault["kind"]
        if kind == "hang":
            if fault.get("until") == "released":
                self.server.org.answers_open.wait(HOLD_LIMIT_SECONDS)
            else:
                time.sleep(float(fault.get("seconds", 30)))
            self._reset()
        elif kind == "reset":
            self._reset()
        else:
            self._json(int(kind), {"error": f"injected fault {kind}", "code": kind})

    def _reset(self) -> None:
        """Drop the connection with a TCP RST: the client sees a reset, never an answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):  # a connection this handler reset on purpose
            pass

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    def _websocket(self, agent: str, token: str | None) -> None:
        session = self.server.org.redeem_token(agent, token or "")
        key = self.headers.get("sec-websocket-key")
        if not key:
            self._json(200, {"sessionId": session.session_id, "connected": True})
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_MAGIC).encode(), usedforsecurity=False).digest()).decode()
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        self.end_headers()
        self.wfile.write(b"\x88\x02\x03\xe8")  # close frame, 1000 normal closure
        self.close_connection = True

    def _admin(self, path: str, body: bytes) -> None:
        org = self.server.org
        data = json.loads(body) if body else {}
        parts = path.strip("/").split("/")[1:]
        if parts == ["stats"]:
            self._json(200, org.stats())
        elif parts == ["keys"]:
            self._json(200, {"public_key": org.public_key, "private_key": org.private_key})
        elif parts == ["reset"] and self.command == "POST":
            org.reset()
            self._json(200, {"ok": True})
        elif parts == ["knobs"] and self.command == "POST":
            with org.lock:
                if "latency_ms" in data:
                    org.latency_seconds = float(data["latency_ms"]) / 1000
                if "cold_start_ms" in data:
                    org.cold_start_seconds = float(data["cold_start_ms"]) / 1000
                if "start_latency_ms" in data:
                    org.start_latency_seconds = float(data["start_latency_ms"]) / 1000
            self._json(200, {"latency_ms": org.latency_seconds * 1000})
        elif parts == ["org"] and self.command == "POST":  # {"spend_limited": true}: starts refused (PCC-1004)
            org.set_spend_limited(data.get("spend_limited") is True)  # and spend.limit_reached / _cleared sent
            self._json(200, {"spend_limited": org.spend_limited})
        elif parts == ["webhooks"] and self.command == "POST":  # {"url", "secret"}: where webhooks go
            try:
                org.webhooks.configure(data.get("url"), data.get("secret"))
            except ValueError as exc:
                self._json(400, {"error": str(exc), "code": "400"})
                return
            self._json(200, {"url": org.webhooks.url})
        elif parts == ["webhooks"]:
            self._json(200, org.webhooks.state())
        elif parts == ["hold"] and self.command == "POST":  # {"held": true}: answers wait; false: they go
            if data.get("held") is True:
                org.answers_open.clear()
            else:
                org.answers_open.set()
            self._json(200, {"held": not org.answers_open.is_set()})
        elif len(parts) == 2 and parts[0] == "agents" and self.command == "POST":
            try:
                agent = org.configure_agent(parts[1], **data)
            except ValueError as exc:
                self._json(400, {"error": str(exc), "code": "400"})
                return
            self._json(200, agent.public(0))
        elif len(parts) == 3 and parts[:1] == ["agents"] and parts[2] == "prefill" and self.command == "POST":
            try:
                made = org.prefill(parts[1], [float(s) for s in data.get("ends_in", [])],
                                   retime=data.get("retime") is True)
            except PccError as exc:
                self._json(exc.status, exc.body)
                return
            self._json(200, {"sessions": made})
        elif parts == ["session-lengths"] and self.command == "POST":
            org.set_session_lengths(dict(data.get("by_marker", {})))
            self._json(200, {"ok": True})
        elif parts == ["start-calls"]:
            with org.lock:
                calls = list(org.start_log)
            self._json(200, calls)
        elif len(parts) == 3 and parts[0] == "sessions" and parts[2] == "end":
            self._json(200, {"ended": org.end_session(parts[1], data.get("status", "HTTP_COMPLETED"))})
        elif parts == ["faults"] and self.command == "POST":
            try:
                org.set_start_faults(list(data.get("start", [])))
            except ValueError as exc:
                self._json(400, {"error": str(exc), "code": "400"})
                return
            self._json(200, {"start": org.start_faults})
        elif parts == ["sessions"] and self.command == "GET":
            with org.lock:  # every session the org ever started, in start order (benchmarks time them)
                ordered = sorted(org.sessions.values(), key=lambda s: s.created_at)
                started = [{"sessionId": s.session_id, "agent": s.agent, "active": s.active,
                            "createdEpoch": s.created_at, "endedEpoch": s.ended_at, "body": s.bot_body,
                            "connected": s.connected}
                           for s in ordered]
            self._json(200, {"active": sorted(org.active_session_ids()), "sessions": started})
        elif parts == ["proxy-calls"]:
            with org.lock:
                calls = [_call_json(c) for c in org.proxy_calls]
            self._json(200, calls)
        else:
            self._json(404, {"error": "Not found", "code": "404"})


def _call_json(call: ProxyCall) -> dict[str, Any]:
    return {
        "sessionId": call.session_id,
        "method": call.method,
        "path": call.path,
        "query": call.query,
        "headers": call.headers,
        "body": call.body.decode("utf-8", "replace"),
        "bodyBase64": base64.b64encode(call.body).decode("ascii"),
    }


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _query_token(query: str) -> str | None:
    return dict(parse_qsl(query)).get("token")


class EmulatorServer:
    """Runs the emulator on a background thread: `with EmulatorServer() as emu: emu.url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, org: Organisation | None = None):
        self.org = org or Organisation()
        self._server = _Server((host, port), self.org)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
