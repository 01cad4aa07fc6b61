"""POST /guest: a visitor of an allowed page trades a human check for a guest token (docs/guests.md).

In this order, each a refusal that creates nothing: guest access on (403 `guest_access_disabled`), the page's
Origin allowed (403 `origin_not_allowed`: it stops browsers on other sites, not scripts), the source address's
tokens this hour (429 `guest_tokens_rate_limited`; keyed on the address API Gateway saw, never X-Forwarded-For, an
IPv6 address by its /64), the request's shape, the human check (chalicelib.guests.human_check), then the token.
"""

from __future__ import annotations

import ipaddress

from pydantic import ValidationError

from chalicelib.api import answers
from chalicelib.api.models import GuestRequest
from chalicelib.guests import human_check, tokens
from chalicelib.platform import rate_limits
from chalicelib.platform.dynamo import iso_at
from chalicelib.platform.errors import Refused
from chalicelib.platform.http import HttpResult
from chalicelib.platform.observability import count
from chalicelib.platform.request_parsing import parse_json_object, validation_error
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


def issue_token(headers: dict[str, str], source_ip: str, raw_body: bytes | None) -> HttpResult:
    settings = get_settings()
    guests = settings.guests
    if not guests.access:
        raise Refused("guest_access_disabled", "Guest access is off")
    check_origin(settings, headers.get("origin", ""))
    rate_limits.take(f"guesttoken#{source_key(source_ip)}", guests.tokens_per_address_per_hour, 3600,
                     kind="guest_tokens_rate_limited", what="Guest tokens from this address")
    try:
        request = GuestRequest.model_validate(parse_json_object(raw_body, max_bytes=8 * 1024))
    except ValidationError as exc:
        raise validation_error(exc) from None
    secrets = get_secrets()
    keys = signing_keys(secrets)
    if guests.human_check != "none":
        secret = secrets.human_check_secret.get_secret_value() if secrets.human_check_secret is not None else ""
        human_check.verify(guests, secret, request.humanCheckToken or "", source_ip)
    token, guest = tokens.issue(keys, issuer(settings), guests.token_seconds)
    count("GuestTokensIssued")
    answer = answers.GuestTokenAnswer(token=token, tokenType="Bearer", guestId=guest.guest_id,
                                      expiresAt=iso_at(guest.expires_at), expiresIn=guests.token_seconds)
    return HttpResult(200, answer.model_dump(), {"Cache-Control": "no-store"})
