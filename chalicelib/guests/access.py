"""Who a guest is: the guest token of a request verified (chalicelib.guests.tokens), on the routes guests may use
(POST /start, the session proxy, their own sessions and pending starts, GET /usage; never telephony, dial-out or
the admin API, which take users only), from a page of an allowed origin (GUEST_ALLOWED_ORIGINS: a guest's browser
sends `Origin` with each of its cross-origin calls; like POST /guest's, this stops browsers, not scripts)."""

from __future__ import annotations

import ipaddress

from chalicelib.guests import tokens
from chalicelib.platform.auth import Principal
from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import count
from chalicelib.platform.secrets import GatewaySecrets, get_secrets
from chalicelib.platform.settings import Settings, get_settings


def source_key(source_ip: str) -> str:
    """Whom the per-address limits count: an IPv4 address, an IPv6 address's /64 (one subscriber's usual share)."""
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def issuer(settings: Settings) -> str:
    return f"pipecat-gateway/{settings.stage}"


def signing_keys(secrets: GatewaySecrets) -> tokens.SigningKeys:
    value = secrets.guest_token_keys.get_secret_value() if secrets.guest_token_keys is not None else ""
    try:
        return tokens.SigningKeys.from_secret(value)
    except ValueError:
        raise Refused("guest_access_misconfigured", "Guest access is not configured") from None


def check_origin(settings: Settings, origin: str) -> None:
    if origin.lower() not in settings.guests.allowed_origins:
        count("GuestTokensRefused", reason="origin_not_allowed")
        raise Refused("origin_not_allowed", "This page's origin may not use guest access")


def authenticate(authorization: str, origin: str, source_ip: str) -> Principal:
    """The guest a bearer token names (guest access is on: app.py), or Refused: 401 for any token that is not a valid
    guest token of ours, then 403 `origin_not_allowed` from another page (or none)."""
    settings = get_settings()
    token = authorization.partition(" ")[2].strip()
    guest = tokens.verify(token, signing_keys(get_secrets()), issuer(settings))
    check_origin(settings, origin)
    return Principal(guest.guest_id, guest=True, address=source_key(source_ip))
