"""Caller identity in the cognito and insecure-dev modes (JWT mode is tested end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.platform import auth
from chalicelib.platform.errors import Refused
from chalicelib.platform.settings import ENV, get_settings


class FakeRequest:
    def __init__(self, headers: dict[str, str] | None = None, context: dict[str, Any] | None = None) -> None:
        self.headers = headers or {}
        self.context = context or {}


@pytest.fixture()
def mode(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_mode(auth_mode: str, stage: str = "local") -> None:
        for key in ENV:  # only what this test sets, whatever else ran in this process before
            monkeypatch.delenv(key, raising=False)
        for key, value in {"STAGE": stage, "PCC_AGENTS": "a", "PCC_SECRET_ID": "s", "TABLE_NAME": "t",
                           "AUTH_MODE": auth_mode}.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    yield set_mode
    get_settings.cache_clear()


def test_cognito_mode_reads_the_authorizer_sub(mode: Any) -> None:
    mode("cognito", stage="prod")
    request = FakeRequest(context={"authorizer": {"claims": {"sub": "abc-123", "email": "x@y"}}})
    assert auth.authenticate(request) == "abc-123"  # type: ignore[arg-type]
    with pytest.raises(Refused) as caught:
        auth.authenticate(FakeRequest())  # type: ignore[arg-type]
    assert caught.value.kind == "unauthorized"


def test_insecure_dev_mode_takes_the_header_and_validates_it(mode: Any) -> None:
    mode("insecure-dev")
    assert auth.authenticate(FakeRequest({"x-dev-user": "alice"})) == "alice"  # type: ignore[arg-type]
    for bad in ({}, {"x-dev-user": ""}, {"x-dev-user": "a b"}, {"x-dev-user": "x" * 200}):
        with pytest.raises(Refused) as caught:
            auth.authenticate(FakeRequest(bad))  # type: ignore[arg-type]
        assert caught.value.kind == "unauthorized"
        assert "X-Dev-User" in caught.value.detail  # says what to send, not just "unauthorized"


def test_route_authorizer_only_with_a_user_pool() -> None:
    assert auth.route_authorizer("") is None
    authorizer = auth.route_authorizer("arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_x")
    assert authorizer is not None and authorizer.name == "GatewayUsers"
