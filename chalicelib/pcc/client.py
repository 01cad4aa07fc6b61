"""HTTP calls to Pipecat Cloud through one pooled httpx client (keep-alive, explicit timeouts).

Every function returns the decoded answer or raises `PccCallError` carrying PCC's status and body
(or a transport failure). Keys are passed in per call and only ever placed in the Authorization
header; they never appear in an exception or a log line.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chalicelib.platform import secrets
from chalicelib.platform.observability import logger, timing
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject

if TYPE_CHECKING:
    import httpx

# httpx costs ~70-100 ms to import: it is loaded on the first Pipecat Cloud call, not at cold start.
_client: httpx.Client | None = None


class PccCallError(Exception):
    """PCC answered non-2xx (`status` set) or could not be reached (`status` None, `kind` set)."""

    def __init__(self, status: int | None, body: Any = None, kind: str = "http") -> None:
        super().__init__(f"PCC call failed: {kind} {status}")
        self.status = status
        self.body = body
        self.kind = kind  # "http" | "timeout" | "unreachable" | "not_sent" | "invalid"

    @property
    def pcc_code(self) -> str | None:
        return str(self.body.get("code")) if isinstance(self.body, dict) and "code" in self.body else None

    @property
    def message(self) -> str:
        if isinstance(self.body, dict):
            for key in ("error", "message", "detail"):
                if isinstance(self.body.get(key), str):
                    return str(self.body[key])
        return f"Pipecat Cloud answered {self.status}"


def http_client() -> httpx.Client:
    """The module-wide pooled client, created on first use and reused by a warm container."""
    global _client
    if _client is None:
        import httpx  # noqa: PLC0415 - deliberately lazy

        settings = get_settings()
        _client = httpx.Client(
            timeout=httpx.Timeout(
                connect=settings.pcc.connect_timeout,
                read=settings.pcc.read_timeout,
                write=settings.pcc.connect_timeout,
                pool=settings.pcc.connect_timeout,
            ),
            # the dispatcher's attempts in flight, plus the requests of the invocation's own handler
            limits=httpx.Limits(max_connections=settings.queue.dispatch_max_in_flight + 16,
                                max_keepalive_connections=settings.queue.dispatch_max_in_flight + 16,
                                keepalive_expiry=30),
            # retries=1 retries connection failures only. TCP_NODELAY: httpx writes a POST's headers and
            # body separately; with Nagle on, a kept-alive connection can wait ~40 ms for a delayed ACK.
            transport=httpx.HTTPTransport(
                retries=1, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]),
        )
    return _client


def reset_http_client() -> None:
    global _client
    if _client is not None:
        _client.close()
    _client = None


def _send(method: str, url: str, *, read_timeout: float | None = None, **kwargs: Any) -> httpx.Response:
    """One HTTP call on the pooled client; transport failures become PccCallError, latency is recorded."""
    import httpx  # noqa: PLC0415 - cached in sys.modules after the first call

    timeout: httpx.Timeout | Any = httpx.USE_CLIENT_DEFAULT if read_timeout is None else httpx.Timeout(
        get_settings().pcc.connect_timeout, read=read_timeout)
    started = time.perf_counter()
    try:
        return http_client().request(method, url, timeout=timeout, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        # no connection: the request never left, so nothing can have happened upstream
        logger.warning("PCC unreachable", extra={"error_type": "connect"})
        raise PccCallError(None, kind="not_sent") from None
    except httpx.TimeoutException:
        raise PccCallError(None, kind="timeout") from None
    except httpx.HTTPError as exc:
        logger.warning("PCC unreachable", extra={"error_type": type(exc).__name__})
        raise PccCallError(None, kind="unreachable") from None
    finally:
        timing("PccLatency", (time.perf_counter() - started) * 1000)


def _request(
    method: str, path: str, key: str, *, json: Any = None, params: JsonObject | None = None,
    read_timeout: float | None = None,
) -> Any:
    response = _send(method, get_settings().pcc.api_url + path, read_timeout=read_timeout, json=json,
                     params=params, headers={"Authorization": f"Bearer {key}"})
    if response.is_success:
        return response.json() if response.content else None
    try:
        body: Any = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    raise PccCallError(response.status_code, body)


def start(agent: str, payload: JsonObject, public_key: str, read_timeout: float | None = None) -> JsonObject:
    result = _request("POST", f"/v1/public/{quote(agent, safe='')}/start", public_key, json=payload,
                      read_timeout=read_timeout)
    if not isinstance(result, dict) or "sessionId" not in result:
        raise PccCallError(502, {"error": "start answer had no sessionId"}, kind="invalid")
    return result


def get_session(agent: str, session_id: str, private_key: str) -> JsonObject:
    path = f"/v1/agents/{quote(agent, safe='')}/sessions/{quote(session_id, safe='')}"
    return dict(_request("GET", path, private_key) or {})


def stop_session(agent: str, session_id: str, private_key: str) -> JsonObject:
    path = f"/v1/agents/{quote(agent, safe='')}/sessions/{quote(session_id, safe='')}"
    return dict(_request("DELETE", path, private_key) or {})


def stop_if_running(agent: str, session_id: str, private_key: str | None = None) -> bool:
    """The one way to stop a bot: True when it is stopped now or was already gone (404); False, logged, on
    any other outcome (the private key missing included). Never raises: each caller has a backstop (the next
    sweep, reconciliation, the agent's max session duration)."""
    try:
        stop_session(agent, session_id, private_key or secrets.private_key())
    except PccCallError as exc:
        if exc.status == 404:
            return True
        logger.warning("could not stop a session", extra={"session_id": session_id, "status": exc.status})
        return False
    except Exception:  # noqa: BLE001 - best effort by design (see above)
        logger.warning("could not stop a session", extra={"session_id": session_id})
        return False
    return True


def agent_details(agent: str, private_key: str) -> JsonObject:
    """The agent as Pipecat Cloud sees it (private API): `activeSessionCount`, `autoScaling`, ..."""
    return dict(_request("GET", f"/v1/agents/{quote(agent, safe='')}", private_key) or {})


def list_sessions(agent: str, private_key: str, **params: Any) -> JsonObject:
    path = f"/v1/agents/{quote(agent, safe='')}/sessions"
    return dict(_request("GET", path, private_key, params=params) or {})


def active_sessions(agent: str, private_key: str, page_size: int = 100) -> list[JsonObject]:
    """Every session Pipecat Cloud lists as active for the agent (all pages)."""
    found: list[JsonObject] = []
    offset = 0
    while True:
        page = list_sessions(agent, private_key, status="active", limit=page_size, offset=offset)
        sessions = page.get("sessions") or []
        found.extend(s for s in sessions if not s.get("endedAt"))
        offset += len(sessions)
        if not sessions or offset >= int(page.get("total_count") or 0):
            return found


def proxy(
    agent: str,
    session_id: str,
    bot_path: str,
    method: str,
    public_key: str,
    *,
    query: list[tuple[str, str | int | float | bool | None]],
    headers: dict[str, str],
    body: bytes,
) -> httpx.Response:
    """Forward one request to the bot through PCC's session API proxy; returns the raw response."""
    url = (
        f"{get_settings().pcc.api_url}/v1/public/{quote(agent, safe='')}"
        f"/sessions/{quote(session_id, safe='')}/{bot_path}"
    )
    out_headers = dict(headers)
    out_headers["Authorization"] = f"Bearer {public_key}"
    return _send(method, url, params=query, headers=out_headers, content=body)
