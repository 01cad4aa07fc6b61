"""What the session proxy never lets a client say to the bot in the gateway's place.

Pipecat Cloud's base image (the FastAPI app every bot runs in) reads some requests as Pipecat Cloud's
own, and would let a client replace the identity the gateway verified:

- `POST /api/offer` (SmallWebRTC) starts the bot with the offer's `requestData` (alias `request_data`)
  as its body, and falls back to the `/start` body (with our `body.user`) only when that is empty. So
  client data is taken out of every offer body (`PROXY_OFFER_REQUEST_DATA=strip`, the default), or an
  offer carrying any is refused (`refuse`: 422 `offer_request_data_not_allowed`). The offer is parsed
  the way the base image parses it (JSON from the raw bytes, whatever the Content-Type says) and what the
  bot receives is our own re-encoding of what we checked: escapes, encodings and odd spellings of the
  key cannot slip past. A body we cannot read as one JSON object, or one with a duplicate key (two parsers
  could keep different copies), is refused (400 `invalid_offer`).
- `/bot`, `/ws` and `/whatsapp` start bot pipelines with bodies and headers of the caller's choosing:
  never proxied (403 `path_not_allowed`), whatever PROXY_ALLOWED_PATHS says.
- `X-Daily-*` (session id, room URL, room token, transport) and `X-PCC-*` headers are Pipecat Cloud's
  to set: chalicelib.sessions.proxy_headers never forwards them from a client.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from chalicelib.platform.errors import Refused
from chalicelib.platform.shapes import JsonObject

OfferPolicy = Literal["strip", "refuse"]
OFFER_PATH = ("api", "offer")
INTERNAL_ROUTES = frozenset({"bot", "ws", "whatsapp"})
_CLIENT_DATA = "requestdata"  # `requestData`, `request_data`, and any other spelling of it


def _normalised(segment: str) -> str:
    return segment.strip().lower()


def refuse_internal_route(segments: list[str]) -> None:
    """403 for the base image's own routes (first segment `bot`, `ws` or `whatsapp`, any case)."""
    if segments and _normalised(segments[0]) in INTERNAL_ROUTES:
        raise Refused("path_not_allowed",
                       f"Bot path '{segments[0]}' belongs to Pipecat Cloud's base image and is never proxied")


def is_offer(segments: list[str]) -> bool:
    return tuple(_normalised(s) for s in segments) == OFFER_PATH


def _is_client_data(key: str) -> bool:
    return re.sub(r"[^a-z]", "", key.lower()) == _CLIENT_DATA


def _no_duplicates(pairs: list[tuple[str, Any]]) -> JsonObject:
    out: JsonObject = {}
    for key, value in pairs:
        if key in out:
            raise Refused("invalid_offer", f"The offer has the key {key[:64]!r} twice")
        out[key] = value
    return out


def offer_body(body: bytes, policy: OfferPolicy) -> bytes:
    """The offer body the bot may receive: without client data (`strip`), or Refused (`refuse`)."""
    if not body.strip():
        return body
    try:
        offer = json.loads(body, object_pairs_hook=_no_duplicates)  # bytes: UTF-8/16/32, as the bot reads it
    except (ValueError, RecursionError):
        raise Refused("invalid_offer", "The offer is not a JSON object") from None
    if not isinstance(offer, dict):
        raise Refused("invalid_offer", "The offer is not a JSON object")
    client_keys = [key for key in offer if _is_client_data(key)]
    if policy == "refuse" and any(offer[key] not in (None, {}, [], "") for key in client_keys):
        raise Refused("offer_request_data_not_allowed",
                       "Offers may not carry requestData: the bot's body is set by the server at /start")
    for key in client_keys:
        del offer[key]
    return json.dumps(offer, separators=(",", ":")).encode()  # ASCII: even a lone surrogate escape re-encodes
