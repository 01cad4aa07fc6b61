"""The settings' groups of the gateway's core (chalicelib.platform.settings assembles them): Pipecat Cloud and the
agents' policies, auth, the proxy, the queue, the limits, events, usage budgets, orphans. Each group's variables are
its prefix and the field's name, upper-cased."""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# The session proxy's header allow-lists by default (chalicelib.sessions.proxy_headers adds a fixed floor).
DEFAULT_REQUEST_HEADERS = [
    "accept", "accept-language", "content-type", "content-language", "cache-control", "pragma", "range",
    "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "user-agent", "x-*",
]
DEFAULT_RESPONSE_HEADERS = [
    "content-type", "content-language", "content-disposition", "content-range", "accept-ranges", "cache-control",
    "etag", "last-modified", "expires", "retry-after", "x-*",
]


class AgentPolicy(BaseModel):
    """What the server allows for one Pipecat Cloud agent."""

    model_config = ConfigDict(extra="forbid")

    transports: list[Literal["daily", "webrtc", "websocket"]] = ["daily", "webrtc", "websocket"]
    websocket_auth: Literal["token", "none"] = "token"
    # Keys of dailyRoomProperties / dailyMeetingTokenProperties a user may set (default: none).
    allowed_room_properties: list[str] = []
    allowed_token_properties: list[str] = []
    # Server-fixed properties, always applied (they win over user values).
    room_properties: dict[str, Any] = {}
    token_properties: dict[str, Any] = {}
    # Default ICE servers for SmallWebRTC: server decides.
    enable_default_ice_servers: bool = True
    # SmallWebRTC offers carrying client `requestData` (chalicelib.sessions.proxy_guard);
    # None: PROXY_OFFER_REQUEST_DATA.
    offer_request_data: Literal["strip", "refuse"] | None = None


