"""pipecat-gateway: routes and event handlers only; all logic lives in chalicelib/."""

from __future__ import annotations

import os
from typing import Any

from chalice.app import Chalice, Rate, Request, Response

from chalicelib.api.errors import to_api_error
from chalicelib.platform.auth import Principal, authenticate_principal, bearer_is_guest_token, route_authorizer
from chalicelib.platform.errors import ApiError, Refused
from chalicelib.platform.http import (
    HttpResult,
    cors_config,
    error_middleware,
    json_response,
    preflight_response,
    proxy_response,
    request_headers,
)
from chalicelib.platform.idempotency import use_lambda_context
from chalicelib.platform.observability import SERVICE, tag_request
from chalicelib.platform.secrets import get_secrets
from chalicelib.platform.settings import get_settings
from chalicelib.sessions import access
from chalicelib.sessions import service as sessions_service
from chalicelib.sessions.proxy import MAX_PROXY_DEPTH, PROXY_CONTENT_TYPES, PROXY_METHODS, forward, is_preflight
from chalicelib.sessions.proxy_headers import forwarded_to_bot
from chalicelib.start import budgets, capacity_queue
from chalicelib.start import service as start_service
from chalicelib.upkeep import messages, reconcile, schedule

app = Chalice(app_name=SERVICE, configure_logs=False)
LOCAL_EVENTS_STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/pipecat-gateway-local-events/stream/local"

# Fixed at import time: `chalice deploy/package` imports this module with the stage's environment,
# and API Gateway's generated CORS preflight answers and authorizer need them then.
CORS = cors_config(os.environ.get("CORS_ALLOW_ORIGIN", "*"))
AUTHORIZER = route_authorizer(os.environ.get("COGNITO_USER_POOL_ARN", ""))
app.register_middleware(error_middleware(CORS.allow_origin, to_api_error), "http")

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    get_settings()  # in Lambda, a bad configuration fails the cold start with a message naming it


def _request() -> Request:
    if app.current_request is None:  # pragma: no cover - Chalice always sets it for routes
        raise ApiError(500, "internal_error", "No request")
    use_lambda_context(app.lambda_context)
    return app.current_request


def _raw_body(request: Request) -> bytes:
    raw = request.raw_body
    return raw.encode() if isinstance(raw, str) else (raw or b"")


def _source_ip(request: Request) -> str:
    return str(((request.context or {}).get("identity") or {}).get("sourceIp") or "")


def _guest_token(request: Request) -> bool:
    """Whether the caller presents a guest token while guest access is on (off, it is any stranger's token: 401)."""
    return bearer_is_guest_token(request) and get_settings().guests.access


def _admitted(principal: Principal) -> Principal:
    tag_request(user_id=principal.user_id)
    access.refuse_if_blocked(principal.user_id)  # an operator's block: 403 on every route
    return principal


def _principal(request: Request) -> Principal:
    """A user (routes for users only: a guest token is 403 `guest_not_allowed`)."""
    if _guest_token(request):
        raise Refused("guest_not_allowed", "Guests may not use this route")
    return _admitted(authenticate_principal(request))


def _caller(request: Request) -> Principal:
    """A user, or a guest with a guest token (the routes guests may use: docs/guests.md)."""
    if not _guest_token(request):
        return _admitted(authenticate_principal(request))
    from chalicelib.guests import access as guest_access  # noqa: PLC0415 - lazy: only guests pay for it

    return _admitted(guest_access.authenticate(str(request.headers.get("authorization") or ""),
                                               str(request.headers.get("origin") or ""), _source_ip(request)))


def _user(request: Request) -> str:
    """The id of the caller, a user's or a guest's (on the routes guests may use)."""
    return _caller(request).user_id


def _query(request: Request) -> dict[str, str]:
    return {k: request.query_params[k] for k in request.query_params} if request.query_params else {}


@app.route("/health", methods=["GET"], cors=CORS)
def health() -> Response:
    return json_response(200, {"status": "ok", "stage": get_settings().stage})


def _start_base(request: Request) -> str:
    """The URL path of /start as the caller sees it (with any API Gateway stage prefix)."""
    context = request.context or {}
    stage, path = str(context.get("stage") or ""), str(context.get("path") or "")
    return f"/{stage}/start" if stage and path.startswith(f"/{stage}/") else "/start"


