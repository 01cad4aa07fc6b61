"""Who may make the gateway dial out, where to, as whom, and how often (toll-fraud defence).

Denied by default. Allowed callers: the server-to-server `X-Api-Key` service, or a user whose token
carries one of DIALOUT_ALLOWED_GROUPS (`cognito:groups` / `groups`) or DIALOUT_ALLOWED_SCOPES
(`scope` / `scp`). Every caller, the service included, may only reach numbers starting with one of
DIALOUT_ALLOWED_PREFIXES (E.164) or SIP URIs on DIALOUT_ALLOWED_SIP_DOMAINS, may only present a caller
id listed in DIALOUT_CALLER_IDS, and gets at most DIALOUT_RATE_PER_HOUR dial-outs an hour.
All refusals are 403 (429 for the rate), before anything is started.
"""

from __future__ import annotations

import re

from . import rate_limits
from .auth import Principal
from .errors import ApiError
from .settings import Settings

_SIP_HOST = re.compile(r"^sips?:(?:[^@;?]*@)?(\[[^\]]+\]|[^:;?>]+)", re.IGNORECASE)


def sip_domain(uri: str) -> str:
    match = _SIP_HOST.match(uri)
    return match.group(1).lower() if match else ""


def authorize(caller: Principal, settings: Settings, *, phone_number: str | None, sip_uri: str | None,
              caller_id: str | None) -> None:
    if not caller.service and not (caller.groups & set(settings.dialout_allowed_groups)
                                   or caller.scopes & set(settings.dialout_allowed_scopes)):
        raise ApiError(403, "dialout_not_allowed", "This account may not dial out")
    if phone_number is not None and not any(phone_number.startswith(p) for p in settings.dialout_allowed_prefixes):
        raise ApiError(403, "destination_not_allowed", "This number is not an allowed dial-out destination")
    if sip_uri is not None and sip_domain(sip_uri) not in {d.lower() for d in settings.dialout_allowed_sip_domains}:
        raise ApiError(403, "destination_not_allowed", "This SIP domain is not an allowed dial-out destination")
    if caller_id is not None and caller_id not in settings.dialout_caller_ids:
        raise ApiError(403, "caller_id_not_allowed", "This caller id may not be used")
    rate_limits.take(f"dialout#{caller.user_id}", settings.dialout_rate_per_hour, 3600,
                     code="dialout_rate_limited", what="Dial-outs")
