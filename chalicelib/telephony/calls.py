"""What every telephony entry point shares: the telephony agent, refusing a webhook that fails its check,
a secret's text, replayed calls, and how long a call's first answer is kept."""

from __future__ import annotations

from typing import Any

from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import count, logger
from chalicelib.platform.settings import Settings
from chalicelib.store import call_records


def forbidden(provider: str, why: str) -> Refused:
    logger.warning("telephony webhook rejected", extra={"provider": provider, "reason": why})
    count("WebhookRejected", provider=provider)
    return Refused("invalid_signature", "Signature verification failed")


def secret(value: Any) -> str:
    return str(value.get_secret_value()) if value is not None else ""


def admit_call(settings: Settings, provider: str, call_id: str, *, continuing: bool) -> None:
    """Let a webhook of this call through, or refuse it as a replay (chalicelib.store.call_records): a first
    webhook within the provider's retry window, a hold loop's redirect (`continuing`) within the loop's length."""
    window = settings.telephony.hold_window_seconds if continuing else settings.telephony.retry_window_seconds
    call_records.admit(provider, call_id, window_seconds=window, ttl_seconds=settings.telephony.replay_ttl_seconds)


def telephony_agent(settings: Settings) -> str:
    agent = settings.resolved_telephony_agent
    if agent is None:
        raise Refused("telephony_not_configured", "No telephony agent is configured")
    return agent


def answer_ttl_seconds(settings: Settings) -> int:
    """How long a call's first answer is kept: as long as the call's webhooks may still come (the retry
    window, the hold loop), and never less than IDEMPOTENCY_TTL_SECONDS. Inside that time the same call id
    always gets the same answer and never a second bot, whatever the two settings say."""
    return max(settings.limits.idempotency_ttl_seconds, settings.telephony.retry_window_seconds,
               settings.telephony.hold_window_seconds)