@app.route("/openapi.json", methods=["GET"], cors=CORS)
def openapi_document() -> Response:
    from chalicelib.api.openapi import document  # noqa: PLC0415 - only this route pays for building it

    return json_response(200, document(MAX_PROXY_DEPTH))


@app.route("/start", methods=["POST"], cors=CORS, authorizer=AUTHORIZER)
def start() -> Response:
    request = _request()
    principal, wait = _caller(request), capacity_queue.parse_wait(_query(request).get("wait"))
    if principal.guest:
        from chalicelib.guests import starts as guest_starts  # noqa: PLC0415 - lazy: only guests pay for it

        result = guest_starts.start(principal, _raw_body(request), request.headers.get("idempotency-key"),
                                    status_base=_start_base(request), wait=wait)
    else:
        result = start_service.start(principal.user_id, _raw_body(request), request.headers.get("idempotency-key"),
                                     status_base=_start_base(request), wait=wait,
                                     tiers=principal.groups | principal.scopes)
    return json_response(result.status, result.body, result.headers)


@app.route("/usage", methods=["GET"], cors=CORS, authorizer=AUTHORIZER)
def usage() -> Response:
    principal = _caller(_request())
    return json_response(200, budgets.report(principal.user_id, principal.groups | principal.scopes))


@app.route("/guest", methods=["POST"], cors=CORS)
def guest_token() -> Response:
    from chalicelib.guests import service as guests  # noqa: PLC0415 - lazy: only public pages pay for it

    request = _request()
    result = guests.issue_token(request_headers(request), _source_ip(request), _raw_body(request))
    return json_response(result.status, result.body, result.headers)


@app.route("/pcc/webhooks", methods=["POST"])
def pcc_webhook() -> Response:
    from chalicelib.operations import pcc_webhooks  # noqa: PLC0415 - lazy: only this route pays for it

    request = _request()
    result = pcc_webhooks.receive(request_headers(request), _raw_body(request))
    return json_response(result.status, result.body, result.headers)


@app.route("/admin/agents/{agent}", methods=["GET"], cors=CORS, authorizer=AUTHORIZER)
def admin_agent(agent: str) -> Response:
    from chalicelib.operations import admin  # noqa: PLC0415 - lazy: only operators pay for it

    return json_response(200, admin.agent_view(_principal(_request()), agent))


@app.route("/admin/gates", methods=["POST"], cors=CORS, authorizer=AUTHORIZER)
def admin_gates() -> Response:
    from chalicelib.operations import admin  # noqa: PLC0415 - lazy: only operators pay for it

    request = _request()
    return json_response(200, admin.change_gate(_principal(request), _raw_body(request)))


@app.route("/admin/sessions", methods=["GET"], cors=CORS, authorizer=AUTHORIZER)
def admin_sessions() -> Response:
    from chalicelib.operations import admin  # noqa: PLC0415 - lazy: only operators pay for it

    request = _request()
    return json_response(200, admin.list_sessions(_principal(request), _query(request)))


@app.route("/admin/sessions/{session_id}", methods=["DELETE"], cors=CORS, authorizer=AUTHORIZER)
def admin_stop_session(session_id: str) -> Response:
    from chalicelib.operations import admin  # noqa: PLC0415 - lazy: only operators pay for it

    return json_response(200, admin.stop_any_session(_principal(_request()), session_id))


@app.route("/admin/users/{user_id}/block", methods=["POST", "DELETE"], cors=CORS, authorizer=AUTHORIZER)
def admin_block(user_id: str) -> Response:
    return _admin_user_change(user_id, "block")


@app.route("/admin/users/{user_id}", methods=["GET"], cors=CORS, authorizer=AUTHORIZER)
def admin_user(user_id: str) -> Response:
    from chalicelib.operations import admin  # noqa: PLC0415 - lazy: only operators pay for it

    return json_response(200, admin.user_view(_principal(_request()), user_id))


@app.route("/admin/users/{user_id}/budget", methods=["PUT", "DELETE"], cors=CORS, authorizer=AUTHORIZER)
def admin_budget(user_id: str) -> Response:
    return _admin_user_change(user_id, "budget")


