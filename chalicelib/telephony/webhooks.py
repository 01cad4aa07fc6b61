"""Provider webhook targets: Twilio, Telnyx (TeXML), Plivo and Exotel (Daily dial-in: chalicelib.telephony.dialin;
dial-out: chalicelib.telephony.dialout).

Every webhook is authenticated first (fail closed: a missing credential rejects everything; providers' signatures,
or for Exotel, which signs nothing, a secret token in the URL and an optional source-address allow-list), admitted
by call id (chalicelib.telephony.calls.admit_call: a replay later than a provider's own retry is refused), then either
answers static XML that streams the call straight to Pipecat Cloud (`TELEPHONY_WEBSOCKET_AUTH=none`), or starts a
websocket session first and streams to `{wsUrl}/{token}` (`token`). Started sessions are recorded for the telephony
principal with the call id, and a provider retry of the same call id never starts a second bot (idempotency on the
call id). At capacity, calls hear a bounded hold loop.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from chalicelib.platform.errors import Refused, TryLater
from chalicelib.platform.http import HttpResult
from chalicelib.platform.idempotency import run_once
from chalicelib.platform.observability import count
from chalicelib.platform.secrets import GatewaySecrets, get_secrets
from chalicelib.platform.settings import Settings, get_settings
from chalicelib.platform.shapes import JsonObject
from chalicelib.start.policy import call_plan
from chalicelib.start.service import StartTerms, execute_start
from chalicelib.telephony import signatures as sig
from chalicelib.telephony import xml
from chalicelib.telephony.calls import admit_call, answer_ttl_seconds, forbidden, secret, telephony_agent

XML_TYPE = "application/xml"
HOLD_MESSAGE = "All of our agents are busy. Please hold."
SORRY_MESSAGE = "Sorry, all of our agents are busy. Please call again later."


@dataclass(frozen=True)
class Call:
    provider: str  # twilio | telnyx | plivo | exotel
    call_id: str
    caller: str
    callee: str


def _public_url(settings: Settings, path: str, query: list[tuple[str, str]]) -> str:
    """The URL the provider called (and signed): configured public base, never the Host header."""
    if not settings.telephony.public_base_url:
        raise forbidden("any", "TELEPHONY_PUBLIC_BASE_URL is not set")
    url = settings.telephony.public_base_url.rstrip("/") + path
    return url + ("?" + urlencode(sorted(query)) if query else "")


def _service_host(settings: Settings, agent: str) -> str:
    return f"{agent}.{settings.pcc.org}" if settings.pcc.org else agent


def _raw_ws(_transport: str, pcc: JsonObject) -> HttpResult:
    """For provider streams: PCC's wsUrl + token as-is (providers drop query strings)."""
    return HttpResult(200, {"wsUrl": pcc["wsUrl"], "token": pcc["token"], "sessionId": pcc["sessionId"]})


def _start_for_call(settings: Settings, call: Call) -> JsonObject:
    """Token auth: start a websocket session for this call (once per call id). TryLater at capacity."""
    principal = settings.telephony.owner
    plan = call_plan(telephony_agent(settings), principal, provider=call.provider, call_id=call.call_id,
                     caller=call.caller, callee=call.callee)

    def action() -> JsonObject:
        terms = StartTerms(limit=settings.telephony.session_limit, queue_on_capacity=False, shape=_raw_ws,
                           read_timeout=settings.telephony.start_timeout_seconds)
        return execute_start(principal, plan, terms=terms).as_dict()

    stored = run_once(principal, f"{call.provider}:{call.call_id}", {"call_id": call.call_id}, action,
                      ttl_seconds=answer_ttl_seconds(settings))
    return dict(stored["body"])


def _stream_url(settings: Settings, call: Call, agent: str) -> str | None:
    """Where the provider streams the call; None when Pipecat Cloud is at capacity."""
    if settings.telephony.websocket_auth == "token":
        try:
            started = _start_for_call(settings, call)
        except TryLater:
            return None
        except Refused as exc:
            if exc.kind == "idempotency_in_progress":
                return None
            raise
        return f"{started['wsUrl'].rstrip('/')}/{started['token']}"
    base = f"{settings.pcc.ws_base.rstrip('/')}/{call.provider}"
    if call.provider == "twilio":
        return base  # Twilio drops query strings: the service host goes in a <Parameter>
    return f"{base}?{urlencode({'serviceHost': _service_host(settings, agent)})}"


def _hold_or_hang_up(settings: Settings, call: Call, attempt: int, key: str, path: str) -> str:
    plivo = call.provider == "plivo"
    if attempt >= settings.telephony.hold_attempts:
        count("CallsRejectedAtCapacity", provider=call.provider)
        return xml.apologise_and_hang_up(SORRY_MESSAGE, plivo=plivo)
    nxt = attempt + 1
    redirect = _public_url(settings, path, [("attempt", str(nxt)),
                                            ("hold", sig.hold_token(key, call.call_id, nxt))])
    return xml.hold(HOLD_MESSAGE, settings.telephony.hold_pause_seconds, redirect, plivo=plivo)


def _hold_key(secrets: GatewaySecrets) -> str:
    """Key for the hold loop's attempt counter: derived from a value only the gateway knows (Telnyx does
    not sign the URL, so the provider's signature alone would not protect the counter)."""
    return hashlib.sha256(b"hold-counter|" + secret(secrets.public_key).encode()).hexdigest()


def _attempt(query: dict[str, str], key: str, call_id: str) -> int:
    if "attempt" not in query:
        return 0
    try:
        attempt = int(query["attempt"])
    except ValueError:
        raise Refused("invalid_signature", "Invalid hold counter") from None
    if not sig.hold_token_valid(key, call_id, attempt, query.get("hold")):
        raise Refused("invalid_signature", "Invalid hold counter")
    return attempt


