"""All configuration, parsed once from the environment into one pydantic model.

A bad or missing setting fails at start-up with a message naming the environment variable.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class SettingsError(RuntimeError):
    """Raised at start-up when the environment does not describe a valid configuration."""


# Environment variable -> Settings field name.


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(min_length=1)
    pcc_api_url: str = "https://api.pipecat.daily.co"
    agents: dict[str, AgentPolicy] = Field(min_length=1)
    default_agent: str | None = None
    secret_id: str = Field(min_length=1)
    secret_cache_seconds: int = Field(default=300, ge=0)
    pcc_connect_timeout: float = Field(default=3.0, gt=0)
    pcc_read_timeout: float = Field(default=20.0, gt=0)
    table_name: str = Field(min_length=1)
    retry_queue_url: str = ""
    dlq_url: str = ""
    user_session_limit: int = Field(default=3, ge=1)
    max_session_seconds: int = Field(default=7200, ge=60, le=14400)
    session_ttl_margin_seconds: int = Field(default=3600, ge=0)
    idempotency_ttl_seconds: int = Field(default=600, ge=1)
    auth_mode: Literal["jwt", "cognito", "insecure-dev"] = "jwt"
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    jwks_cache_seconds: int = Field(default=3600, ge=0)
    insecure_dev_auth: bool = False
    # Session API proxy: fnmatch patterns of bot paths (comma-separated), request size cap.
    proxy_allowed_paths: list[str] = ["*"]
    proxy_max_body_bytes: int = Field(default=256 * 1024, ge=0, le=6 * 1024 * 1024)
    # Header allow-lists (fnmatch, lower-case, comma-separated); chalicelib.sessions.proxy_headers adds a fixed floor.
    proxy_request_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUEST_HEADERS))
    proxy_response_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_RESPONSE_HEADERS))
    # What the proxy does with client data in a SmallWebRTC offer (chalicelib.sessions.proxy_guard): take it out, or
    # refuse the offer. An agent's policy may override it (`offer_request_data`).
    proxy_offer_request_data: Literal["strip", "refuse"] = "strip"
    # Reconciliation stops sessions older than this (0: MAX_SESSION_SECONDS).
    session_hard_cap_seconds: int = Field(default=0, ge=0)
    # Capacity queue (chalicelib/start/dispatcher.py, pacing.py): the head's first wait after a 429 (and the wait
    # before the rate that capacity frees at has been measured) and its cap; PCC start calls per second per agent;
    # how long one dispatcher invocation runs before it hands over; queued starts per agent.
    retry_base_seconds: float = Field(default=0.1, gt=0, le=10)
    retry_cap_seconds: float = Field(default=1.0, gt=0, le=10)
    dispatch_calls_per_second: float = Field(default=20.0, gt=0, le=200)
    dispatch_run_seconds: float = Field(default=30.0, ge=1, le=50)
    # Attempts one agent's dispatcher keeps in flight (each waits for Pipecat Cloud to start a bot): the queue
    # drains at up to this / (PCC's answer time) a second.
    dispatch_max_in_flight: int = Field(default=64, ge=1, le=200)
    max_queued: int = Field(default=1000, ge=1, le=10_000)
    start_deadline_seconds: int = Field(default=600, ge=1)
    max_receive_count: int = Field(default=5, ge=1)
    long_poll_max_seconds: int = Field(default=25, ge=0, le=25)
    # A queued start whose owner has not asked about it (the 202, a status poll, a long-poll) for this long is
    # cancelled (`abandoned`) instead of started: a bot nobody waits for still bills. 0: off. Retry-After is
    # at most a third of it, so a client that follows Retry-After is never abandoned.
    queued_abandon_seconds: int = Field(default=30, ge=0, le=3600)
    # Per-user limits (fixed one-minute windows in DynamoDB, chalicelib/platform/rate_limits.py): POST /start,
    # GET /start/{id} (long-polls included), session API proxy calls; concurrent long-polls.
    start_rate_per_minute: int = Field(default=20, ge=1)
    status_rate_per_minute: int = Field(default=120, ge=1)
    proxy_rate_per_minute: int = Field(default=600, ge=1)
    details_rate_per_minute: int = Field(default=60, ge=1)  # GET /sessions/{id}: one private-API call each
    long_polls_per_user: int = Field(default=2, ge=1, le=20)
    # Telephony webhooks.
    telephony_agent: str | None = None
    telephony_public_base_url: str = ""  # the URL providers call (signatures cover it), e.g. https://x/api
    telephony_websocket_auth: Literal["none", "token"] = "none"
    telephony_principal: str = "telephony"
    telephony_session_limit: int = Field(default=50, ge=1)
    telephony_hold_attempts: int = Field(default=4, ge=0, le=20)
    telephony_hold_pause_seconds: int = Field(default=5, ge=1, le=60)
    telephony_signature_tolerance_seconds: int = Field(default=300, ge=1)
    daily_dialin_attempts: int = Field(default=3, ge=1, le=10)
    daily_dialin_retry_seconds: float = Field(default=1.0, ge=0, le=5)
    telephony_start_timeout_seconds: float = Field(default=8.0, gt=0, le=12)  # Twilio waits 15 s
    # Replay protection: a call id is remembered this long (>= the longest call); the first webhook of a
    # call may be repeated (provider retries) within the retry window, hold-loop redirects within the hold
    # loop's own length; anything later is a replay (409).
    telephony_replay_ttl_seconds: int = Field(default=86400, ge=3600)
    telephony_retry_window_seconds: int = Field(default=60, ge=1, le=3600)
    # Dial-out (toll fraud): who may (JWT groups / scopes; the X-Api-Key service always), where to
    # (E.164 prefixes, SIP domains), as whom (caller ids), how often (per principal, per hour).
    dialout_allowed_groups: list[str] = []
    dialout_allowed_scopes: list[str] = []
    dialout_allowed_prefixes: list[str] = []
    dialout_allowed_sip_domains: list[str] = []
    dialout_caller_ids: list[str] = []
    dialout_rate_per_hour: int = Field(default=20, ge=0)
    # Exotel (unsigned webhooks): optional source-address allow-list (CIDRs) on top of the URL token.
    exotel_allowed_ips: list[str] = []
    # Orphans: bots at Pipecat Cloud that no record of ours claims (chalicelib/upkeep/orphans.py).
    orphan_sweep: Literal["stop", "report", "off"] = "stop"
    orphan_grace_seconds: int = Field(default=300, ge=60)
    orphan_report_only_agents: list[str] = []
    pcc_org: str = ""
    pcc_ws_base: str = "wss://api.pipecat.daily.co/ws"
    # Lifecycle events (chalicelib/events): the outbox table (written in the same transaction as each state change;
    # empty: no events are recorded), and the sinks its stream feeds, each optional: an EventBridge bus, a signed
    # webhook (secret `events_webhook_secret` in the gateway's secret). An event no sink took after
    # EVENTS_DELIVERY_ATTEMPTS tries (backoff 0.5 s, 1 s, 2 s, ...) goes to EVENTS_DLQ_URL.
    events_table_name: str = ""
    events_bus_name: str = ""
    events_webhook_url: str = ""
    events_dlq_url: str = ""
    events_delivery_attempts: int = Field(default=4, ge=1, le=10)
    events_webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=10)
    # Usage budgets (chalicelib/start/budgets.py): billed seconds per user per UTC day / calendar month (0: unlimited),
    # and tiers by token group or scope, JSON {"pro": {"day": 36000, "month": 0}} (the most generous tier applies).
    user_seconds_per_day: int = Field(default=0, ge=0)
    user_seconds_per_month: int = Field(default=0, ge=0)
    usage_tiers: dict[str, UsageTier] = {}

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

    @field_validator("usage_tiers", mode="before")
    @classmethod
    def _parse_tiers(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) and value.strip() else ({} if value == "" else value)

    @field_validator("proxy_allowed_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip().strip("/") for p in value.split(",") if p.strip()]
        return value

    @field_validator("dialout_allowed_groups", "dialout_allowed_scopes", "dialout_allowed_prefixes",
                     "dialout_allowed_sip_domains", "dialout_caller_ids", "exotel_allowed_ips",
                     "orphan_report_only_agents", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("dialout_allowed_prefixes")
    @classmethod
    def _e164_prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not re.fullmatch(r"\+[0-9]{1,15}", prefix):
                raise ValueError(f"{prefix!r} is not an E.164 prefix like +1415")
        return value

    @field_validator("exotel_allowed_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value

    @field_validator("proxy_request_headers", "proxy_response_headers", mode="before")
    @classmethod
    def _split_headers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip().lower() for p in value.split(",") if p.strip()]
        return value

    @field_validator("pcc_api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_agent is not None and self.default_agent not in self.agents:
            raise ValueError(f"PCC_DEFAULT_AGENT {self.default_agent!r} is not in PCC_AGENTS")
        insecure = self.auth_mode == "insecure-dev" or self.insecure_dev_auth
        if insecure and self.stage != "local":
            raise ValueError("insecure dev auth is only allowed on the 'local' stage")
        if self.telephony_agent is not None and self.telephony_agent not in self.agents:
            raise ValueError(f"TELEPHONY_AGENT {self.telephony_agent!r} is not in PCC_AGENTS")
        if self.dispatch_run_seconds + self.pcc_connect_timeout + self.pcc_read_timeout > 55:
            raise ValueError("DISPATCH_RUN_SECONDS + PCC_CONNECT_TIMEOUT + PCC_READ_TIMEOUT must be at most 55 "
                             "(the queue worker's 60 s Lambda timeout, less a margin)")
        if 0 < self.queued_abandon_seconds < 9:
            raise ValueError("QUEUED_ABANDON_SECONDS must be 0 (off) or at least 9 (Retry-After is a third of it)")
        if self.retry_cap_seconds < self.retry_base_seconds:
            raise ValueError("RETRY_CAP_SECONDS must be at least RETRY_BASE_SECONDS")
        if self.auth_mode == "jwt" and not (self.oidc_issuer and self.oidc_audience):
            raise ValueError("AUTH_MODE=jwt needs OIDC_ISSUER and OIDC_AUDIENCE")
        if self.events_webhook_url and not self.events_webhook_url.startswith(
                ("https://", "http://127.0.0.1:", "http://localhost:")):
            raise ValueError("EVENTS_WEBHOOK_URL must be an https:// URL (http:// only to this machine, for tests)")
        return self

    @property
    def resolved_default_agent(self) -> str | None:
        if self.default_agent:
            return self.default_agent
        return next(iter(self.agents)) if len(self.agents) == 1 else None

    @property
    def jwks_url(self) -> str:
        return self.oidc_jwks_url or f"{self.oidc_issuer.rstrip('/')}/.well-known/jwks.json"

    @property
    def resolved_telephony_agent(self) -> str | None:
        return self.telephony_agent or self.resolved_default_agent

    @property
    def hard_cap_seconds(self) -> int:
        return self.session_hard_cap_seconds or self.max_session_seconds

    @property
    def telephony_owner(self) -> str:
        """Owner id of calls: `#` never passes the user-id check, so no token's `sub` can be this."""
        return f"svc#{self.telephony_principal}"

    @property
    def telephony_hold_window_seconds(self) -> int:
        """How long a call's hold-loop redirects keep coming (each: a pause + the provider's round trip)."""
        return self.telephony_retry_window_seconds + self.telephony_hold_attempts * (
            self.telephony_hold_pause_seconds + 15)

    @property
    def session_ttl_seconds(self) -> int:
        return self.max_session_seconds + self.session_ttl_margin_seconds


# Each field is read from the environment variable of its name upper-cased, but for these (the variable -> the field).
_ENV_EXCEPTIONS = {"PCC_AGENTS": "agents", "PCC_DEFAULT_AGENT": "default_agent", "PCC_SECRET_ID": "secret_id"}
_ENV: dict[str, str] = {
    **{field.upper(): field for field in Settings.model_fields if field not in _ENV_EXCEPTIONS.values()},
    **_ENV_EXCEPTIONS,
}


def parse_settings(environ: dict[str, str]) -> Settings:
    """Build Settings from an environment mapping; errors name the environment variable."""
    values = {field: environ[var] for var, field in _ENV.items() if environ.get(var, "") != ""}
    if values.get("auth_mode") == "insecure-dev":
        values.setdefault("insecure_dev_auth", "true")
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        reverse = {field: var for var, field in _ENV.items()}
        problems = []
        for err in exc.errors():
            loc = err["loc"][0] if err["loc"] else ""
            name = reverse.get(str(loc), str(loc) or "configuration")
            problems.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
    except json.JSONDecodeError as exc:  # pragma: no cover - wrapped by pydantic in practice
        raise SettingsError(f"invalid configuration: PCC_AGENTS: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return parse_settings(dict(os.environ))
