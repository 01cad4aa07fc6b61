"""The human check behind POST /guest: the widget's token verified by its provider's siteverify, fail-closed.

Cloudflare Turnstile, hCaptcha and Google reCAPTCHA (v2, v3) share one protocol (docs/guests.md, with sources): a
form POST of `secret`, `response` (the token) and `remoteip` answered with JSON `{success, challenge_ts, hostname,
error-codes}`, plus `action` (Turnstile, reCAPTCHA v3) and `score` (reCAPTCHA v3). A visitor passes only when the
token is presented for the first time (remembered here, whatever the provider says of a second use), the answer is
that JSON with `success` true, its hostname is allowed, its action the configured one (when one is), its score at
least the threshold (when it has one) and its challenge fresh. A siteverify that is down, slow (past its timeout)
or answers anything else is a refusal (503 `human_check_unavailable`), never a pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import httpx
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from chalicelib.platform.dynamo import iso_epoch
from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import count, logger
from chalicelib.platform.settings_guests import Guests
from chalicelib.store import human_checks

MAX_TOKEN_CHARS = 4096  # Turnstile's tokens are up to 2048 characters
REMEMBER_MARGIN_SECONDS = 60


class SiteverifyAnswer(BaseModel):
    """What a siteverify answers (the fields we read; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    success: StrictBool
    challenge_ts: str | None = None
    hostname: str | None = None
    action: str | None = None
    score: float | None = None
    error_codes: list[str] = Field(default_factory=list, alias="error-codes")


@dataclass(frozen=True)
class Human:
    """A visitor who passed: the hostname and action the provider vouched for."""

    hostname: str
    action: str | None


def _failed(why: str) -> Refused:
    count("HumanChecksFailed", reason=why)
    return Refused("human_check_failed", f"The human check did not pass ({why})")


def _unavailable(why: str) -> Refused:
    count("HumanChecksFailed", reason="unavailable")
    logger.warning("human check unavailable", extra={"reason": why})
    return Refused("human_check_unavailable", "The human check cannot be verified right now; try again",
                   retry_after=5)


@lru_cache(maxsize=1)
def _client() -> httpx.Client:
    return httpx.Client(follow_redirects=False)


def verify(settings: Guests, secret: str, token: str, remote_ip: str, now: float | None = None) -> Human:
    """The visitor behind `token`, or Refused: `human_check_failed` (403), `human_check_replayed` (403),
    `human_check_unavailable` (503)."""
    now = time.time() if now is None else now
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise _failed("no token, or too long a one")
    until = int(now) + settings.challenge_max_age_seconds + REMEMBER_MARGIN_SECONDS
    if not human_checks.spend(token, until):
        count("HumanChecksFailed", reason="replayed")
        raise Refused("human_check_replayed", "This human check was already used; solve a new one")
    answer = _ask(settings, secret, token, remote_ip)
    if not answer.success:
        raise _failed(",".join(answer.error_codes[:3]) or "refused by the provider")
    if answer.hostname not in settings.allowed_hostnames:
        raise _failed("hostname not allowed")
    if settings.action and answer.action != settings.action:
        raise _failed("another action")
    if answer.score is not None and answer.score < settings.min_score:
        raise _failed("score below the threshold")
    solved = iso_epoch(answer.challenge_ts)
    if solved is None or now - solved > settings.challenge_max_age_seconds:
        raise _failed("challenge too old")
    return Human(answer.hostname, answer.action)


def _ask(settings: Guests, secret: str, token: str, remote_ip: str) -> SiteverifyAnswer:
    """The provider's answer, parsed; any failure to get one is `human_check_unavailable`."""
    if not secret or not settings.verify_url:
        raise _unavailable("no secret or no siteverify URL configured")
    timeout = httpx.Timeout(settings.verify_timeout_seconds)
    try:
        response = _client().post(settings.verify_url, data={"secret": secret, "response": token,
                                                             "remoteip": remote_ip}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise _unavailable(type(exc).__name__) from None
    if response.status_code != 200:
        raise _unavailable(f"status {response.status_code}")
    try:
        return SiteverifyAnswer.model_validate_json(response.content)
    except ValidationError:
        raise _unavailable("not the documented JSON") from None
