"""All configuration, parsed once from the environment into pydantic models: the stage's own names at the top, the
rest by concern (Pipecat Cloud, auth, proxy, queue, limits, telephony, dial-out, events, usage, orphans).

One rule names every variable: a group's prefix and the field's name, upper-cased (`pcc.api_url`: PCC_API_URL;
`queue.max_queued`: MAX_QUEUED); `ENV_EXCEPTIONS` lists the three that do not follow it. A bad or missing setting
fails the cold start with a message naming the variable.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chalicelib.platform.settings_groups import AgentPolicy as AgentPolicy  # re-exported for policy code
from chalicelib.platform.settings_groups import (
    Auth,
    Events,
    Group,
    Limits,
    Orphans,
    PipecatCloud,
    Proxy,
    Queue,
    Usage,
)
from chalicelib.platform.settings_guests import Guests
from chalicelib.platform.settings_telephony import Dialout, Telephony


class SettingsError(RuntimeError):
    """Raised at start-up when the environment does not describe a valid configuration."""


GROUPS: dict[str, type[Group]] = {"pcc": PipecatCloud, "auth": Auth, "proxy": Proxy, "queue": Queue,
                                   "limits": Limits, "telephony": Telephony, "dialout": Dialout, "events": Events,
                                   "usage": Usage, "orphans": Orphans, "guests": Guests}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(min_length=1)
    table_name: str = Field(min_length=1)
    secret_cache_seconds: int = Field(default=300, ge=0)
    pcc: PipecatCloud
    auth: Auth = Auth()
    proxy: Proxy = Proxy()
    queue: Queue = Queue()
    limits: Limits = Limits()
    telephony: Telephony = Telephony()
    dialout: Dialout = Dialout()
    events: Events = Events()
    usage: Usage = Usage()
    orphans: Orphans = Orphans()
    guests: Guests = Guests()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.pcc.default_agent is not None and self.pcc.default_agent not in self.pcc.agents:
            raise ValueError(f"PCC_DEFAULT_AGENT {self.pcc.default_agent!r} is not in PCC_AGENTS")
        insecure = self.auth.auth_mode == "insecure-dev" or self.auth.insecure_dev_auth
        if insecure and self.stage != "local":
            raise ValueError("insecure dev auth is only allowed on the 'local' stage")
        if self.telephony.agent is not None and self.telephony.agent not in self.pcc.agents:
            raise ValueError(f"TELEPHONY_AGENT {self.telephony.agent!r} is not in PCC_AGENTS")
        if self.queue.dispatch_run_seconds + self.pcc.connect_timeout + self.pcc.read_timeout > 55:
            raise ValueError("DISPATCH_RUN_SECONDS + PCC_CONNECT_TIMEOUT + PCC_READ_TIMEOUT must be at most 55 "
                             "(the queue worker's 60 s Lambda timeout, less a margin)")
        if self.guests.access and self.guests.human_check == "none" and self.stage != "local":
            raise ValueError("GUEST_HUMAN_CHECK=none is only allowed on the 'local' stage")
        if self.guests.access and self.guests.human_check != "none" and not self.guests.allowed_hostnames:
            raise ValueError("GUEST_ACCESS needs GUEST_ALLOWED_HOSTNAMES (the pages' hostnames the human check names)")
        if self.guests.access and self.auth.auth_mode == "cognito":
            raise ValueError("GUEST_ACCESS needs AUTH_MODE=jwt or insecure-dev: API Gateway's Cognito authorizer "
                             "would refuse guest tokens before the gateway sees them")
        if self.guests.access and not self.guests.allowed_origins:
            raise ValueError("GUEST_ACCESS needs GUEST_ALLOWED_ORIGINS (the pages guests come from)")
        if self.auth.auth_mode == "jwt" and not (self.auth.oidc_issuer and self.auth.oidc_audience):
            raise ValueError("AUTH_MODE=jwt needs OIDC_ISSUER and OIDC_AUDIENCE")
        return self

    @property
    def resolved_telephony_agent(self) -> str | None:
        return self.telephony.agent or self.pcc.resolved_default_agent


# The variables that do not follow the rule (group prefix + field, upper-cased): variable -> (group, field).
ENV_EXCEPTIONS: dict[str, tuple[str, str]] = {
    "DAILY_DIALIN_ATTEMPTS": ("telephony", "daily_dialin_attempts"),
    "DAILY_DIALIN_RETRY_SECONDS": ("telephony", "daily_dialin_retry_seconds"),
    "EXOTEL_ALLOWED_IPS": ("telephony", "exotel_allowed_ips"),
}
TOP_LEVEL = ("stage", "table_name", "secret_cache_seconds")


def _variables() -> dict[str, tuple[str, ...]]:
    """Every variable -> where its value goes: (field,) at the top, (group, field) in a group."""
    found: dict[str, tuple[str, ...]] = {name.upper(): (name,) for name in TOP_LEVEL}
    for group, model in GROUPS.items():
        for field in model.model_fields:
            found[(model.prefix + field).upper()] = (group, field)
    for variable, place in ENV_EXCEPTIONS.items():
        found = {v: p for v, p in found.items() if p != place}
        found[variable] = place
    return found


ENV: dict[str, tuple[str, ...]] = _variables()


def parse_settings(environ: dict[str, str]) -> Settings:
    """Build Settings from an environment mapping; errors name the environment variable."""
    top: dict[str, str] = {}
    groups: dict[str, dict[str, str]] = {group: {} for group in GROUPS}
    for variable, place in ENV.items():
        if environ.get(variable, "") != "":
            if len(place) == 1:
                top[place[0]] = environ[variable]
            else:
                groups[place[0]][place[1]] = environ[variable]
    if groups["auth"].get("auth_mode") == "insecure-dev":
        groups["auth"].setdefault("insecure_dev_auth", "true")
    try:
        return Settings.model_validate({**top, **groups})
    except ValidationError as exc:
        reverse = {place: variable for variable, place in ENV.items()}
        problems = []
        for err in exc.errors():
            loc = tuple(str(part) for part in err["loc"][:2])
            name = reverse.get(loc) or reverse.get(loc[:1]) or ("configuration" if not loc else ".".join(loc))
            if len(loc) == 1 and loc[0] in GROUPS:  # a group's own check: its message names the variables
                name = "configuration"
            problems.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
    except json.JSONDecodeError as exc:  # pragma: no cover - wrapped by pydantic in practice
        raise SettingsError(f"invalid configuration: PCC_AGENTS: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return parse_settings(dict(os.environ))
