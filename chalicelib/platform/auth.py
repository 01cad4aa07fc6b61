"""Who is calling: the verified user id (`sub`) of the request.

Modes (AUTH_MODE):
- `jwt` (default): `Authorization: Bearer <JWT>` verified in-process against the issuer's JWKS
  (signature, issuer, audience, expiry; keys cached). Works with any OIDC provider, Cognito included.
- `cognito`: API Gateway's Cognito user-pool authorizer already verified the token; we read `sub`
  from the authorizer claims (set COGNITO_USER_POOL_ARN at deploy time).
- `insecure-dev`: the user id is taken from the `X-Dev-User` header. Only allowed on the `local` stage
  (settings refuse it elsewhere) and logged loudly.
Every failure is a 401 JSON error (503 only when the issuer's keys cannot be fetched).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from chalice.app import Request

from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import logger
from chalicelib.platform.settings import Settings, get_settings
from chalicelib.platform.shapes import JsonObject

DEV_USER_HEADER = "x-dev-user"
_USER_ID = re.compile(r"[A-Za-z0-9@._:|+\-]{1,128}")  # always fullmatch: `$` would let a final "\n" pass
_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
# What a key of each JWK type can verify (RFC 7518): a token may only use one of these for its key.
_KEY_FAMILIES = {"RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, "EC": {"ES256", "ES384", "ES512"}}
GUEST_PREFIX = "guest_"  # a guest's id (chalicelib.guests); no user id may begin with it
_warned_insecure = False


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified user id, and the groups / scopes the token grants (for policies)."""

    user_id: str
    groups: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    service: bool = False  # a server-to-server caller (an API key), not a person
    guest: bool = False  # a visitor of a public page with a guest token (chalicelib.guests), not a user
    address: str = ""  # a guest's source address as the per-address limits count it


def is_guest_id(user_id: str | None) -> bool:
    """Whether an id is a guest's (ids of users never begin with GUEST_PREFIX: `authenticate` refuses them)."""
    return bool(user_id) and str(user_id).startswith(GUEST_PREFIX)


def bearer_is_guest_token(request: Request) -> bool:
    """Whether the bearer token claims to be a guest token (HS256, which no identity provider's token may use);
    a cheap look at its header, before anything is verified (chalicelib.guests verifies it)."""
    token = _bearer_or_none(request)
    if token is None:
        return False
    encoded = token.split(".", 1)[0][:512]
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and header.get("alg") == "HS256"


def _names(value: Any) -> frozenset[str]:
    """A claim holding names: a list, or a string such as "a b", "a,b" or "[a b]" (Cognito's authorizer)."""
    if isinstance(value, list | tuple):
        return frozenset(str(v) for v in value if str(v))
    if isinstance(value, str):
        return frozenset(p for p in re.split(r"[\s,]+", value.strip("[]")) if p)
    return frozenset()


def _principal(user_id: str, claims: JsonObject) -> Principal:
    groups = _names(claims.get("cognito:groups")) | _names(claims.get("groups"))
    scopes = _names(claims.get("scope")) | _names(claims.get("scp"))
    return Principal(user_id, groups, scopes)


def _unauthorized(detail: str) -> Refused:
    return Refused("unauthorized", detail)


@lru_cache(maxsize=4)
def _jwks_client(url: str, lifespan: int) -> Any:
    import jwt  # noqa: PLC0415 - PyJWT + cryptography are only paid for when a token is checked

    return jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=max(lifespan, 1), timeout=5)


def _algorithms_for(signing_key: Any) -> list[str]:
    """The algorithms this JWK can verify: its declared `alg`, else its key type's family."""
    jwk = getattr(signing_key, "_jwk_data", None) or {}
    declared = jwk.get("alg") if isinstance(jwk, dict) else None
    allowed = {declared} if isinstance(declared, str) else _KEY_FAMILIES.get(str(signing_key.key_type), set())
    return [alg for alg in _ALGORITHMS if alg in allowed]


def _verify_jwt(token: str, settings: Settings) -> Principal:
    import jwt  # noqa: PLC0415

    try:
        signing_key = _jwks_client(settings.auth.jwks_url, settings.auth.jwks_cache_seconds).get_signing_key_from_jwt(
            token
        )
        algorithms = _algorithms_for(signing_key)
        if jwt.get_unverified_header(token).get("alg") not in algorithms:
            # e.g. ES256 in the header with the issuer's RSA key id: PyJWT would try to load the RSA key
            # as an EC key and fail with a TypeError. It is simply a forged token.
            raise _unauthorized("Invalid token")
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=algorithms,
            audience=settings.auth.oidc_audience,
            issuer=settings.auth.oidc_issuer,
            options={"require": ["exp", "sub", "iss", "aud"]},
            leeway=30,
        )
    except jwt.PyJWKClientConnectionError:
        logger.error("JWKS unreachable", extra={"jwks_url": settings.auth.jwks_url})
        raise Refused("auth_unavailable", "Cannot verify tokens right now") from None
    except jwt.ExpiredSignatureError:
        raise _unauthorized("Token expired") from None
    except (jwt.PyJWTError, ValueError, KeyError, TypeError):
        raise _unauthorized("Invalid token") from None
    return _principal(_checked_user_id(claims.get("sub")), claims)


def _checked_user_id(value: Any) -> str:
    if not isinstance(value, str) or not _USER_ID.fullmatch(value) or is_guest_id(value):
        raise _unauthorized("Token has no usable subject")
    return value


def _bearer_or_none(request: Request) -> str | None:
    header = request.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _bearer(request: Request) -> str:
    token = _bearer_or_none(request)
    if token is None:
        raise _unauthorized("Missing bearer token")
    return token


def authenticate(request: Request) -> str:
    """The verified user id of this request, or Refused (401 at the edge)."""
    return authenticate_principal(request).user_id


def authenticate_principal(request: Request) -> Principal:
    """The verified caller of this request, or Refused (401 at the edge)."""
    settings = get_settings()
    if settings.auth.auth_mode == "insecure-dev":
        global _warned_insecure
        if not _warned_insecure:
            logger.warning("INSECURE DEV AUTH IS ON: user ids are taken from the X-Dev-User header. "
                           "Never use this outside the local stage.")
            _warned_insecure = True
        dev_user = str(request.headers.get(DEV_USER_HEADER) or "")
        if not dev_user:
            raise _unauthorized("Missing X-Dev-User header: the local stage uses insecure dev auth, "
                                "send `X-Dev-User: <any user id>`")
        if not _USER_ID.fullmatch(dev_user) or is_guest_id(dev_user):
            raise _unauthorized("X-Dev-User must be 1-128 characters of A-Z a-z 0-9 @ . _ : | + -, "
                                f"not beginning with {GUEST_PREFIX} (guests' ids)")
        return Principal(dev_user, _names(str(request.headers.get("x-dev-groups") or "")))
    if settings.auth.auth_mode == "cognito":
        context = request.context or {}
        claims = (context.get("authorizer") or {}).get("claims") or {}
        if not claims:
            raise _unauthorized("Not authenticated")
        return _principal(_checked_user_id(claims.get("sub")), claims)
    return _verify_jwt(_bearer(request), settings)


def route_authorizer(user_pool_arn: str) -> Any:
    """API Gateway's Cognito authorizer for AUTH_MODE=cognito deployments (None otherwise)."""
    if not user_pool_arn:
        return None
    from chalice.app import CognitoUserPoolAuthorizer  # noqa: PLC0415

    return CognitoUserPoolAuthorizer("GatewayUsers", provider_arns=[user_pool_arn])
