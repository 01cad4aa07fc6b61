"""Daily PSTN/SIP dial-in: Daily's pinless webhook (HMAC, fail-closed), admitted by call id, answered by
starting a Daily room with a dial-in SIP endpoint; a short bounded retry on capacity while the caller hears
hold music; a retried webhook never starts a second bot."""


from __future__ import annotations

import time

from chalicelib.api import answers
from chalicelib.platform.errors import Refused, TryLater
from chalicelib.platform.http import HttpResult
from chalicelib.platform.idempotency import run_once
from chalicelib.platform.observability import count
from chalicelib.platform.request_parsing import parse_json_object
from chalicelib.platform.secrets import get_secrets
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.start.policy import dialin_plan
from chalicelib.start.service import StartTerms, execute_start
from chalicelib.telephony import signatures as sig
from chalicelib.telephony.calls import admit_call, answer_ttl_seconds, forbidden, secret, telephony_agent


def daily_dialin(headers: dict[str, str], raw_body: bytes) -> HttpResult:
    settings, secrets = get_settings(), get_secrets()
    if not sig.daily_pinless_valid(secret(secrets.daily_pinless_secret), headers.get("x-pinless-timestamp"),
                                   raw_body, headers.get("x-pinless-signature"), time.time(),
                                   settings.telephony.signature_tolerance_seconds):
        raise forbidden("daily", "bad, missing or stale signature")
    data = parse_json_object(raw_body, max_bytes=64 * 1024)
    if data.get("Test") == "test":
        return HttpResult(200, {"status": "ok"})
    call_id, call_domain = data.get("callId"), data.get("callDomain")
    if not isinstance(call_id, str) or not call_id or not isinstance(call_domain, str):
        raise Refused("invalid_webhook", "callId and callDomain are required")
    admit_call(settings, "daily", call_id, continuing=False)
    principal = settings.telephony.owner
    plan = dialin_plan(telephony_agent(settings), principal, caller=str(data.get("From") or ""),
                       callee=str(data.get("To") or ""), call_id=call_id, call_domain=call_domain,
                       sip_headers=data.get("sipHeaders") or {},
                       expires_at=int(time.time()) + settings.limits.max_session_seconds)

    def action() -> JsonObject:
        # The caller hears hold music meanwhile: a short, bounded retry on capacity.
        for attempt in range(settings.telephony.daily_dialin_attempts):
            try:
                terms = StartTerms(limit=settings.telephony.session_limit, queue_on_capacity=False)
                return execute_start(principal, plan, terms=terms).as_dict()
            except TryLater:
                if attempt + 1 == settings.telephony.daily_dialin_attempts:
                    raise
                time.sleep(settings.telephony.daily_dialin_retry_seconds)
        raise AssertionError("unreachable")  # pragma: no cover

    try:
        stored = run_once(principal, f"daily:{call_id}", {"call_id": call_id}, action,
                          ttl_seconds=answer_ttl_seconds(settings))
    except TryLater:
        count("CallsRejectedAtCapacity", provider="daily")
        raise Refused("call_at_capacity", "The agent is at capacity", retry_after=5) from None
    result = HttpResult.from_dict(stored)
    answer = answers.DialinAnswer(status="started", sessionId=str(result.body["sessionId"]))
    return HttpResult(200, answer.model_dump(), result.headers)
