"""HTTP plumbing shared by all routes: JSON error responses, CORS, and the error middleware."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalice.app import CORSConfig, Response

from chalicelib.platform.errors import ApiError, DomainError
from chalicelib.platform.observability import count, flush_metrics, logger, tag_request, untag_request
from chalicelib.platform.shapes import JsonObject


@dataclass
class HttpResult:
    """An answer before it becomes a Chalice Response: a status, a body (JSON-able, provider XML text, or a bot's
    bytes) and headers. Stored as a dict by idempotency and queued starts (`as_dict` / `from_dict`)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> JsonObject:
        return {"status": self.status, "body": self.body, "headers": self.headers}

    @classmethod
    def from_dict(cls, data: JsonObject) -> HttpResult:
        return cls(int(data["status"]), data["body"], dict(data.get("headers") or {}))


# What a browser may send us: our own headers, and the request headers the session proxy forwards by default
# (chalicelib.sessions.proxy_headers). A preflight of a proxy route also allows each `x-*` header it asks for that the
# proxy would forward (`preflight_response`): a wildcard cannot be listed.
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Dev-User", "X-Dev-Groups",
                   "Accept-Language", "Content-Language", "Cache-Control", "Pragma", "Range", "If-Match",
                   "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"]
EXPOSED_HEADERS = ["X-Session-Id", "Location", "Retry-After", "X-Request-Id"]


def cors_config(origin: str) -> CORSConfig:
    return CORSConfig(allow_origin=origin, allow_headers=ALLOWED_HEADERS,
                      expose_headers=EXPOSED_HEADERS, max_age=600)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    out: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    out.update(headers or {})
    return Response(body=json.dumps(body), status_code=status, headers=out)


def error_response(error: ApiError, cors_origin: str) -> Response:
    headers = dict(error.headers)
    headers.setdefault("Access-Control-Allow-Origin", cors_origin)
    headers.setdefault("Access-Control-Expose-Headers", ",".join(EXPOSED_HEADERS))
    return json_response(error.status, error.body(), headers)


def snake_case_code(chalice_code: str) -> str:
    """Chalice's error names as our codes: `UnsupportedMediaType` -> `unsupported_media_type`,
    `MethodNotAllowedError` -> `method_not_allowed`."""
    name = chalice_code.removesuffix("Error") or chalice_code
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _normalise_chalice_error(response: Response) -> Response:
    """Chalice's own errors ({"Code", "Message"}: 415, 405, 500) get our {"detail", "code"} shape."""
    body = response.body
    if isinstance(body, str) and body.startswith("{"):
        try:
            body = json.loads(body)
        except ValueError:
            return response
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code = "internal_error" if response.status_code >= 500 else snake_case_code(str(body["Code"]))
        detail = "Internal error" if response.status_code >= 500 else str(body["Message"])
        response.body = json.dumps({"detail": detail, "code": code})
        response.headers["Content-Type"] = "application/json"
    return response


def error_middleware(cors_origin: str, answer: Callable[[DomainError], ApiError]
                     ) -> Callable[[Any, Callable[[Any], Response]], Response]:
    """Every error as JSON `{detail, code}`: an ApiError as it is, a DomainError through `answer` (the edge's
    table), anything else as 500 without its trace."""
    def middleware(event: Any, get_response: Callable[[Any], Response]) -> Response:
        context = getattr(event, "context", None) or {}
        untag_request("user_id")
        tag_request(request_id=context.get("requestId"))
        try:
            try:
                try:
                    response = _normalise_chalice_error(get_response(event))
                except DomainError as domain:
                    raise answer(domain) from None
            except ApiError as error:
                if error.status >= 500:
                    logger.warning("request failed", extra={"code": error.code, "status": error.status})
                count("ClientErrors" if error.status < 500 else "ServerErrors", code=error.code)
                response = error_response(error, cors_origin)
            except Exception:  # noqa: BLE001 - last resort: never leak a stack trace
                logger.exception("unhandled error")
                response = error_response(ApiError(500, "internal_error", "Internal error"), cors_origin)
            if getattr(event, "method", "") == "HEAD":
                response.body = ""  # a HEAD answer has headers only
            return response
        finally:
            flush_metrics()

    return middleware


def request_headers(request: Any) -> dict[str, str]:
    """The request's headers as a plain dict with lower-case names."""
    return {str(k).lower(): str(v) for k, v in dict(request.headers).items()}


def proxy_response(result: HttpResult, binary_types: list[str], cors: CORSConfig) -> Response:
    """The bot's answer, unchanged: status, headers and body (text unless its type is binary),
    plus our CORS headers so browsers can read it."""
    content_type = str(result.headers.get("content-type", "")).split(";")[0].strip().lower()
    body: bytes | str = result.body
    if not any(content_type == t or (t.endswith("/*") and content_type.startswith(t[:-1]))
               for t in binary_types):
        body = result.body.decode("utf-8", "replace")
    headers: dict[str, str | list[str]] = dict(result.headers)
    headers["Access-Control-Allow-Origin"] = cors.allow_origin
    headers["Access-Control-Expose-Headers"] = ",".join(EXPOSED_HEADERS)
    return Response(body=body, status_code=result.status, headers=headers)


def preflight_response(cors: CORSConfig, methods: list[str], requested: str = "",
                       forwarded: Callable[[str], bool] = lambda name: False) -> Response:
    """A CORS preflight answer for routes that also serve OPTIONS themselves (the session proxy): our
    headers, plus each requested header `forwarded` says the proxy would pass to the bot."""
    headers: dict[str, str | list[str]] = dict(cors.get_access_control_headers())
    headers["Access-Control-Allow-Methods"] = ",".join(methods)
    ours = {h.lower() for h in ALLOWED_HEADERS}
    extra = [name for name in (p.strip().lower() for p in requested.split(",")) if name and name not in ours
             and forwarded(name)]
    if extra:
        headers["Access-Control-Allow-Headers"] = ",".join([*ALLOWED_HEADERS, *extra])
    return Response(body="", status_code=200, headers=headers)
