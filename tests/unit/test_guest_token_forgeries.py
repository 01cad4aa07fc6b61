"""Guest tokens (chalicelib/guests/tokens.py) against every forgery the user-token tests probe for: each is refused
with 401, and a token signed by the second key of a rotation still passes."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.guests import tokens
from chalicelib.platform.errors import Refused

NEW, OLD = b"n" * 32, b"o" * 32
KEYS = tokens.SigningKeys.from_secret(f"k2:{base64.b64encode(NEW).decode()},k1:{base64.b64encode(OLD).decode()}")
ISSUER = "pipecat-gateway/test"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": tokens.new_guest_id(), "aud": tokens.AUDIENCE, "iss": ISSUER, "iat": now, "nbf": now,
            "exp": now + 900, **changes}


def refused(token: str) -> None:
    with pytest.raises(Refused) as caught:
        tokens.verify(token, KEYS, ISSUER)
    assert caught.value.kind == "unauthorized"


def test_an_issued_token_verifies_and_names_its_guest() -> None:
    token, guest = tokens.issue(KEYS, ISSUER, 900)
    assert tokens.verify(token, KEYS, ISSUER) == guest
    assert tokens.GUEST_ID.fullmatch(guest.guest_id)


def test_the_previous_key_still_verifies_during_a_rotation() -> None:
    token = jwt.encode(claims(), OLD, algorithm="HS256", headers={"kid": "k1"})
    assert tokens.verify(token, KEYS, ISSUER).guest_id.startswith("guest_")


def test_alg_none_is_refused() -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "k2"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    refused(f"{header.decode()}.{payload.decode()}.")


@pytest.mark.filterwarnings("ignore:The HMAC key")  # the forger's HS512 with our 32-byte key
def test_another_algorithm_with_a_known_kid_is_refused() -> None:
    refused(jwt.encode(claims(), NEW, algorithm="HS512", headers={"kid": "k2"}))
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k2"}))  # a user-token-like one


def test_another_key_or_an_unknown_kid_is_refused() -> None:
    refused(jwt.encode(claims(), b"x" * 32, algorithm="HS256", headers={"kid": "k2"}))
    refused(jwt.encode(claims(), NEW, algorithm="HS256", headers={"kid": "k9"}))
    refused(jwt.encode(claims(), NEW, algorithm="HS256"))  # no kid


@pytest.mark.parametrize("changes", [
    {"exp": int(time.time()) - 5}, {"nbf": int(time.time()) + 600}, {"aud": "another-audience"},
    {"iss": "pipecat-gateway/prod"}, {"sub": "alice"}, {"sub": "guest_../../x"}])
def test_expired_early_foreign_or_misnamed_tokens_are_refused(changes: dict[str, Any]) -> None:
    refused(jwt.encode(claims(**changes), NEW, algorithm="HS256", headers={"kid": "k2"}))


@pytest.mark.parametrize("missing", ["exp", "iat", "nbf", "sub", "aud", "iss"])
def test_a_token_missing_a_claim_is_refused(missing: str) -> None:
    body = claims()
    del body[missing]
    refused(jwt.encode(body, NEW, algorithm="HS256", headers={"kid": "k2"}))


def test_an_oversized_or_garbled_token_is_refused() -> None:
    refused(jwt.encode(claims(padding="x" * 3000), NEW, algorithm="HS256", headers={"kid": "k2"}))
    for garbage in ("", "a.b", "a.b.c", "\u0000" * 10):
        refused(garbage)


@pytest.mark.parametrize("value", ["", "k:" + base64.b64encode(b"short").decode(), "nocolon", "k:not base64!",
                                   "bad kid!:" + base64.b64encode(NEW).decode()])
def test_keys_that_are_missing_short_or_malformed_are_a_configuration_error(value: str) -> None:
    with pytest.raises(ValueError):
        tokens.SigningKeys.from_secret(value)
