"""In-memory model of a Pipecat Cloud organisation: agents, sessions, websocket tokens.

Behaviour follows docs/pipecat-cloud-api.md (what the gateway relies on, from the public Pipecat Cloud docs,
its OpenAPI and its base image).
All methods are thread-safe: the HTTP server calls them from many threads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .webhooks import WebhookSender

BODY_LIMIT = 1024 * 1024  # 1 MB of JSON across all transports (the API guide)
WS_TOKEN_TTL_SECONDS = 300
REGION = "us-west"
SPEND_LIMIT_CENTS = 10_000  # the limit the emulated organisation's spend webhooks report
WARM_IDLE_SECONDS = 300

UNAUTHORIZED = {"error": "Unauthorized / token expired", "code": "401"}
# The documented error shape {error, code} (the official library shows `error`).
RATE_LIMITED = {"error": "Rate limit exceeded. Please try again later.", "code": "429"}
AT_CAPACITY = {"error": "Agent is at capacity", "code": "PCC-AGENT-AT-CAPACITY"}


class PccError(Exception):
    """An HTTP error answer of the emulated API."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def _error(status: int, message: str, code: str) -> PccError:
    return PccError(status, {"error": message, "code": code})


@dataclass
class Agent:
    name: str
    ready: bool = True
    max_agents: int = 50
    websocket_auth: str = "token"  # "token" | "none"
    max_session_seconds: float = 7200.0
    capacity_error_style: str = "rate_limit"  # "rate_limit" | "pcc_code"
    # Suspended (its reason: "trial_exhausted" | "account_suspended"): starts refused. What Pipecat Cloud answers a
    # start of a suspended service is not documented; the emulator answers as for a deployment that is not ready.
    suspended: str | None = None
    warm_instances: list[float] = field(default_factory=list)  # idle-since timestamps

    def public(self, active: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "ready": self.ready,
            "activeSessionCount": active,
            "autoScaling": {"minAgents": 0, "maxAgents": self.max_agents},
            "maxSessionDurationSeconds": self.max_session_seconds,
            "websocketAuth": self.websocket_auth,
        }


@dataclass
class Session:
    session_id: str
    agent: str
    transport: str
    body: Any
    created_at: float
    cold_start: bool
    bot_start_seconds: int
    connected: bool = True  # websocket sessions start when the client connects
    ended_at: float | None = None
    completion_status: str | None = None
    meeting_ids: list[dict[str, str]] = field(default_factory=list)
    offer_data: Any = None  # the `requestData` of the SmallWebRTC offer that connected the bot, if any
    prefilled: bool = False  # made by the admin `prefill`, not by a start
    lifetime: float | None = None  # ends this long after it started; None: the agent's max_session_seconds

    @property
    def active(self) -> bool:
        return self.ended_at is None

    @property
    def bot_body(self) -> Any:
        """The body the bot runs with: as Pipecat Cloud's base image decides it, an offer's non-empty
        `requestData` replaces the body given at /start."""
        return self.offer_data if self.offer_data else self.body

    def summary(self, org: str) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "serviceId": f"svc-{self.agent}",
            "organizationId": org,
            "deploymentId": f"dep-{self.agent}-1",
            "endedAt": _iso(self.ended_at) if self.ended_at else None,
            "botStartSeconds": self.bot_start_seconds,
            "coldStart": self.cold_start,
            "completionStatus": self.completion_status,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.ended_at or self.created_at),
        }

    def details(self, org: str) -> dict[str, Any]:
        data = self.summary(org)
        data["meetingIds"] = [dict(m) for m in self.meeting_ids]
        start = int(self.created_at)
        end = int(self.ended_at or time.time())
        samples = [{"t": t, "c": 120 + (t - start) % 7, "m": 210_000_000 + 1_000_000 * ((t - start) % 5)}
                   for t in range(start, max(end, start + 1), 15)][:240]
        data["resourceMetrics"] = {
            "cpuMillicoresP50": 120, "cpuMillicoresP90": 124, "cpuMillicoresP95": 125, "cpuMillicoresP99": 126,
            "memoryBytesP50": 212_000_000, "memoryBytesP90": 214_000_000, "memoryBytesP95": 214_000_000,
            "memoryBytesP99": 214_000_000, "sampleCount": len(samples), "timeseries": samples,
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"metrics/{self.session_id}")),
            "sessionId": self.session_id, "eventTs": _iso(end), "createdAt": _iso(self.created_at),
        }
        return data


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


