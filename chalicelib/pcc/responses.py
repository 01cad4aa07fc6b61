"""What the caller gets from a Pipecat Cloud answer: the per-transport success body, mapped errors."""

from __future__ import annotations

from chalicelib.pcc.client import PccCallError
from chalicelib.platform.errors import Refused, TryLater
from chalicelib.platform.http import HttpResult
from chalicelib.platform.observability import logger
from chalicelib.platform.shapes import JsonObject

SESSION_ID_HEADER = "X-Session-Id"


def map_pcc_error(exc: PccCallError) -> Refused:
    """Translate a failed PCC call into our error (status kept where the client can act on it)."""
    if exc.kind == "timeout":
        return Refused("upstream_timeout", "Pipecat Cloud did not answer in time")
    if exc.kind in ("unreachable", "not_sent", "invalid") or exc.status is None:
        return Refused("upstream_unavailable", "Pipecat Cloud could not be reached")
    if exc.status == 401:
        # Our key is wrong or revoked: an operator problem, not the caller's.
        logger.error("Pipecat Cloud rejected the gateway's key (401): check the secret")
        return Refused("upstream_auth_failed", "The gateway is misconfigured")
    if exc.status == 400 and exc.pcc_code == "PCC-1001":
        return Refused("agent_not_ready", exc.message)
    if exc.status == 400:
        return Refused("upstream_bad_request", exc.message)
    if exc.status == 404:
        return Refused("agent_not_found", exc.message)
    if exc.status == 413:
        return Refused("body_too_large", exc.message)
    if exc.status == 429:
        return TryLater("pcc_at_capacity", "The agent is at capacity; try again shortly",
                        retry_after=5)
    if exc.status >= 500:
        return Refused("upstream_error", f"Pipecat Cloud answered {exc.status}")
    return Refused("upstream_error", exc.message)


def is_capacity_error(exc: PccCallError) -> bool:
    return exc.status == 429


def is_retryable(exc: PccCallError) -> bool:
    """Worth another attempt for a queued start: capacity, and every outcome that is not a refusal. A
    timeout, a 5xx or a dropped connection may have started a bot already: the retry then starts the one
    that gets recorded, and the orphan sweeper stops the unrecorded first (one bot serves the request)."""
    return exc.status == 429 or exc.kind == "not_sent" or might_have_started(exc)


def might_have_started(exc: PccCallError) -> bool:
    """An outcome that does not prove the bot was not created: a timeout, a connection lost after the
    request was sent, a 5xx, an answer without a session id. Only 4xx answers (429 included) and
    connections that never opened prove it."""
    if exc.kind in ("timeout", "unreachable", "invalid"):
        return True
    return exc.status is not None and exc.status >= 500


def client_response(transport: str, pcc: JsonObject) -> HttpResult:
    """The body each transport's client accepts as-is (docs/pipecat-cloud-api.md)."""
    session_id = str(pcc["sessionId"])
    headers = {SESSION_ID_HEADER: session_id}
    if transport == "websocket":  # the body reaches the bot through the session, never in the URL
        return HttpResult(200, {"wsUrl": str(pcc["wsUrl"]), "token": pcc["token"]}, headers)
    body: JsonObject = {"sessionId": session_id}
    if transport == "daily":
        body["dailyRoom"] = pcc.get("dailyRoom")
        body["dailyToken"] = pcc.get("dailyToken")
    if pcc.get("iceConfig"):
        body["iceConfig"] = pcc["iceConfig"]
    return HttpResult(200, body, headers)