class UsageTier(BaseModel):
    """A budget tier (USAGE_TIERS): seconds per UTC day / calendar month for callers in a token group or scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    day: int = Field(default=0, ge=0)  # 0: unlimited
    month: int = Field(default=0, ge=0)


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prefix: ClassVar[str] = ""  # of every variable of the group


def split_list(value: Any, lower: bool = False) -> Any:
    """A comma-separated variable as a list (a list as it is)."""
    if isinstance(value, str):
        return [p.strip().lower() if lower else p.strip() for p in value.split(",") if p.strip()]
    return value


CommaList = Annotated[list[str], BeforeValidator(split_list)]  # a list field read from a comma-separated variable


class PipecatCloud(Group):
    """Pipecat Cloud: its API, our agents and their policies, the keys' secret, the call timeouts."""

    prefix: ClassVar[str] = "pcc_"
    api_url: str = "https://api.pipecat.daily.co"
    agents: dict[str, AgentPolicy] = Field(min_length=1)
    default_agent: str | None = None
    secret_id: str = Field(min_length=1)
    connect_timeout: float = Field(default=3.0, gt=0)
    read_timeout: float = Field(default=20.0, gt=0)
    org: str = ""
    ws_base: str = "wss://api.pipecat.daily.co/ws"

    @field_validator("agents", mode="before")
    @classmethod
    def _parse_agents(cls, value: Any) -> Any:
        # Either a JSON object {"name": {policy...}} or a comma-separated list of names.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            return {name.strip(): {} for name in text.split(",") if name.strip()}
        return value

    @field_validator("api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @property
    def resolved_default_agent(self) -> str | None:
        if self.default_agent:
            return self.default_agent
        return next(iter(self.agents)) if len(self.agents) == 1 else None


class Auth(Group):
    """How callers are verified (docs/security.md); `admin_group`: the token group that may use /admin/ (empty:
    nobody; docs/operations.md)."""

    auth_mode: Literal["jwt", "cognito", "insecure-dev"] = "jwt"
    admin_group: str = ""
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    jwks_cache_seconds: int = Field(default=3600, ge=0)
    insecure_dev_auth: bool = False

    @property
    def jwks_url(self) -> str:
        return self.oidc_jwks_url or f"{self.oidc_issuer.rstrip('/')}/.well-known/jwks.json"


class Proxy(Group):
    """The session API proxy: fnmatch patterns of bot paths, the request size cap, the header allow-lists
    (fnmatch, lower-case; chalicelib.sessions.proxy_headers adds a fixed floor), what it does with client data in a
    SmallWebRTC offer (chalicelib.sessions.proxy_guard; an agent's policy may override it), calls per user."""

    prefix: ClassVar[str] = "proxy_"
    allowed_paths: list[str] = ["*"]
    max_body_bytes: int = Field(default=256 * 1024, ge=0, le=6 * 1024 * 1024)
    request_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUEST_HEADERS))
    response_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_RESPONSE_HEADERS))
    offer_request_data: Literal["strip", "refuse"] = "strip"
    rate_per_minute: int = Field(default=600, ge=1)

    @field_validator("allowed_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip().strip("/") for p in value.split(",") if p.strip()]
        return value

    @field_validator("request_headers", "response_headers", mode="before")
    @classmethod
    def _split_headers(cls, value: Any) -> Any:
        return split_list(value, lower=True)


class Queue(Group):
    """The capacity queue (chalicelib/start/dispatcher.py, pacing.py): the wake-up queue and its DLQ; the head's
    first wait after a 429 (and before the rate capacity frees at is measured) and its cap; PCC start calls per
    second per agent; how long one dispatcher run lasts before it hands over; attempts in flight per agent (the
    queue drains at up to this / PCC's answer time a second); starts queued per agent; a start's deadline;
    deliveries of a wake-up before the DLQ; the longest long-poll. A queued start whose owner has not asked about it
    for `queued_abandon_seconds` is cancelled (`abandoned`), not started: a bot nobody waits for still bills
    (0: off; Retry-After is at most a third of it, so a client that follows it is never abandoned)."""

    retry_queue_url: str = ""
    dlq_url: str = ""
    retry_base_seconds: float = Field(default=0.1, gt=0, le=10)
    retry_cap_seconds: float = Field(default=1.0, gt=0, le=10)
    dispatch_calls_per_second: float = Field(default=20.0, gt=0, le=200)
    dispatch_run_seconds: float = Field(default=30.0, ge=1, le=50)
    dispatch_max_in_flight: int = Field(default=64, ge=1, le=200)
    max_queued: int = Field(default=1000, ge=1, le=10_000)
    start_deadline_seconds: int = Field(default=600, ge=1)
    max_receive_count: int = Field(default=5, ge=1)
    long_poll_max_seconds: int = Field(default=25, ge=0, le=25)
    queued_abandon_seconds: int = Field(default=30, ge=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> Queue:
        if 0 < self.queued_abandon_seconds < 9:
            raise ValueError("QUEUED_ABANDON_SECONDS must be 0 (off) or at least 9 (Retry-After is a third of it)")
        if self.retry_cap_seconds < self.retry_base_seconds:
            raise ValueError("RETRY_CAP_SECONDS must be at least RETRY_BASE_SECONDS")
        return self


class Limits(Group):
    """Per user: active sessions, a session's length (reconciliation stops sessions older than the hard cap; 0:
    MAX_SESSION_SECONDS) and its record's TTL margin; fixed one-minute windows (chalicelib/platform/rate_limits.py)
    for POST /start, GET /start/{id} (long-polls included), GET /sessions/{id} (a private-API call each);
    concurrent long-polls; how long an Idempotency-Key's answer is kept."""

    user_session_limit: int = Field(default=3, ge=1)
    max_session_seconds: int = Field(default=7200, ge=60, le=14400)
    session_ttl_margin_seconds: int = Field(default=3600, ge=0)
    session_hard_cap_seconds: int = Field(default=0, ge=0)
    start_rate_per_minute: int = Field(default=20, ge=1)
    status_rate_per_minute: int = Field(default=120, ge=1)
    details_rate_per_minute: int = Field(default=60, ge=1)
    long_polls_per_user: int = Field(default=2, ge=1, le=20)
    idempotency_ttl_seconds: int = Field(default=600, ge=1)

    @property
    def hard_cap_seconds(self) -> int:
        return self.session_hard_cap_seconds or self.max_session_seconds

    @property
    def session_ttl_seconds(self) -> int:
        return self.max_session_seconds + self.session_ttl_margin_seconds


class Events(Group):
    """Lifecycle events (chalicelib/events): the outbox table (written in the same transaction as each state change;
    empty: no events are recorded), and the sinks its stream feeds, each optional: an EventBridge bus, a signed
    webhook (secret `events_webhook_secret` in the gateway's secret). An event no sink took after `delivery_attempts`
    tries (backoff 0.5 s, 1 s, 2 s, ...) goes to EVENTS_DLQ_URL."""

    prefix: ClassVar[str] = "events_"
    table_name: str = ""
    bus_name: str = ""
    webhook_url: str = ""
    dlq_url: str = ""
    delivery_attempts: int = Field(default=4, ge=1, le=10)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=10)

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://127.0.0.1:", "http://localhost:")):
            raise ValueError("must be an https:// URL (http:// only to this machine, for tests)")
        return value


class Usage(Group):
    """Usage budgets (chalicelib/start/budgets.py): billed seconds per user per UTC day / calendar month (0:
    unlimited), and tiers by token group or scope, JSON {"pro": {"day": 36000, "month": 0}} (the most generous
    tier applies)."""

    user_seconds_per_day: int = Field(default=0, ge=0)
    user_seconds_per_month: int = Field(default=0, ge=0)
    usage_tiers: dict[str, UsageTier] = {}

    @field_validator("usage_tiers", mode="before")
    @classmethod
    def _parse_tiers(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) and value.strip() else ({} if value == "" else value)


class Orphans(Group):
    """Orphans: bots at Pipecat Cloud that no record of ours claims (chalicelib/upkeep/orphans.py)."""

    prefix: ClassVar[str] = "orphan_"
    sweep: Literal["stop", "report", "off"] = "stop"
    grace_seconds: int = Field(default=300, ge=60)
    report_only_agents: CommaList = []

