"""The settings of guest access (chalicelib.platform.settings assembles them; docs/guests.md gives each number its
reason): whether public pages may start bots at all, the human check and its provider, the origins allowed, the
guest token's life, and how many tokens one source address may take."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from chalicelib.platform.settings_groups import CommaList, Group

# Each provider's documented siteverify endpoint (docs/guests.md); GUEST_SITEVERIFY_URL overrides it (the local fake).
SITEVERIFY_URLS = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
}
LOCAL_URL_PREFIXES = ("http://127.0.0.1:", "http://localhost:")


class Guests(Group):
    """Guest access: off unless `access`. A visitor trades a human check (`human_check`: its provider, checked by
    its siteverify within `verify_timeout_seconds`; the answer's hostname must be one of `allowed_hostnames`, its
    action `action` when set, its score at least `min_score` when it has one, its challenge at most
    `challenge_max_age_seconds` old) for a guest token valid `token_seconds`, from a page whose Origin is one of
    `allowed_origins`; one source address (an IPv6 one by its /64) takes at most `tokens_per_address_per_hour`.
    `none` checks nothing and exists for the local stage only.

    What guests may cost: one active session per guest, each at most `session_max_seconds`; `starts_per_hour` per
    guest and `starts_per_address_per_minute` per source address; at most `max_active` guest sessions per agent
    (queued guest starts included, so guests never hold the capacity users need); `seconds_per_day` for all guests
    together (0: no daily total). At capacity a guest is refused (429 `at_capacity`) unless `queue`."""

    prefix: ClassVar[str] = "guest_"
    access: bool = False
    human_check: Literal["turnstile", "hcaptcha", "recaptcha", "none"] = "turnstile"
    siteverify_url: str = ""
    allowed_hostnames: CommaList = []
    action: str = ""
    min_score: float = Field(default=0.5, ge=0, le=1)
    challenge_max_age_seconds: int = Field(default=300, ge=10, le=3600)
    verify_timeout_seconds: float = Field(default=3.0, gt=0, le=10)
    allowed_origins: CommaList = []
    token_seconds: int = Field(default=900, ge=60, le=3600)
    tokens_per_address_per_hour: int = Field(default=10, ge=0, le=1000)
    session_max_seconds: int = Field(default=300, ge=30, le=7200)
    starts_per_hour: int = Field(default=3, ge=0, le=100)
    starts_per_address_per_minute: int = Field(default=2, ge=0, le=100)
    max_active: int = Field(default=2, ge=0, le=1000)
    seconds_per_day: int = Field(default=3600, ge=0, le=10_000_000)
    queue: bool = False

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not origin.startswith(("https://", "http://")) or origin.count("/") != 2:
                raise ValueError(f"{origin!r} is not an origin like https://www.example.com")
        return [origin.lower() for origin in value]

    @field_validator("siteverify_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("https://", *LOCAL_URL_PREFIXES)):
            raise ValueError("must be an https:// URL (http:// only to this machine, for the local fake)")
        return value

    @property
    def verify_url(self) -> str:
        return self.siteverify_url or SITEVERIFY_URLS.get(self.human_check, "")
