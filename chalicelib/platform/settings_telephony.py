"""The settings' telephony groups (chalicelib.platform.settings assembles them): the webhooks with their replay
protection and the hold loop, and dial-out's toll-fraud rules."""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from chalicelib.platform.settings_groups import CommaList, Group


class Telephony(Group):
    """Telephony webhooks. Replay protection: a call id is remembered `replay_ttl_seconds` (>= the longest call); a
    call's first webhook may be repeated (provider retries) within `retry_window_seconds`, hold-loop redirects
    within the loop's own length; anything later is a replay (409). Exotel (unsigned): an optional source-address
    allow-list (CIDRs) on top of the URL token."""

    prefix: ClassVar[str] = "telephony_"
    agent: str | None = None
    public_base_url: str = ""  # the URL providers call (signatures cover it), e.g. https://x/api
    websocket_auth: Literal["none", "token"] = "none"
    principal: str = "telephony"
    session_limit: int = Field(default=50, ge=1)
    hold_attempts: int = Field(default=4, ge=0, le=20)
    hold_pause_seconds: int = Field(default=5, ge=1, le=60)
    signature_tolerance_seconds: int = Field(default=300, ge=1)
    start_timeout_seconds: float = Field(default=8.0, gt=0, le=12)  # Twilio waits 15 s
    replay_ttl_seconds: int = Field(default=86400, ge=3600)
    retry_window_seconds: int = Field(default=60, ge=1, le=3600)
    daily_dialin_attempts: int = Field(default=3, ge=1, le=10)
    daily_dialin_retry_seconds: float = Field(default=1.0, ge=0, le=5)
    exotel_allowed_ips: CommaList = []

    @field_validator("exotel_allowed_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value

    @property
    def owner(self) -> str:
        """Owner id of calls: `#` never passes the user-id check, so no token's `sub` can be this."""
        return f"svc#{self.principal}"

    @property
    def hold_window_seconds(self) -> int:
        """How long a call's hold-loop redirects keep coming (each: a pause + the provider's round trip)."""
        return self.retry_window_seconds + self.hold_attempts * (self.hold_pause_seconds + 15)


class Dialout(Group):
    """Dial-out (toll fraud): who may (JWT groups / scopes; the X-Api-Key service always), where to (E.164
    prefixes, SIP domains), as whom (caller ids), how often (per principal, per hour)."""

    prefix: ClassVar[str] = "dialout_"
    allowed_groups: CommaList = []
    allowed_scopes: CommaList = []
    allowed_prefixes: CommaList = []
    allowed_sip_domains: CommaList = []
    caller_ids: CommaList = []
    rate_per_hour: int = Field(default=20, ge=0)

    @field_validator("allowed_prefixes")
    @classmethod
    def _e164_prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not re.fullmatch(r"\+[0-9]{1,15}", prefix):
                raise ValueError(f"{prefix!r} is not an E.164 prefix like +1415")
        return value
