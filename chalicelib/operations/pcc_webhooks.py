"""POST /pcc/webhooks: Pipecat Cloud's organisation webhooks (docs/operations.md), verified fail-closed.

Pipecat Cloud signs them the Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`; some
deliveries carry the `svix-` spellings: both are read) with the endpoint's `whsec_` secret, kept here as
`pcc_webhook_secret` in the gateway's secret. Refused, and nothing changes: no secret (every delivery is 401,
counted), a bad or missing signature, a timestamp more than the library's 5 minutes away, a body over
MAX_BODY_BYTES, a body that is not the documented envelope `{event_type, org, created_at, data}`. Deliveries come
at least once: a `webhook-id` already handled is acknowledged and not handled again (remembered REMEMBER_SECONDS).
An event type this gateway does not act on is acknowledged and ignored.

Acted on: `spend.limit_reached` / `spend.limit_cleared` close and open the organisation's start gate,
`service.suspended` / `service.resumed` an agent's (chalicelib.start.gates); `api_key.rotated` / `api_key.deleted`
drop this container's cached keys, so its next Pipecat Cloud call reads Secrets Manager again (other containers
re-read within SECRET_CACHE_SECONDS).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chalicelib.platform.dynamo import iso_epoch, now_iso
from chalicelib.platform.errors import Refused
from chalicelib.platform.http import HttpResult
from chalicelib.platform.observability import count, logger
from chalicelib.platform.secrets import get_secrets, reset_secret_cache
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.start import gates
from chalicelib.store import session_checks, session_records, webhook_deliveries
from chalicelib.store.gates import ORG_SCOPE, agent_scope
from chalicelib.store.outbox import record_event

MAX_BODY_BYTES = 64 * 1024
REMEMBER_SECONDS = 7 * 86400  # longer than a sender's retries of one delivery
HEADERS = ("id", "timestamp", "signature")
KEY_EVENTS = frozenset({"api_key.rotated", "api_key.deleted"})
# An announced session no record claims is looked at again this soon: Pipecat Cloud may announce it before its start's
# answer reached us and the record was written; claimed by then, it is confirmed (chalicelib.upkeep.orphans).
FIRST_LOOK_SECONDS = 5


class PccWebhook(BaseModel):
    """The envelope Pipecat Cloud documents (snake_case; optional fields omitted)."""

    model_config = ConfigDict(extra="ignore")

    event_type: str = Field(min_length=1, max_length=128)
    org: str | None = None
    created_at: str | None = None
    data: JsonObject = Field(default_factory=dict)


def _unverified(reason: str) -> Refused:
    count("PccWebhooksRefused", reason=reason)
    logger.warning("Pipecat Cloud webhook refused", extra={"reason": reason})
    return Refused("pcc_webhook_unverified", "The webhook's signature could not be verified")


def verified(headers: dict[str, str], raw_body: bytes) -> tuple[str, PccWebhook]:
    """The delivery's id and event, or Refused."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError  # noqa: PLC0415 - this route only

    if len(raw_body) > MAX_BODY_BYTES:
        count("PccWebhooksRefused", reason="too_large")
        raise Refused("request_too_large", f"Request body exceeds {MAX_BODY_BYTES} bytes")
    secret = get_secrets().pcc_webhook_secret
    if secret is None:
        raise _unverified("no_secret")
    signed = {f"webhook-{name}": headers.get(f"webhook-{name}") or headers.get(f"svix-{name}") or ""
              for name in HEADERS}
    try:
        Webhook(secret.get_secret_value()).verify(raw_body, signed, json_parse=False)
    except (WebhookVerificationError, ValueError):
        raise _unverified("signature") from None
    try:
        event = PccWebhook.model_validate_json(raw_body)
    except ValidationError:
        count("PccWebhooksRefused", reason="envelope")
        raise Refused("invalid_webhook", "The webhook is not Pipecat Cloud's envelope") from None
    return signed["webhook-id"][:256], event


