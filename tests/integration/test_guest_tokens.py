"""POST /guest (docs/guests.md): a visitor of an allowed page trades a human check for a guest token. Against the
real local stack and a real HTTP fake of a provider's siteverify (infra/fake_siteverify.py): every refusal issues no
token, the human check fails closed, a token is used once, the per-address limit groups IPv6 by /64."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice.local import LambdaEventConverter

from infra.fake_siteverify import ACTION, HOSTNAME, SECRET, FakeSiteverify
from tests.conftest import Gateway
from tests.integration.test_start import assert_error, body

ORIGIN = "https://talk.example.com"
KEYS = "k2:" + base64.b64encode(b"n" * 32).decode() + ",k1:" + base64.b64encode(b"o" * 32).decode()


@pytest.fixture(scope="module")
def siteverify() -> Iterator[FakeSiteverify]:
    with FakeSiteverify() as fake:
        yield fake


@pytest.fixture()
def guests(gateway: Gateway, configure_stage: Callable[..., None], stack: dict[str, Any],
           siteverify: FakeSiteverify) -> Iterator[Gateway]:
    """Guest access on, Turnstile-shaped checks against the fake, the secret holding its keys."""
    siteverify.provider.mode = "ok"
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    original = secrets.get_secret_value(SecretId=name)["SecretString"]
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps(
        {**json.loads(original), "human_check_secret": SECRET, "guest_token_keys": KEYS}))
    configure_stage(GUEST_ACCESS="true", GUEST_SITEVERIFY_URL=siteverify.url, GUEST_ALLOWED_HOSTNAMES=HOSTNAME,
                    GUEST_ACTION=ACTION, GUEST_ALLOWED_ORIGINS=ORIGIN, GUEST_TOKENS_PER_ADDRESS_PER_HOUR="1000")
    try:
        yield gateway
    finally:
        secrets.put_secret_value(SecretId=name, SecretString=original)


def ask(gateway: Gateway, token: str | None, origin: str = ORIGIN) -> Any:
    payload = {} if token is None else {"humanCheckToken": token}
    return gateway.request("POST", "/guest", json_body=payload, headers={"Origin": origin})


def test_a_visitor_who_passes_gets_a_short_lived_guest_token(guests: Gateway, siteverify: FakeSiteverify) -> None:
    import jwt

    answer = ask(guests, "pass-1")
    assert answer.status_code == 200, answer.body
    data = body(answer)
    assert data["tokenType"] == "Bearer" and data["expiresIn"] == 900 and data["guestId"].startswith("guest_")
    claims = jwt.decode(data["token"], options={"verify_signature": False})
    assert claims["sub"] == data["guestId"] and claims["aud"] == "pipecat-gateway:guest"
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(data["token"])["kid"] == "k2"  # the first key signs
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("token", "why"), [("fail-1", "invalid"), ("spent-1", "spent at the provider"),
                                            ("old-1", "stale challenge"), ("host-1", "another hostname"),
                                            ("action-1", "another action"), ("nonsense", "unknown")])
def test_a_failed_human_check_issues_no_token(guests: Gateway, token: str, why: str) -> None:
    assert_error(ask(guests, f"{token}-{why.replace(' ', '_')}"), 403, "human_check_failed")


def test_a_human_check_token_is_used_once_whatever_the_provider_says(guests: Gateway,
                                                                       siteverify: FakeSiteverify) -> None:
    assert ask(guests, "pass-twice").status_code == 200
    calls = siteverify.provider.calls
    assert_error(ask(guests, "pass-twice"), 403, "human_check_replayed")
    assert siteverify.provider.calls == calls  # refused on our side, before asking the provider


@pytest.mark.parametrize("mode", ["down", "garbage", "slow"])
def test_a_siteverify_that_is_down_slow_or_garbled_is_a_refusal(guests: Gateway, siteverify: FakeSiteverify,
                                                                  configure_stage: Callable[..., None],
                                                                  mode: str) -> None:
    configure_stage(GUEST_VERIFY_TIMEOUT_SECONDS="0.5")
    siteverify.provider.mode, siteverify.provider.slow_seconds = mode, 3
    issued = [ask(guests, f"pass-{mode}-{i}") for i in range(3)]
    for answer in issued:
        assert_error(answer, 503, "human_check_unavailable")
        assert answer.headers["Retry-After"] == "5"


def test_origin_off_list_and_access_off_are_refused(guests: Gateway, configure_stage: Callable[..., None],
                                                    siteverify: FakeSiteverify) -> None:
    calls = siteverify.provider.calls
    assert_error(ask(guests, "pass-o1", origin="https://evil.example"), 403, "origin_not_allowed")
    assert_error(guests.request("POST", "/guest", json_body={"humanCheckToken": "pass-o2"}), 403,
                 "origin_not_allowed")  # no Origin at all
    configure_stage(GUEST_ACCESS="false")
    assert_error(ask(guests, "pass-o3"), 403, "guest_access_disabled")
    assert siteverify.provider.calls == calls  # nothing reached the provider


def test_tokens_per_address_count_an_ipv6_address_by_its_64(guests: Gateway, configure_stage: Callable[..., None],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            rate_clock: float) -> None:
    configure_stage(GUEST_TOKENS_PER_ADDRESS_PER_HOUR="3")
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "2001:db8:aa:bb::1")
    assert [ask(guests, f"pass-v6-{i}").status_code for i in range(3)] == [200] * 3
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "2001:db8:aa:bb:ffff::9")  # the same /64
    assert_error(ask(guests, "pass-v6-4"), 429, "guest_tokens_rate_limited")
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "2001:db8:aa:cc::1")  # another /64
    assert ask(guests, "pass-v6-5").status_code == 200
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "198.51.100.7")
    assert [ask(guests, f"pass-v4-{i}").status_code for i in range(4)] == [200, 200, 200, 429]


def test_without_keys_no_token_is_issued(guests: Gateway, stack: dict[str, Any],
                                        configure_stage: Callable[..., None], siteverify: FakeSiteverify) -> None:
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    current = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
    for keys in ("k:" + base64.b64encode(b"short").decode(), "", "no-colon"):
        secrets.put_secret_value(SecretId=name, SecretString=json.dumps({**current, "guest_token_keys": keys}))
        configure_stage()  # the secret read again
        calls = siteverify.provider.calls
        assert_error(ask(guests, f"pass-nokeys-{len(keys)}"), 503, "guest_access_misconfigured")
        assert siteverify.provider.calls == calls  # refused before the human check was spent


def test_a_guest_token_opens_no_user_route_and_no_user_is_a_guest(guests: Gateway, emulator: Any,
                                                                    oidc: Any) -> None:
    """Routes for users only (dial-out, the admin API) answer a guest token 403 `guest_not_allowed`, and make no call;
    a user's token whose subject looks like a guest's is refused, so no user can act as a guest."""
    token = body(ask(guests, "pass-user-routes"))["token"]
    started = emulator.org.start_calls
    for method, path in (("POST", "/telephony/daily/dialout"), ("GET", "/admin/sessions"),
                         ("POST", "/admin/gates"), ("GET", "/admin/users/u1")):
        answer = guests.request(method, path, json_body={} if method == "POST" else None,
                                headers={"Authorization": f"Bearer {token}"})
        assert_error(answer, 403, "guest_not_allowed")
    posing = oidc.token("guest_0123456789abcdef01234567")
    for method, path in (("POST", "/start"), ("GET", "/sessions")):
        answer = guests.request(method, path, json_body={} if method == "POST" else None,
                                headers={"Authorization": f"Bearer {posing}"})
        assert_error(answer, 401, "unauthorized")
    assert emulator.org.start_calls == started
