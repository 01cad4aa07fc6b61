"""POST /guest: a visitor of an allowed page trades a human check for a guest token (docs/guests.md).

In this order, each a refusal that creates nothing: guest access on (403 `guest_access_disabled`), the page's
Origin allowed (403 `origin_not_allowed`: it stops browsers on other sites, not scripts), the source address's
tokens this hour (429 `guest_tokens_rate_limited`; keyed on the address API Gateway saw, never X-Forwarded-For, an
IPv6 address by its /64), the request's shape, the human check (chalicelib.guests.human_check), then the token.
"""

from __future__ import annotations

from pydantic import ValidationError

from chalicelib.api import answers
from chalicelib.api.models import GuestRequest
from chalicelib.guests import budget, human_check, tokens
from chalicelib.guests.access import check_origin, issuer, signing_keys, source_key
from chalicelib.platform import rate_limits
from chalicelib.platform.dynamo import iso_at
from chalicelib.platform.errors import Refused
from chalicelib.platform.http import HttpResult
from chalicelib.platform.observability import count
from chalicelib.platform.request_parsing import parse_json_object, validation_error
from chalicelib.platform.secrets import get_secrets
from chalicelib.platform.settings import get_settings


def issue_token(headers: dict[str, str], source_ip: str, raw_body: bytes | None) -> HttpResult:
    settings = get_settings()
    guests = settings.guests
    if not guests.access:
        raise Refused("guest_access_disabled", "Guest access is off")
    check_origin(settings, headers.get("origin", ""))
    rate_limits.take(f"guesttoken#{source_key(source_ip)}", guests.tokens_per_address_per_hour, 3600,
                     kind="guest_tokens_rate_limited", what="Guest tokens from this address")
    budget.check()  # the guests' day used up: no token either
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