@dataclass
class ProxyCall:
    """What the built-in echo bot received through the session API proxy."""

    session_id: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class Organisation:
    """The whole emulated Pipecat Cloud state for one organisation."""

    def __init__(
        self,
        public_key: str = "pk_emulator_public",
        private_key: str = "sk_emulator_private",
        org: str = "emulator-org",
        agents: list[str] | None = None,
    ) -> None:
        self.public_key = public_key
        self.private_key = private_key
        self.org = org
        self.lock = threading.RLock()
        self.agents: dict[str, Agent] = {}
        self.sessions: dict[str, Session] = {}
        self.proxy_calls: list[ProxyCall] = []
        # Faults for POST .../start, used in order: {"when": "before"|"after", "kind": "500"|"502"|"503"|
        # "reset"|"hang", "seconds": hang time, or "until": "released" (answers_open)}. "after": the bot exists,
        # then the answer is lost.
        self.start_faults: list[dict[str, Any]] = []
        self.start_calls = 0
        self.started = 0
        self.rejected_capacity = 0
        self.connections = 0
        # Spend-limited, the organisation's starts are refused as billing refusals (PCC-1004, the code Pipecat
        # Cloud documents for billing; what it answers at a spend limit is not documented: docs/operations.md).
        self.spend_limited = False
        self.latency_seconds = 0.0
        self.cold_start_seconds = 0.0
        self.start_latency_seconds = 0.0  # a successful start answers this late (the bot exists meanwhile)
        # Closed ("held"): successful start answers, and hang faults with "until": "released", wait until it is
        # opened again (tests judge what a client does while answers are outstanding, at any machine speed).
        self.answers_open = threading.Event()
        self.answers_open.set()
        # every POST .../start: arrival, answer, status and the body's `n` (benchmarks tag their starts)
        self.start_log: list[dict[str, Any]] = []
        # how long the session of the start whose body's `n` is the key lives (benchmarks with varied lengths)
        self.session_lengths: dict[str, float] = {}
        self.webhooks = WebhookSender(org)  # its organisation webhooks (infra/pcc_emulator/webhooks.py)
        self._token_secret = secrets.token_bytes(32)
        self._used_tokens: set[str] = set()
        for name in agents or ["my-agent"]:
            self.agents[name] = Agent(name=name)

    # ----------------------------------------------------------------- admin
    def reset(self) -> None:
        with self.lock:
            names = list(self.agents) or ["my-agent"]
            self.agents = {name: Agent(name=name) for name in names}
            self.sessions.clear()
            self.spend_limited = False
            self.proxy_calls.clear()
            self.start_faults.clear()
            self.start_log.clear()
            self.session_lengths.clear()
            self._used_tokens.clear()
            self.start_calls = self.started = self.rejected_capacity = self.connections = 0
            self.latency_seconds = self.cold_start_seconds = self.start_latency_seconds = 0.0
            self.answers_open.set()

    def configure_agent(self, name: str, **changes: Any) -> Agent:
        with self.lock:
            agent = self.agents.get(name) or Agent(name=name)
            was_suspended = agent.suspended
            for key, value in changes.items():
                if not hasattr(agent, key) or key == "name":
                    raise ValueError(f"unknown agent setting {key!r}")
                setattr(agent, key, value)
            self.agents[name] = agent
            if agent.suspended != was_suspended:
                service = {"service_id": f"svc-{name}", "service_name": name, "region": REGION}
                if agent.suspended:
                    self.webhooks.emit("service.suspended", {**service, "reason": agent.suspended})
                else:
                    self.webhooks.emit("service.resumed", service)
            return agent

    def set_spend_limited(self, limited: bool) -> None:
        """At the spend limit new sessions are refused; Pipecat Cloud says so with its webhooks."""
        with self.lock:
            if limited == self.spend_limited:
                return
            self.spend_limited = limited
            if limited:
                self.webhooks.emit("spend.limit_reached", {"current_spend_cents": SPEND_LIMIT_CENTS,
                                                           "limit_cents": SPEND_LIMIT_CENTS})
            else:
                self.webhooks.emit("spend.limit_cleared", {"previous_limit_cents": SPEND_LIMIT_CENTS})

    def end_session(self, session_id: str, status: str = "HTTP_COMPLETED") -> bool:
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None or not session.active:
                return False
            self._end(session, status)
            return True

    def prefill(self, name: str, ends_in: list[float], retime: bool = False) -> list[str]:
        """Running sessions that end `ends_in[k]` seconds from now (each lives the agent's
        max_session_seconds): an agent that is already full when a benchmark starts. `retime`: move the ends
        of the running prefilled sessions instead (oldest first), e.g. once a benchmark's burst is sent."""
        now = time.time()
        with self.lock:
            agent = self._agent(name)
            made = []
            if retime:
                running = sorted((s for s in self.sessions.values() if s.prefilled and s.active and s.agent == name),
                                 key=lambda s: s.created_at)
                for session, seconds in zip(running, ends_in, strict=False):
                    session.created_at = now + float(seconds) - agent.max_session_seconds
                    made.append(session.session_id)
                return made
            for seconds in ends_in:
                session = Session(session_id=str(uuid.uuid4()), agent=name, transport="daily", body=None,
                                  created_at=now + float(seconds) - agent.max_session_seconds, cold_start=False,
                                  bot_start_seconds=1, prefilled=True)
                self.sessions[session.session_id] = session
                made.append(session.session_id)
            return made

    def set_session_lengths(self, by_marker: dict[str, float]) -> None:
        """The session of the start whose body carries `n` lives `by_marker[str(n)]` seconds (not the agent's
        max_session_seconds): a benchmark whose sessions vary in length."""
        with self.lock:
            self.session_lengths = {str(marker): float(seconds) for marker, seconds in by_marker.items()}

    def log_start(self, arrived: float, status: int, payload: Any) -> None:
        body = payload.get("body") if isinstance(payload, dict) else None
        marker = body.get("n") if isinstance(body, dict) else None
        with self.lock:
            if len(self.start_log) < 1_000_000:
                self.start_log.append({"arrived": arrived, "answered": time.time(), "status": status, "n": marker})

    def stats(self) -> dict[str, Any]:
        with self.lock:
            self._expire()
            return {
                "startCalls": self.start_calls,
                "started": self.started,
                "rejectedCapacity": self.rejected_capacity,
                "connections": self.connections,
                "activeSessions": sum(1 for s in self.sessions.values() if s.active and s.connected),
                "sessions": len(self.sessions),
            }

    # --------------------------------------------------------------- helpers
    def _end(self, session: Session, status: str) -> None:
        session.ended_at = time.time()
        session.completion_status = status
        agent = self.agents.get(session.agent)
        if agent is not None and session.connected:
            agent.warm_instances.append(session.ended_at)

    def _expire(self) -> None:
        now = time.time()
        for session in self.sessions.values():
            agent = self.agents.get(session.agent)
            if session.active and agent and now - session.created_at >= (
                    agent.max_session_seconds if session.lifetime is None else session.lifetime):
                self._end(session, "MAX_DURATION_EXCEEDED")
        for agent in self.agents.values():
            agent.warm_instances = [t for t in agent.warm_instances if now - t < WARM_IDLE_SECONDS]

    def _active_count(self, agent: str) -> int:
        return sum(1 for s in self.sessions.values() if s.agent == agent and s.active and s.connected)

    def check_key(self, authorization: str | None, *, private: bool) -> None:
        expected = self.private_key if private else self.public_key
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
            raise PccError(401, dict(UNAUTHORIZED))

    def _agent(self, name: str) -> Agent:
        agent = self.agents.get(name)
        if agent is None:
            raise _error(404, f"Agent '{name}' not found", "404")
        return agent

    def _ready_agent(self, name: str) -> Agent:
        agent = self._agent(name)
        if not agent.ready or agent.suspended:
            raise _error(400, "Deployment is not ready", "PCC-1001")
        return agent

    # ------------------------------------------------------------ fault injection
    FAULT_KINDS = ("429", "500", "502", "503", "reset", "hang")

    def set_start_faults(self, faults: list[dict[str, Any]]) -> None:
        for fault in faults:
            if fault.get("when") not in ("before", "after") or str(fault.get("kind")) not in self.FAULT_KINDS:
                raise ValueError(f"a fault needs when=before|after and kind in {self.FAULT_KINDS}: {fault}")
        with self.lock:
            self.start_faults = [dict(f, kind=str(f["kind"])) for f in faults]

    def take_start_fault(self) -> dict[str, Any] | None:
        with self.lock:
            return self.start_faults.pop(0) if self.start_faults else None

    def active_session_ids(self, agent_name: str | None = None) -> set[str]:
        """The source of truth for fault tests: which bots are running."""
        with self.lock:
            self._expire()
            return {s.session_id for s in self.sessions.values()
                    if s.active and (agent_name is None or s.agent == agent_name)}

    # ------------------------------------------------------------ public API
    def start(self, agent_name: str, payload: Any, host: str) -> tuple[dict[str, Any], float]:
        """Handle POST /v1/public/{agent}/start. Returns (response, seconds to sleep)."""
        with self.lock:
            self.start_calls += 1
            self._expire()
            if self.spend_limited:
                raise _error(400, "Billing is not set up for this organization", "PCC-1004")
            agent = self._ready_agent(agent_name)
            if not isinstance(payload, dict):
                raise _error(400, "Request body must be a JSON object", "400")
            transport = payload.get("transport")
            if transport is not None and transport not in ("daily", "webrtc", "websocket"):
                raise _error(400, f"Invalid transport '{transport}'", "400")
            create_room = payload.get("createDailyRoom") is True  # a room only when asked for
            for key in ("dailyRoomProperties", "dailyMeetingTokenProperties"):
                if key in payload and not isinstance(payload[key], dict):
                    raise _error(400, f"{key} must be an object", "400")
            # without a room, dailyRoomProperties / dailyMeetingTokenProperties are ignored (not an error)
            body = payload.get("body")
            if body is not None and not isinstance(body, dict):
                raise _error(400, "body must be an object", "400")
            # measured as it travels: compact UTF-8 JSON (what httpx and the official library send)
            encoded_body = b"" if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            if len(encoded_body) > BODY_LIMIT:
                raise _error(413, f"Request body exceeds {BODY_LIMIT} bytes", "413")
            if transport == "websocket" and body is not None and agent.websocket_auth == "none":
                raise _error(
                    400,
                    "A body cannot be sent with a websocket start when websocket_auth is 'none'",
                    "400",
                )
            connected = transport != "websocket"
            if self._active_count(agent.name) >= agent.max_agents:
                self.rejected_capacity += 1
                if agent.capacity_error_style == "pcc_code":
                    raise PccError(429, dict(AT_CAPACITY))
                raise PccError(429, dict(RATE_LIMITED))
            cold = connected and not agent.warm_instances
            if connected and agent.warm_instances:
                agent.warm_instances.pop()
            delay = (self.cold_start_seconds if cold else 0.0) + self.start_latency_seconds
            session = Session(
                session_id=str(uuid.uuid4()),
                agent=agent.name,
                transport=transport or ("daily" if create_room else "none"),
                body=body,
                created_at=time.time(),
                cold_start=cold,
                bot_start_seconds=math.ceil(delay + 0.5),
                connected=connected,
                lifetime=self.session_lengths.get(str(body.get("n"))) if body else None,
            )
            self.sessions[session.session_id] = session
            self.webhooks.emit("session.started", {"session_id": session.session_id, "service": agent.name,
                                                   "region": REGION, "transport": session.transport})
            if connected:
                self.started += 1
            response: dict[str, Any] = {"sessionId": session.session_id}
            if create_room:
                room = f"emu-{session.session_id[:8]}"
                session.meeting_ids.append({"participantId": str(uuid.uuid4()), "meetingId": room})
                response["dailyRoom"] = f"https://emulator.daily.co/{room}"
                response["dailyToken"] = "dt_" + secrets.token_urlsafe(24)
            if payload.get("enableDefaultIceServers"):
                response["iceConfig"] = {
                    "iceServers": [
                        {
                            "urls": ["stun:stun.emulator.local:3478", "turn:turn.emulator.local:3478"],
                            "username": "emu-user",
                            "credential": "emu-credential",
                        }
                    ]
                }
            if transport == "websocket":
                response["wsUrl"] = f"ws://{host}/ws/{agent.name}"
                response["token"] = self._issue_token(agent.name, session.session_id)
                # the body is delivered through the authenticated session (session.body), not the URL
            return response, delay

    # websocket tokens: HMAC over agent, org, session and expiry; single use
    def _issue_token(self, agent: str, session_id: str) -> str:
        expires = int(time.time()) + WS_TOKEN_TTL_SECONDS
        claims = f"{agent}|{self.org}|{session_id}|{expires}"
        mac = hmac.new(self._token_secret, claims.encode(), hashlib.sha256).hexdigest()
        return base64.urlsafe_b64encode(f"{claims}|{mac}".encode()).decode().rstrip("=")

    def redeem_token(self, agent_name: str, token: str) -> Session:
        """Validate a websocket token (403 when invalid, expired or used) and start its bot."""
        with self.lock:
            self._expire()
            try:
                raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
                agent, org, session_id, expires, mac = raw.split("|")
            except ValueError as exc:
                raise _error(403, "Invalid token", "403") from exc
            claims = f"{agent}|{org}|{session_id}|{expires}"
            good = hmac.new(self._token_secret, claims.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(good, mac) or agent != agent_name or org != self.org:
                raise _error(403, "Invalid token", "403")
            if int(expires) < time.time() or token in self._used_tokens:
                raise _error(403, "Token expired or already used", "403")
            session = self.sessions[session_id]
            target = self._ready_agent(agent_name)
            if self._active_count(agent_name) >= target.max_agents:
                self.rejected_capacity += 1
                raise PccError(429, dict(RATE_LIMITED))
            self._used_tokens.add(token)
            session.connected = True
            session.created_at = time.time()
            self.started += 1
            return session

    def proxy(
        self,
        agent_name: str,
        session_id: str,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        """The session API proxy in front of the built-in echo bot."""
        with self.lock:
            self._expire()
            self._ready_agent(agent_name)
            session = self.sessions.get(session_id)
            if session is None or session.agent != agent_name or not session.active:
                raise _error(404, "Session not found", "404")
            forwarded = {
                k.lower(): v
                for k, v in headers.items()
                if k.lower() not in ("host", "content-length", "authorization")
            }
            self.proxy_calls.append(ProxyCall(session_id, method, path, query, forwarded, body))
            if path == "api/offer" and method == "POST":
                session.offer_data = _offer_request_data(body)
            if path == "echo/body":  # the bot reports the body it runs with
                return 200, {"content-type": "application/json"}, json.dumps({"body": session.bot_body}).encode()
        return _echo_bot(session_id, method, path, query, forwarded, body)

    # ----------------------------------------------------------- private API
    def list_sessions(self, agent_name: str, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            self._expire()
            self._agent(agent_name)
            status = params.get("status", "all")
            start_type = params.get("startType", "all")
            if status not in ("active", "ended", "all") or start_type not in ("cold", "warm", "all"):
                raise _error(400, "Invalid filter", "400")
            try:
                limit = int(params.get("limit", "10"))
                offset = int(params.get("offset", "0"))
            except ValueError as exc:
                raise _error(400, "limit and offset must be integers", "400") from exc
            found = [
                s
                for s in self.sessions.values()
                if s.agent == agent_name
                and (status == "all" or (status == "active") == s.active)
                and (start_type == "all" or (start_type == "cold") == s.cold_start)
            ]
            found.sort(key=lambda s: s.created_at, reverse=True)
            page = found[offset : offset + limit]
            return {"total_count": len(found), "sessions": [s.summary(self.org) for s in page]}

    def get_session(self, agent_name: str, session_id: str) -> dict[str, Any]:
        with self.lock:
            self._expire()
            self._agent(agent_name)
            session = self.sessions.get(session_id)
            if session is None or session.agent != agent_name:
                raise _error(404, "Session not found", "404")
            return session.details(self.org)

    def stop_session(self, agent_name: str, session_id: str) -> dict[str, Any]:
        with self.lock:
            self._expire()
            self._agent(agent_name)
            try:
                uuid.UUID(session_id)
            except ValueError as exc:
                raise _error(400, "Invalid session id", "400") from exc
            session = self.sessions.get(session_id)
            if session is None or session.agent != agent_name:
                raise _error(404, "Session not found", "404")
            if session.active:
                self._end(session, "STOPPED_BY_API")
            return {"status": "terminated", "session_id": session_id}

    def agent_details(self, agent_name: str) -> dict[str, Any]:
        with self.lock:
            self._expire()
            return self._agent(agent_name).public(self._active_count(agent_name))


def _offer_request_data(body: bytes) -> Any:
    """What the base image's `POST /api/offer` takes from an offer for the bot's body: pipecat's
    SmallWebRTCRequest reads `requestData` (its alias) or `request_data`, from JSON parsed off the raw bytes
    whatever the Content-Type (Starlette's `Request.json()`)."""
    try:
        offer = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(offer, dict):
        return None
    return offer["requestData"] if "requestData" in offer else offer.get("request_data")


def _echo_bot(
    session_id: str, method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """A bot that serves the SmallWebRTC offer routes and echoes everything else."""
    if path == "api/offer" and method == "POST":
        try:
            offer = json.loads(body or b"{}")
        except ValueError:
            return 400, {"content-type": "application/json"}, b'{"error":"invalid offer"}'
        answer = {
            "sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=emulator-answer\r\n",
            "type": "answer",
            "pc_id": offer.get("pc_id") or f"pc-{session_id[:8]}",
        }
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()
    if path == "api/offer" and method == "PATCH":
        return 200, {"content-type": "application/json"}, b'{"status":"success"}'
    if path == "echo/headers":  # a hostile bot: answers with whatever headers the query names (h=Name:Value)
        chosen = dict(item.split(":", 1) for item in parse_qs(query).get("h", []) if ":" in item)
        return 200, {"content-type": "application/json", **{k.lower(): v for k, v in chosen.items()}}, b"{}"
    if path == "echo/status":  # a bot answering an error of its own (status from `s`): its API, not PCC's
        code = int(parse_qs(query).get("s", ["404"])[0])
        own_error = b'{"error":"no such thing","code":"x","bot":true}'
        return code, {"content-type": "application/json", "x-echo-bot": "1"}, own_error
    if path == "echo/raw":  # a bot answering with exactly the bytes and content type it was sent
        return 200, {"content-type": headers.get("content-type", "application/octet-stream"), "x-echo-bot": "1"}, body
    echo = {
        "sessionId": session_id,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": body.decode("utf-8", "replace"),
    }
    response_headers = {"content-type": "application/json", "x-echo-bot": "1"}
    return 200, response_headers, (b"" if method == "HEAD" else json.dumps(echo).encode())