def _admin_user_change(user_id: str, change: str) -> Response:
    from chalicelib.operations import admin  # noqa: PLC0415 - lazy: only operators pay for it

    request = _request()
    return json_response(200, admin.change_user(_principal(request), user_id, change, request.method == "DELETE",
                                                _raw_body(request)))


@app.route("/start", methods=["GET"], cors=CORS, authorizer=AUTHORIZER)
def pending_starts() -> Response:
    request = _request()
    return json_response(200, capacity_queue.list_pending(_user(request), _start_base(request)))


@app.route("/start/{request_id}", methods=["GET"], cors=CORS, authorizer=AUTHORIZER)
def start_status(request_id: str) -> Response:
    request = _request()
    user_id = _user(request)
    result = capacity_queue.status(user_id, request_id, _start_base(request),
                                   capacity_queue.parse_wait(_query(request).get("wait")))
    return json_response(result.status, result.body, result.headers)


@app.route("/start/{request_id}", methods=["DELETE"], cors=CORS, authorizer=AUTHORIZER)
def cancel_start(request_id: str) -> Response:
    result = capacity_queue.cancel(_user(_request()), request_id)
    return json_response(result.status, result.body, result.headers)


@app.route("/sessions", methods=["GET"], cors=CORS, authorizer=AUTHORIZER)
def list_sessions() -> Response:
    request = _request()
    return json_response(200, sessions_service.list_sessions(_user(request), _query(request)))


@app.route("/sessions/{session_id}", methods=["GET"], cors=CORS, authorizer=AUTHORIZER)
def get_session(session_id: str) -> Response:
    return json_response(200, sessions_service.session_details(_user(_request()), session_id))


@app.route("/sessions/{session_id}", methods=["DELETE"], cors=CORS, authorizer=AUTHORIZER)
def stop_session(session_id: str) -> Response:
    return json_response(200, sessions_service.stop_session(_user(_request()), session_id))


def session_proxy(session_id: str, **segments: str) -> Response:
    """`/sessions/{id}/{p1}/.../{pN}` -> the bot, through PCC's session API proxy."""
    request = _request()
    headers = request_headers(request)
    if is_preflight(request.method, headers):
        allowed = get_settings().proxy.request_headers
        return preflight_response(CORS, PROXY_METHODS, headers.get("access-control-request-headers", ""),
                                  lambda name: forwarded_to_bot(name, allowed))
    path = [segments[f"p{i}"] for i in range(1, len(segments) + 1)]
    result = forward(_user(request), session_id, path, request.method, headers, _pairs(request), _raw_body(request))
    return proxy_response(result, app.api.binary_types, CORS)


# Chalice has no greedy {proxy+} path: one route per depth, all served by session_proxy. These routes
# serve OPTIONS themselves (forwarded to the bot, or a CORS preflight answered above), so Chalice's
# own CORS switch is off for them and proxy_response adds the CORS headers.
# OPTIONS is registered without the API Gateway authorizer: browsers send CORS preflights without
# credentials (a non-preflight OPTIONS is still authenticated by session_proxy itself).
for _depth in range(1, MAX_PROXY_DEPTH + 1):
    _path = "/sessions/{session_id}/" + "/".join(f"{{p{i}}}" for i in range(1, _depth + 1))
    app.route(_path, methods=[m for m in PROXY_METHODS if m != "OPTIONS"], content_types=PROXY_CONTENT_TYPES,
              name=f"session_proxy_{_depth}", authorizer=AUTHORIZER)(session_proxy)
    app.route(_path, methods=["OPTIONS"], content_types=PROXY_CONTENT_TYPES,
              name=f"session_proxy_options_{_depth}")(session_proxy)


# Telephony routes import their modules when first called: a container that serves /start never pays for them
# (~10-15 ms of a cold start: XML, signatures, dial-out policy; bench/cold_start.py).
FORM = ["application/x-www-form-urlencoded"]
# GET webhooks (Plivo, Exotel) carry no Content-Type, which Chalice would take for JSON and answer 415;
# their bodies are read as forms on POST only, and the signature / URL token decides either way.
ANY_TYPE = ["*/*"]
WORKER_MAX_CONCURRENCY = 5


def _pairs(request: Request) -> list[tuple[str, str]]:
    params = request.query_params
    return [(k, v) for k in (params or {}) for v in params.getlist(k)] if params else []  # type: ignore[union-attr]


