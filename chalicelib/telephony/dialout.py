"""Daily dial-out, the user-facing API: who may dial (chalicelib.telephony.dialout_policy), where to and as
whom, started as a Daily room allowed to dial out."""


from __future__ import annotations

import hmac
import time

from pydantic import ValidationError

from chalicelib.api.models import DialoutRequest
from chalicelib.platform.auth import Principal
from chalicelib.platform.errors import Refused
from chalicelib.platform.http import HttpResult
from chalicelib.platform.request_parsing import parse_json_object, validation_error
from chalicelib.platform.secrets import GatewaySecrets
from chalicelib.platform.settings import get_settings
from chalicelib.start.policy import dialout_plan
from chalicelib.start.service import StartTerms, execute_start
from chalicelib.telephony import dialout_policy
from chalicelib.telephony.calls import secret, telephony_agent


def dialout_service(headers: dict[str, str], secrets: GatewaySecrets) -> Principal | None:
    """The telephony service caller when a valid server-to-server key is presented, else None."""
    presented = headers.get("x-api-key")
    if presented is None:
        return None
    expected = secret(secrets.dialout_api_key)
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Refused("unauthorized", "Invalid API key")
    return Principal(get_settings().telephony.owner, service=True)


def daily_dialout(caller: Principal, raw_body: bytes, status_base: str) -> HttpResult:
    settings = get_settings()
    try:
        request = DialoutRequest.model_validate(parse_json_object(raw_body, max_bytes=64 * 1024))
    except ValidationError as exc:
        raise validation_error(exc) from None
    target: dict[str, str] = {"phoneNumber": request.phoneNumber} if request.phoneNumber else \
        {"sipUri": str(request.sipUri)}
    if request.callerId and request.phoneNumber:
        target["callerId"] = request.callerId
    owner = caller.user_id
    # the plan first: a body with reserved keys is 422 before the policy says anything
    plan = dialout_plan(telephony_agent(settings), owner, client_body=request.body, target=target,
                        expires_at=int(time.time()) + settings.limits.max_session_seconds)
    dialout_policy.authorize(caller, settings, phone_number=request.phoneNumber, sip_uri=request.sipUri,
                             caller_id=request.callerId)
    limit = settings.telephony.session_limit if caller.service else None
    return execute_start(owner, plan, status_base, StartTerms(limit=limit))
