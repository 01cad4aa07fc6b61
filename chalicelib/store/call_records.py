"""Replay protection for telephony webhooks, by the provider's call id.

Twilio and Plivo sign no timestamp, so a captured webhook stays valid forever; Telnyx and Daily sign
one (and are checked against TELEPHONY_SIGNATURE_TOLERANCE_SECONDS as well). Every call id is remembered
here for TELEPHONY_REPLAY_TTL_SECONDS (24 h by default: longer than any call), independently of the
Idempotency-Key store and its 10-minute TTL:

- the call's first webhook may come again within TELEPHONY_RETRY_WINDOW_SECONDS (a provider retrying a
  slow answer; the idempotency store then gives the same answer and never a second bot);
- the hold loop's signed redirects may come within the loop's own length (`telephony_hold_window_seconds`);
- anything later is a replay: 409 `call_replayed`, nothing started.
"""

from __future__ import annotations

import time

from chalicelib.platform.dynamo import put_if, table
from chalicelib.platform.errors import DomainError
from chalicelib.platform.observability import count, logger

MAX_CALL_ID = 256


class InvalidCallId(DomainError):
    kind = "invalid_call_id"


class CallReplayed(DomainError):
    """A webhook of a call already handled, outside its retry (or hold) window."""

    kind = "call_replayed"


def _key(provider: str, call_id: str) -> dict[str, str]:
    return {"PK": f"CALL#{provider}#{call_id}", "SK": "META"}


def first_seen(provider: str, call_id: str, now: float, ttl_seconds: int) -> float:
    """When this call id was first seen (now, if this is the first time; remembered for `ttl_seconds`)."""
    item = {**_key(provider, call_id), "first_seen_ms": int(now * 1000), "ttl": int(now) + ttl_seconds}
    if put_if(item, "attribute_not_exists(PK)"):
        return now
    stored = table().get_item(Key=_key(provider, call_id), ConsistentRead=True).get("Item") or {}
    return int(stored.get("first_seen_ms", int(now * 1000))) / 1000


def admit(provider: str, call_id: str, *, window_seconds: float, ttl_seconds: int, now: float | None = None) -> None:
    """Let a webhook of this call through if the call id was first seen at most `window_seconds` ago, or raise
    CallReplayed (InvalidCallId for no id or too long a one); ids are remembered for `ttl_seconds`."""
    if not call_id or len(call_id) > MAX_CALL_ID:
        raise InvalidCallId(f"The call id must be 1-{MAX_CALL_ID} characters")
    now = time.time() if now is None else now
    age = now - first_seen(provider, call_id, now, ttl_seconds)
    if age > window_seconds:
        logger.warning("telephony webhook replayed", extra={"provider": provider, "age_seconds": int(age)})
        count("WebhookReplayed", provider=provider)
        raise CallReplayed("This call was already handled")