def receive(headers: dict[str, str], raw_body: bytes) -> HttpResult:
    webhook_id, event = verified(headers, raw_body)
    count("PccWebhooksReceived", type=event.event_type if "." in event.event_type else "other")
    if webhook_deliveries.handled(webhook_id):
        return HttpResult(200, {"status": "duplicate"})
    acted = _act(event)
    webhook_deliveries.mark_handled(webhook_id, event.event_type, int(time.time()) + REMEMBER_SECONDS)
    return HttpResult(200, {"status": "handled" if acted else "ignored"})


def _session_started(event: PccWebhook, agents: list[str]) -> bool:
    """A session of ours is confirmed (its record notes when); one no record claims is checked again once past the
    orphan grace, counted from when Pipecat Cloud says it started (chalicelib.upkeep.orphans.check_unclaimed)."""
    session_id, service = str(event.data.get("session_id") or ""), str(event.data.get("service") or "")
    if not session_id or service not in agents:
        return False
    if session_records.confirm(session_id, event.created_at or now_iso()):
        return True
    if session_records.get_session(session_id) is not None:
        return False  # confirmed before: a delivery of it again
    now = time.time()
    started = iso_epoch(event.created_at) or now
    session_checks.send(service, session_id, int(started) + get_settings().orphans.grace_seconds, now,
                        announced=int(started), first_look=FIRST_LOOK_SECONDS)
    count("SessionsAnnouncedUnclaimed")
    return True


def _spend(data: JsonObject) -> str:
    spent, limit = data.get("current_spend_cents"), data.get("limit_cents")
    if isinstance(spent, int) and isinstance(limit, int):
        return f"The organisation's Pipecat Cloud spend limit is reached ({spent / 100:.2f} of {limit / 100:.2f})"
    return ""


def _act(event: PccWebhook) -> bool:
    """What an event changes here (each idempotent: a delivery handled twice does no harm); False: nothing."""
    agents = list(get_settings().pcc.agents)
    if event.event_type == "spend.limit_reached":
        gates.close(ORG_SCOPE, "spend_limit", _spend(event.data))
        return True
    if event.event_type == "spend.limit_cleared":
        # Pipecat Cloud takes new sessions again. Its answer to a start at the limit is not documented: a billing
        # refusal (PCC-1004) may have closed the gate for `billing` meanwhile, so that reason is lifted too; if
        # billing is truly not set, the next start's refusal closes the gate again (one call).
        gates.reopen(ORG_SCOPE, "spend_limit", agents)
        gates.reopen(ORG_SCOPE, "billing", agents)
        return True
    service = str(event.data.get("service_name") or "")
    if event.event_type in ("service.suspended", "service.resumed") and service in agents:
        if event.event_type == "service.suspended":
            why = str(event.data.get("reason") or "no reason given")[:64]
            gates.close(agent_scope(service), "suspended", f"This agent is suspended at Pipecat Cloud ({why})")
        else:
            gates.reopen(agent_scope(service), "suspended", [service])
        return True
    if event.event_type == "spend.threshold_reached":
        data = event.data
        record_event("account.spend_threshold", user_id=None, agent="*", data={
            "percent": data.get("percent"), "currentSpendCents": data.get("current_spend_cents"),
            "limitCents": data.get("limit_cents")})
        count("SpendThresholdReached")  # the alarm's metric (infra/template.yaml)
        logger.warning("Pipecat Cloud spend threshold reached", extra={"percent": str(data.get("percent"))[:8]})
        return True
    if event.event_type == "session.started":
        return _session_started(event, agents)
    if event.event_type in KEY_EVENTS:
        reset_secret_cache()
        count("PccApiKeyChanged")  # the alarm's metric (infra/template.yaml)
        logger.warning("Pipecat Cloud API key changed: cached keys dropped",
                       extra={"event_type": event.event_type, "key_type": str(event.data.get("type", ""))[:16]})
        return True
    logger.info("Pipecat Cloud webhook ignored", extra={"event_type": event.event_type[:128]})
    return False