def _answer(settings: Settings, call: Call, query: dict[str, str], key: str, path: str) -> HttpResult:
    agent = telephony_agent(settings)
    attempt = _attempt(query, key, call.call_id)
    admit_call(settings, call.provider, call.call_id, continuing=attempt > 0)
    url = _stream_url(settings, call, agent)
    if url is None:
        return HttpResult(200, _hold_or_hang_up(settings, call, attempt, key, path), {"Content-Type": XML_TYPE})
    count("CallsConnected", provider=call.provider)
    params = {"From": call.caller, "To": call.callee, "CallId": call.call_id}
    if call.provider == "plivo":
        body = xml.plivo_stream(url)
    elif call.provider == "twilio":
        body = xml.connect_stream(url, {"_pipecatCloudServiceHost": _service_host(settings, agent), **params})
    else:
        body = xml.connect_stream(url, params, bidirectional_rtp=True)
    return HttpResult(200, body, {"Content-Type": XML_TYPE})


def _form(raw_body: bytes) -> list[tuple[str, str]]:
    return parse_qsl(raw_body.decode("utf-8", "replace"), keep_blank_values=True)


# ------------------------------------------------------------------ providers
def twilio(headers: dict[str, str], query: list[tuple[str, str]], raw_body: bytes) -> HttpResult:
    settings, secrets = get_settings(), get_secrets()
    token = secret(secrets.twilio_auth_token)
    params = _form(raw_body)
    url = _public_url(settings, "/telephony/twilio", query)
    if not sig.twilio_valid(token, url, params, headers.get("x-twilio-signature")):
        raise forbidden("twilio", "bad or missing signature")
    form = dict(params)
    call = Call("twilio", form.get("CallSid", ""), form.get("From", ""), form.get("To", ""))
    if not call.call_id:
        raise Refused("invalid_webhook", "CallSid is missing")
    return _answer(settings, call, dict(query), _hold_key(secrets), "/telephony/twilio")


def telnyx(headers: dict[str, str], query: list[tuple[str, str]], raw_body: bytes) -> HttpResult:
    settings, secrets = get_settings(), get_secrets()
    if not sig.telnyx_valid(secret(secrets.telnyx_public_key), headers.get("telnyx-timestamp"), raw_body,
                            headers.get("telnyx-signature-ed25519"), time.time(),
                            settings.telephony.signature_tolerance_seconds):
        raise forbidden("telnyx", "bad, missing or stale signature")
    form = dict(_form(raw_body))
    call = Call("telnyx", form.get("CallSid", ""), form.get("From", ""), form.get("To", ""))
    if not call.call_id:
        raise Refused("invalid_webhook", "CallSid is missing")
    return _answer(settings, call, dict(query), _hold_key(secrets), "/telephony/telnyx")


def plivo(method: str, headers: dict[str, str], query: list[tuple[str, str]], raw_body: bytes) -> HttpResult:
    settings, secrets = get_settings(), get_secrets()
    token = secret(secrets.plivo_auth_token)
    url = _public_url(settings, "/telephony/plivo", query)
    params = _form(raw_body) if method == "POST" else []
    if not sig.plivo_valid(token, method, url, params, headers.get("x-plivo-signature-v3-nonce"),
                           headers.get("x-plivo-signature-v3")):
        raise forbidden("plivo", "bad or missing signature")
    form = dict(query) | dict(params)
    call = Call("plivo", form.get("CallUUID", ""), form.get("From", ""), form.get("To", ""))
    if not call.call_id:
        raise Refused("invalid_webhook", "CallUUID is missing")
    return _answer(settings, call, dict(query), _hold_key(secrets), "/telephony/plivo")


# ------------------------------------------------------------------ Exotel
def _source_allowed(settings: Settings, source_ip: str) -> bool:
    if not settings.telephony.exotel_allowed_ips:
        return True
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.telephony.exotel_allowed_ips)


def exotel(url_token: str, method: str, query: list[tuple[str, str]], raw_body: bytes, source_ip: str) -> HttpResult:
    """Exotel's Voicebot applet "dynamic URL": GET (or POST) with CallSid/CallFrom/CallTo, answered with
    `{"url": "wss://..."}`. Exotel signs nothing, so the URL carries a secret token
    (`/telephony/exotel/{exotel_webhook_token}`), compared in constant time; EXOTEL_ALLOWED_IPS may also
    pin Exotel's source addresses."""
    settings, secrets = get_settings(), get_secrets()
    expected = secret(secrets.exotel_webhook_token)
    if not expected or not hmac.compare_digest(url_token.encode(), expected.encode()):
        raise forbidden("exotel", "bad or missing URL token")
    if not _source_allowed(settings, source_ip):
        raise forbidden("exotel", "source address not allowed")
    form = dict(query) | (dict(_form(raw_body)) if method == "POST" else {})
    call = Call("exotel", form.get("CallSid", ""), form.get("CallFrom") or form.get("From", ""),
                form.get("CallTo") or form.get("To", ""))
    if not call.call_id:
        raise Refused("invalid_webhook", "CallSid is missing")
    admit_call(settings, "exotel", call.call_id, continuing=False)
    url = _stream_url(settings, call, telephony_agent(settings))
    if url is None:  # Exotel has no hold verbs: the flow moves on to its next applet
        count("CallsRejectedAtCapacity", provider="exotel")
        raise Refused("call_at_capacity", "The agent is at capacity", retry_after=5)
    count("CallsConnected", provider="exotel")
    return HttpResult(200, {"url": url})
