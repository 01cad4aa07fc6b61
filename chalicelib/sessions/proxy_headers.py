"""Which headers cross the session proxy, each way.

Both directions go through an allow-list (fnmatch patterns, configurable: PROXY_REQUEST_HEADERS,
PROXY_RESPONSE_HEADERS, whose defaults chalicelib.platform.settings holds) on top of a floor that no
configuration can lift:

- to the bot, never: credentials (`authorization`, `cookie`, `x-api-key`, our `x-dev-user`,
  `idempotency-key`), forwarding and client-address headers (`forwarded`, `x-forwarded-*`, `x-real-ip`,
  `via`, ...), AWS and CloudFront headers (`x-amz-*`, `x-amzn-*`, `cloudfront-*`), hop-by-hop headers,
  `host`, `content-length`, `accept-encoding` (so the body comes back unencoded), and the headers Pipecat
  Cloud's base image reads as Pipecat Cloud's own (`x-daily-*`, `x-pcc-*`);
- to the client, never: `set-cookie` (a bot must not set state on our origin), CORS headers (ours only),
  `location` and `refresh` (no redirects chosen by a bot), our own `x-session-id` / `x-request-id`,
  AWS headers, hop-by-hop headers, `content-length` / `content-encoding` (API Gateway sets them).

A request header whose value cannot be forwarded as-is (non-ASCII, control characters) is a 400.
"""

from __future__ import annotations

import fnmatch

from chalicelib.platform.errors import Refused

_HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-*"]
NEVER_TO_BOT = [
    "host", "content-length", "authorization", "cookie", "cookie2", "x-api-key", "x-dev-user", "x-dev-groups",
    "idempotency-key",
    "forwarded", "x-forwarded-*", "x-real-ip", "x-client-ip", "true-client-ip", "x-original-*", "via",
    "x-amz-*", "x-amzn-*", "cloudfront-*", "accept-encoding",
    # Pipecat Cloud's own (the base image takes them for the session id, room URL and token, transport,
    # max session length): chalicelib.sessions.proxy_guard.
    "x-daily-*", "x-pcc-*", *_HOP_BY_HOP,
]
NEVER_TO_CLIENT = [
    "set-cookie", "set-cookie2", "access-control-*", "location", "refresh", "x-session-id", "x-request-id",
    "x-dev-user", "x-api-key",
    "x-amz-*", "x-amzn-*", "content-length", "content-encoding", "strict-transport-security", *_HOP_BY_HOP,
]


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _forwardable(value: str) -> bool:
    return all(ch == "\t" or " " <= ch <= "~" for ch in value)


def forwarded_to_bot(name: str, allowed: list[str]) -> bool:
    """Whether a request header of this name reaches the bot."""
    return not _matches(name.lower(), NEVER_TO_BOT) and _matches(name.lower(), allowed)


def to_bot(headers: dict[str, str], allowed: list[str]) -> dict[str, str]:
    """The request headers the bot gets (names lower-case). Refused (400 at the edge) on a value it cannot get."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if not forwarded_to_bot(key, allowed):
            continue
        if not _forwardable(value):
            raise Refused("invalid_header", f"Header '{key}' has characters that cannot be forwarded "
                                                  "(only printable ASCII)")
        out[key] = value
    return out


def to_client(headers: dict[str, str], allowed: list[str]) -> dict[str, str]:
    """The bot's response headers the client gets."""
    return {name: value for name, value in headers.items()
            if not _matches(name.lower(), NEVER_TO_CLIENT) and _matches(name.lower(), allowed)}
