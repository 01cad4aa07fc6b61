"""The session API proxy: `/sessions/{id}/{path...}` -> PCC `/v1/public/{agent}/sessions/{id}/{path}`.

Owner-checked; forwards method, query, body and the allowed headers (chalicelib.sessions.proxy_headers) with the
public key; answers with the bot's status, body and allowed headers. Each path segment arrives decoded by
API Gateway: one holding `/`, backslash, `%` or a control character, or starting with `.`, is refused (400), so
an encoded `..%2F..%2Fstart` can neither climb out of the session's API nor slip past
PROXY_ALLOWED_PATHS (fnmatch globs, matched on the checked segments). What the bot must never take from a
client (offer `requestData`, the base image's internal routes, Pipecat Cloud's headers):
chalicelib.sessions.proxy_guard.

Chalice has no greedy `{proxy+}` path, so app.py registers `/sessions/{id}/{p1}`, `.../{p1}/{p2}`, ...
up to MAX_PROXY_DEPTH segments, all served by `forward` below.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any
from urllib.parse import quote

from chalicelib.pcc import client as pcc_client
from chalicelib.pcc.client import PccCallError
from chalicelib.pcc.responses import map_pcc_error
from chalicelib.platform import rate_limits
from chalicelib.platform.errors import Refused
from chalicelib.platform.http import HttpResult
from chalicelib.platform.secrets import get_secrets
from chalicelib.platform.settings import get_settings
from chalicelib.sessions import proxy_guard, proxy_headers
from chalicelib.sessions.service import owned_session

MAX_PROXY_DEPTH = 6
# Our own query parameters, never the bot's: SmallWebRTC derives the offer URL from the start URL, so a
# `/start?wait=5` would otherwise reach the bot as `api/offer?wait=5`.
GATEWAY_QUERY_PARAMETERS = frozenset({"wait"})
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
# Proxy routes accept every request content type. Chalice requires one route's content types to agree on
# being binary or not (`chalice deploy` refuses the app otherwise), and `*/*` is not a binary type, so it
# passes. Bytes stay exact either way: API Gateway base64-encodes a body whose Content-Type is in the
# API's binary media types (app.api.binary_types, e.g. application/octet-stream) and Chalice decodes it;
# text bodies (JSON, SDP, forms) arrive as the UTF-8 text they are.
PROXY_CONTENT_TYPES = ["*/*"]


def is_preflight(method: str, headers: dict[str, str]) -> bool:
    return method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers


def bot_path(segments: list[str]) -> str:
    """The bot path to call, percent-encoded. Refused (400 at the edge) on a segment that could change the path."""
    for segment in segments:
        if not segment or segment.startswith(".") or any(ch in "/\\%" or ord(ch) < 0x20 or ord(ch) == 0x7F
                                                         for ch in segment):
            raise Refused("invalid_path", "A bot path segment may not be empty, start with '.', or hold "
                                                "'/', '\\', '%' or control characters")
        try:
            segment.encode("utf-8")
        except UnicodeEncodeError:
            raise Refused("invalid_path", "A bot path segment is not valid Unicode") from None
    return "/".join(quote(s, safe="@:+$,;=-._~!*'()") for s in segments)


def forward(
    user_id: str,
    session_id: str,
    segments: list[str],
    method: str,
    headers: dict[str, str],
    query: list[tuple[str, str]],
    body: bytes,
) -> HttpResult:
    settings = get_settings()
    rate_limits.take(f"proxy#{user_id}", settings.proxy.rate_per_minute, 60, kind="proxy_rate_limited",
                     what="Session API calls")
    record = owned_session(user_id, session_id)
    path = bot_path(segments)
    proxy_guard.refuse_internal_route(segments)  # whatever PROXY_ALLOWED_PATHS says
    if not any(fnmatch.fnmatchcase("/".join(segments), pattern) for pattern in settings.proxy.allowed_paths):
        raise Refused("path_not_allowed", f"Bot path '{'/'.join(segments)}' is not allowed")
    if len(body) > settings.proxy.max_body_bytes:
        raise Refused("request_too_large", f"Request body exceeds {settings.proxy.max_body_bytes} bytes")
    if proxy_guard.is_offer(segments):
        policy = settings.pcc.agents[record.agent].offer_request_data if record.agent in settings.pcc.agents else None
        body = proxy_guard.offer_body(body, policy or settings.proxy.offer_request_data)
    forwarded = proxy_headers.to_bot(headers, settings.proxy.request_headers)
    try:
        response = pcc_client.proxy(
            record.agent, session_id, path, method, get_secrets().public_key.get_secret_value(),
            query=[(k, v) for k, v in query if k not in GATEWAY_QUERY_PARAMETERS], headers=forwarded, body=body,
        )
    except PccCallError as exc:
        raise map_pcc_error(exc) from None
    if response.status_code == 401:
        raise map_pcc_error(PccCallError(401, _json_or_none(response)))
    refusal = pcc_refusal(response.status_code, response.content)
    if refusal is not None:
        raise refusal
    out_headers = proxy_headers.to_client(dict(response.headers.items()), settings.proxy.response_headers)
    return HttpResult(response.status_code, b"" if method == "HEAD" else response.content, out_headers)


def pcc_refusal(status: int, content: bytes) -> Refused | None:
    """Pipecat Cloud's own refusal of a proxied call (the session ended or is unknown, the deployment is not
    ready, its 5xx) in our `{"detail", "code"}` shape. The rule: an error status whose body is exactly
    Pipecat Cloud's error object (`{"error": str, "code": str}`, nothing else) is Pipecat Cloud's; every other
    answer, errors included, is the bot's own API and passes unchanged."""
    if status < 400 or len(content) > 4096:
        return None
    try:
        body = json.loads(content)
    except ValueError:
        return None
    if not (isinstance(body, dict) and set(body) == {"error", "code"}
            and all(isinstance(v, str) for v in body.values())):
        return None
    if status == 404:
        return Refused("session_not_found", "The session has ended or is not known to Pipecat Cloud")
    return map_pcc_error(PccCallError(status, body))


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
