"""Webhook signature checks for each telephony provider. All fail closed, all compare in constant time.

- Twilio: base64(HMAC-SHA1(auth token, URL + each POST param name+value, sorted by name)).
- Telnyx: Ed25519 over `{telnyx-timestamp}|{raw body}` with the account public key; timestamp tolerance.
- Plivo V3: base64(HMAC-SHA256(auth token, URL with sorted params + "." + nonce)); the header may carry
  several comma-separated signatures (one per active auth token).
- Daily dial-in: base64(HMAC-SHA256(base64-decoded secret, `{timestamp}.{raw body}`)); tolerance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit, urlunsplit


def twilio_valid(auth_token: str, url: str, params: list[tuple[str, str]], signature: str | None) -> bool:
    if not signature or not auth_token:
        return False
    data = url + "".join(f"{k}{v}" for k, v in sorted(params, key=lambda kv: kv[0]))
    expected = base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()
    return hmac.compare_digest(expected, signature.strip())


def _fresh(timestamp: str | None, now: float, tolerance: int) -> bool:
    try:
        ts = float(timestamp or "")
    except ValueError:
        return False
    if ts > 1e12:  # milliseconds
        ts /= 1000
    return abs(now - ts) <= tolerance


def telnyx_valid(public_key_b64: str, timestamp: str | None, raw_body: bytes, signature_b64: str | None,
                 now: float, tolerance: int) -> bool:
    if not (public_key_b64 and signature_b64 and _fresh(timestamp, now, tolerance)):
        return False
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - only telephony pays for it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), f"{timestamp}|".encode() + raw_body)
        return True
    except (InvalidSignature, ValueError, binascii.Error):
        return False


def _sorted_query(params: dict[str, list[str]]) -> str:
    return "&".join("&".join(f"{k}={v}" for v in sorted(params[k])) for k in sorted(params))


def _sorted_concat(params: dict[str, list[str]]) -> str:
    return "".join("".join(f"{k}{v}" for v in sorted(params[k])) for k in sorted(params))


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def plivo_base_string(method: str, url: str, params: list[tuple[str, str]]) -> str:
    """What Plivo signs before `.{nonce}` (as its SDKs build it)."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    url_query = _multi(parse_qsl(parts.query, keep_blank_values=True))
    if method.upper() == "GET":
        merged = _multi(params)
        for key, values in url_query.items():
            merged[key] = values
        query = _sorted_query(merged)
        return base + ("?" + query if query else "")
    query = _sorted_query(url_query)
    if params:
        return base + "?" + query + ("." if query else "") + _sorted_concat(_multi(params))
    return base + ("?" + query if query else "")


def plivo_valid(auth_token: str, method: str, url: str, params: list[tuple[str, str]], nonce: str | None,
                signatures: str | None) -> bool:
    if not (auth_token and nonce and signatures):
        return False
    data = f"{plivo_base_string(method, url, params)}.{nonce}".encode()
    expected = base64.b64encode(hmac.new(auth_token.encode(), data, hashlib.sha256).digest()).decode()
    candidates = [s.strip() for s in signatures.split(",") if s.strip()]
    # check every candidate (no early exit) so timing does not depend on which one matched
    return sum(hmac.compare_digest(expected, c) for c in candidates) > 0


def daily_pinless_valid(secret_b64: str, timestamp: str | None, raw_body: bytes, signature: str | None,
                        now: float, tolerance: int) -> bool:
    if not (secret_b64 and signature and _fresh(timestamp, now, tolerance)):
        return False
    try:
        key = base64.b64decode(secret_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    message = f"{timestamp}.".encode() + raw_body
    expected = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, signature.strip())


def hold_token(key: str, call_id: str, attempt: int) -> str:
    """Signs the hold loop's attempt counter, so a caller cannot reset it."""
    return hmac.new(key.encode(), f"hold|{call_id}|{attempt}".encode(), hashlib.sha256).hexdigest()[:32]


def hold_token_valid(key: str, call_id: str, attempt: int, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(hold_token(key, call_id, attempt), token or "")
