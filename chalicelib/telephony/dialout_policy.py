"""Who may make the gateway dial out, where to, as whom, and how often (toll-fraud defence).

Denied by default. Allowed callers: the server-to-server `X-Api-Key` service, or a user whose token
carries one of DIALOUT_ALLOWED_GROUPS (`cognito:groups` / `groups`) or DIALOUT_ALLOWED_SCOPES
(`scope` / `scp`). Every caller, the service included, may only reach numbers starting with one of
DIALOUT_ALLOWED_PREFIXES (E.164) or SIP URIs on DIALOUT_ALLOWED_SIP_DOMAINS (parsed strictly: one host, no
parameters, headers or escapes; a phone number as the URI's user must be E.164 and match
DIALOUT_ALLOWED_PREFIXES too, since a SIP trunk dials it), may only present a caller
id listed in DIALOUT_CALLER_IDS, and gets at most DIALOUT_RATE_PER_HOUR dial-outs an hour.
All refusals are 403 (429 for the rate), before anything is started.
"""

from __future__ import annotations

import re

from chalicelib.platform import rate_limits
from chalicelib.platform.auth import Principal
from chalicelib.platform.errors import Refused
from chalicelib.platform.settings import Settings

# A SIP URI as we forward it: `sip:` or `sips:`, an optional user (unreserved characters, `+`, `&`, `=`, `$`,
# `,` only: no `@`, `%` escapes, parameters or `>`), one host (a DNS name or a bracketed IPv6 address), an
# optional port, and only the parameters `;transport=udp|tcp|tls|sctp|ws|wss` and `;user=phone|ip`. Nothing
# else: other `;params`, `?headers`, `<...>` and a second `@` are refused, so the host we check is the only host
# the URI can name.
_SIP_URI = re.compile(
    r"sips?:(?:(?P<user>[A-Za-z0-9\-_.!~*'()&=+$,]{1,64})@)?"
    r"(?P<host>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?"
    r"(?:;(?:transport=(?:udp|tcp|tls|sctp|ws|wss)|user=(?:phone|ip)))*",
    re.IGNORECASE)
_PHONE_USER = re.compile(r"\+?[0-9][0-9\-.()]{3,}")


def parse_sip_uri(uri: str) -> tuple[str | None, str] | None:
    """(user, host lower-case) of a strictly formed SIP URI, else None."""
    match = _SIP_URI.fullmatch(uri)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        return None
    return match["user"], match["host"].lower()


def _phone_number(user: str | None) -> str | None:
    """The E.164 number a SIP user part dials, when it is a phone number (a trunk routes it to the PSTN)."""
    if user is None or not _PHONE_USER.fullmatch(user):
        return None
    digits = re.sub(r"[^0-9]", "", user)
    return "+" + digits if user.startswith("+") else digits


def authorize(caller: Principal, settings: Settings, *, phone_number: str | None, sip_uri: str | None,
              caller_id: str | None) -> None:
    if not caller.service and not (caller.groups & set(settings.dialout.allowed_groups)
                                   or caller.scopes & set(settings.dialout.allowed_scopes)):
        raise Refused("dialout_not_allowed", "This account may not dial out")
    if phone_number is not None and not any(phone_number.startswith(p) for p in settings.dialout.allowed_prefixes):
        raise Refused("destination_not_allowed", "This number is not an allowed dial-out destination")
    if sip_uri is not None:
        parsed = parse_sip_uri(sip_uri)
        if parsed is None:
            raise Refused("invalid_sip_uri", "sipUri must be sip:[user@]host[:port] (parameters: only "
                                                   "transport and user; no headers or escapes)")
        if parsed[1] not in {d.lower() for d in settings.dialout.allowed_sip_domains}:
            raise Refused("destination_not_allowed", "This SIP domain is not an allowed dial-out destination")
        number = _phone_number(parsed[0])
        if number is not None and not (number.startswith("+") and any(
                number.startswith(p) for p in settings.dialout.allowed_prefixes)):
            raise Refused("destination_not_allowed", "A phone number in a SIP URI must be in E.164 form "
                                                           "(+...) and start with an allowed dial-out prefix")
    if caller_id is not None and caller_id not in settings.dialout.caller_ids:
        raise Refused("caller_id_not_allowed", "This caller id may not be used")
    rate_limits.take(f"dialout#{caller.user_id}", settings.dialout.rate_per_hour, 3600,
                     kind="dialout_rate_limited", what="Dial-outs")