def _xml_or_json(result: HttpResult) -> Response:
    if isinstance(result.body, str):
        return Response(body=result.body, status_code=result.status, headers=dict(result.headers))
    return json_response(result.status, result.body, result.headers)


@app.route("/telephony/twilio", methods=["POST"], content_types=FORM)
def twilio_webhook() -> Response:
    from chalicelib.telephony import webhooks  # noqa: PLC0415 - lazy (see FORM)

    request = _request()
    return _xml_or_json(webhooks.twilio(request_headers(request), _pairs(request), _raw_body(request)))


@app.route("/telephony/telnyx", methods=["POST"], content_types=FORM)
def telnyx_webhook() -> Response:
    from chalicelib.telephony import webhooks  # noqa: PLC0415 - lazy (see FORM)

    request = _request()
    return _xml_or_json(webhooks.telnyx(request_headers(request), _pairs(request), _raw_body(request)))


@app.route("/telephony/plivo", methods=["GET", "POST"], content_types=ANY_TYPE)
def plivo_webhook() -> Response:
    from chalicelib.telephony import webhooks  # noqa: PLC0415 - lazy (see FORM)

    request = _request()
    return _xml_or_json(webhooks.plivo(request.method, request_headers(request), _pairs(request),
                                       _raw_body(request)))


@app.route("/telephony/daily/dialin", methods=["POST"])
def daily_dialin_webhook() -> Response:
    from chalicelib.telephony import dialin  # noqa: PLC0415 - lazy (see FORM)

    request = _request()
    return _xml_or_json(dialin.daily_dialin(request_headers(request), _raw_body(request)))


@app.route("/telephony/exotel/{token}", methods=["GET", "POST"], content_types=ANY_TYPE)
def exotel_webhook(token: str) -> Response:
    from chalicelib.telephony import webhooks  # noqa: PLC0415 - lazy (see FORM)

    request = _request()
    return _xml_or_json(webhooks.exotel(token, request.method, _pairs(request), _raw_body(request),
                                        _source_ip(request)))


@app.route("/telephony/daily/dialout", methods=["POST"], cors=CORS)
def daily_dialout() -> Response:
    from chalicelib.telephony import dialout  # noqa: PLC0415 - lazy (see FORM)

    request = _request()
    caller = dialout.dialout_service(request_headers(request), get_secrets()) or _principal(request)
    return _xml_or_json(dialout.daily_dialout(caller, _raw_body(request), _start_base(request)))


# maximum_concurrency: the event source never runs more workers than this (<= the function's
# reserved_concurrency in .chalice/config.json, so the queue is never throttled into the DLQ).
@app.on_sqs_message(queue=os.environ.get("RETRY_QUEUE_NAME", "pipecat-gateway-local-retry"), batch_size=1,
                    name="retry_worker", maximum_concurrency=WORKER_MAX_CONCURRENCY)
def retry_worker(event: Any) -> None:
    for record in event:  # batch_size=1: one record; raising leaves it for redelivery / the DLQ
        messages.handle(record.body)


@app.schedule(Rate(reconcile.END_DETECTION_SECONDS // 60, unit=Rate.MINUTES), name="detect_ended")
def detect_ended(event: Any) -> dict[str, int]:
    return reconcile.detect_ended()  # sessions that ended at Pipecat Cloud: recorded, slot freed, event written


@app.schedule(Rate(5, unit=Rate.MINUTES), name="reconcile_sessions")
def reconcile_sessions(event: Any) -> dict[str, int]:
    return schedule.run()  # each step on its own: one failing never stops the others


# The events outbox's stream (infra/template.yaml): every batch is delivered to the sinks, or raises and is
# handed over again (chalicelib/events). TRIM_HORIZON: events written before the mapping existed are delivered.
@app.on_dynamodb_record(stream_arn=os.environ.get("EVENTS_STREAM_ARN", LOCAL_EVENTS_STREAM_ARN), batch_size=100,
                        starting_position="TRIM_HORIZON", name="deliver_events")
def deliver_events(event: Any) -> dict[str, int]:
    from chalicelib import events  # noqa: PLC0415 - only this function delivers: the others' cold starts skip it

    return events.deliver_stream_records(event.to_dict()["Records"])
