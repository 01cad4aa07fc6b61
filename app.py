"""pipecat-gateway: routes and event handlers only; all logic lives in chalicelib/."""

from __future__ import annotations

import os

from chalice.app import Chalice, Request, Response

from chalicelib import start_service
from chalicelib.auth import authenticate
from chalicelib.errors import ApiError
from chalicelib.http import cors_config, error_middleware, json_response
from chalicelib.observability import SERVICE, logger
from chalicelib.settings import get_settings

app = Chalice(app_name=SERVICE, configure_logs=False)

# CORS is fixed at import time: `chalice deploy/package` imports this module with the stage's
# environment, and API Gateway's generated preflight answers need it then.
CORS = cors_config(os.environ.get("CORS_ALLOW_ORIGIN", "*"))
app.register_middleware(error_middleware(CORS.allow_origin), "http")

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    get_settings()  # in Lambda, a bad configuration fails the cold start with a message naming it


def _request() -> Request:
    if app.current_request is None:  # pragma: no cover - Chalice always sets it for routes
        raise ApiError(500, "internal_error", "No request")
    return app.current_request


def _raw_body(request: Request) -> bytes:
    raw = request.raw_body
    return raw.encode() if isinstance(raw, str) else (raw or b"")


@app.route("/health", methods=["GET"], cors=CORS)
def health() -> Response:
    return json_response(200, {"status": "ok", "stage": get_settings().stage})


@app.route("/start", methods=["POST"], cors=CORS)
def start() -> Response:
    request = _request()
    user_id = authenticate(request)
    logger.append_keys(user_id=user_id)
    result = start_service.start(
        user_id, _raw_body(request), request.headers.get("idempotency-key"), app.lambda_context
    )
    return json_response(result.status, result.body, result.headers)
