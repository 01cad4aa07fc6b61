"""pipecat-gateway: routes and event handlers only; all logic lives in chalicelib/."""

from __future__ import annotations

import os

from chalice import Chalice, Response

from chalicelib import start_service
from chalicelib.auth import authenticate
from chalicelib.http import cors_config, error_middleware, json_response
from chalicelib.observability import SERVICE, logger
from chalicelib.settings import get_settings

app = Chalice(app_name=SERVICE, configure_logs=False)

# CORS is configured at import time (API Gateway needs it in the deployed template).
CORS = cors_config(os.environ.get("CORS_ALLOW_ORIGIN", "*"))
app.register_middleware(error_middleware(lambda: get_settings().cors_allow_origin), "http")


def _request_body() -> bytes | None:
    return app.current_request.raw_body if app.current_request else None


@app.route("/health", methods=["GET"], cors=CORS)
def health() -> Response:
    return json_response(200, {"status": "ok", "stage": get_settings().stage})


@app.route("/start", methods=["POST"], cors=CORS)
def start() -> Response:
    request = app.current_request
    user_id = authenticate(request)
    logger.append_keys(user_id=user_id)
    result = start_service.start(
        user_id, request.raw_body, request.headers.get("idempotency-key"), app.lambda_context
    )
    return json_response(result.status, result.body, result.headers)
