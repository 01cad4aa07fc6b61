"""Per-user limits in DynamoDB: fixed-window rates and concurrency caps, each one conditional write.

- take: at most `limit` per key per window. One item per key and window (`RATE#{key}` / window start),
  counted with a conditional ADD, expiring by TTL after its window. Exceeding the limit is a 429 with
  Retry-After = the seconds left in the window.
- concurrent: at most `limit` holders at once (long-polls).

Why fixed windows in DynamoDB: API Gateway usage plans meter API keys, not the JWT users we limit, and a
token bucket needs a read and a conditional write per call where a window needs one write; the price
is that a user may burst up to 2x the limit across a window boundary (documented in docs/security.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from chalicelib.platform.dynamo import delete_if, put_if, update_if
from chalicelib.platform.errors import TryLater


def take(key: str, limit: int, window_seconds: int, *, kind: str, what: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    start = int(now) - int(now) % window_seconds
    if limit <= 0:
        raise TryLater(kind, f"{what} is not allowed (limit 0)", retry_after=window_seconds)
    taken = update_if({"PK": f"RATE#{key}", "SK": str(start)}, "ADD #n :one SET #ttl = :ttl",
                      condition="attribute_not_exists(#n) OR #n < :limit", names={"#n": "taken", "#ttl": "ttl"},
                      values={":one": 1, ":limit": limit, ":ttl": start + 2 * window_seconds})
    if taken is None:
        retry_after = max(1, start + window_seconds - int(now))
        raise TryLater(kind, f"{what}: at most {limit} per {window_seconds} s",
                       retry_after=retry_after)


@contextmanager
def concurrent(key: str, limit: int, hold_seconds: float, *, kind: str, what: str,
               now: float | None = None) -> Iterator[None]:
    """At most `limit` holders of `key` at once: one item per seat (`HOLD#{key}` / seat number), taken with
    a conditional put, given back when the block ends. A holder that died (its Lambda killed) loses its
    seat after `hold_seconds`, so a seat can never leak for longer."""
    now = time.time() if now is None else now
    owner = uuid.uuid4().hex
    for seat in range(limit):
        key_item = {"PK": f"HOLD#{key}", "SK": str(seat)}
        seated = {**key_item, "owner": owner, "until": int(now + hold_seconds), "ttl": int(now + hold_seconds) + 3600}
        if put_if(seated, "attribute_not_exists(PK) OR #u < :now", names={"#u": "until"},
                  values={":now": int(now)}):
            try:
                yield
            finally:
                delete_if(key_item, "#o = :o", names={"#o": "owner"}, values={":o": owner})
            return
    raise TryLater(kind, f"{what}: at most {limit} at a time", retry_after=1)
