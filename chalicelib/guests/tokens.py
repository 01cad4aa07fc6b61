"""Guest tokens: short-lived JWTs the gateway signs for a visitor who passed the human check (docs/guests.md).

HS256 with a key only the gateway holds (`guest_token_keys` in its secret: `kid:base64key` entries, the first signs,
every one verifies, so a key rotates without downtime). Bound to their own audience and issuer, so a guest token is
never a user token and a user token (RS/ES-signed by the identity provider, another audience) is never a guest's:
each verifier accepts only its own algorithms and keys. Refused, as a 401: another algorithm (`none` included), an
unknown key id, another key, expired, not yet valid, another audience or issuer, a subject that is not a guest id,
more than MAX_TOKEN_BYTES.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass

import jwt

from chalicelib.platform.errors import Refused

ALGORITHM = "HS256"
AUDIENCE = "pipecat-gateway:guest"
MAX_TOKEN_BYTES = 2048
MIN_KEY_BYTES = 32
GUEST_ID = re.compile(r"guest_[0-9a-f]{24}")
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class GuestToken:
    guest_id: str
    expires_at: int


@dataclass(frozen=True)
class SigningKeys:
    """The keys, first the one that signs; `from_secret` reads the secret's `guest_token_keys`."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_secret(cls, value: str) -> SigningKeys:
        keys = []
        for entry in (e.strip() for e in value.split(",") if e.strip()):
            kid, _, encoded = entry.partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("guest_token_keys: an entry is not kid:base64") from None
            if not _KID.fullmatch(kid) or len(key) < MIN_KEY_BYTES:
                raise ValueError(f"guest_token_keys: each key needs a kid and at least {MIN_KEY_BYTES} bytes")
            keys.append((kid, key))
        if not keys:
            raise ValueError("guest_token_keys is empty")
        return cls(tuple(keys))

    def key(self, kid: str) -> bytes | None:
        return next((key for known, key in self.keys if known == kid), None)


def new_guest_id() -> str:
    return f"guest_{secrets.token_hex(12)}"


def issue(keys: SigningKeys, issuer: str, lifetime_seconds: int, now: float | None = None) -> tuple[str, GuestToken]:
    """A new guest and its token."""
    now = int(time.time() if now is None else now)
    guest = GuestToken(new_guest_id(), now + lifetime_seconds)
    kid, key = keys.keys[0]
    claims = {"sub": guest.guest_id, "aud": AUDIENCE, "iss": issuer, "iat": now, "nbf": now,
              "exp": guest.expires_at}
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid}), guest


def _unauthorized(detail: str) -> Refused:
    return Refused("unauthorized", detail)


def verify(token: str, keys: SigningKeys, issuer: str) -> GuestToken:
    """The guest a token names, or Refused (401)."""
    if len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
        raise _unauthorized("Invalid guest token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _unauthorized("Invalid guest token") from None
    key = keys.key(str(header.get("kid", "")))
    if header.get("alg") != ALGORITHM or key is None:
        raise _unauthorized("Invalid guest token")
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=issuer,
                            options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("The guest token expired; get a new one") from None
    except jwt.PyJWTError:
        raise _unauthorized("Invalid guest token") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not GUEST_ID.fullmatch(subject):
        raise _unauthorized("Invalid guest token")
    return GuestToken(subject, int(claims["exp"]))
