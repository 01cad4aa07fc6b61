"""Fixed-window rate limits in DynamoDB: at most `limit` takes per key per window, atomically.

One item per key and window (`RATE#{key}` / window start), counted with a conditional ADD, expiring by
TTL after its window. Exceeding the limit is a 429 with Retry-After = the seconds left in the window.
"""

from __future__ import annotations

import time

from .errors import ApiError
from .session_store import conditionally, table


def take(key: str, limit: int, window_seconds: int, *, code: str, what: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    start = int(now) - int(now) % window_seconds
    if limit <= 0:
        raise ApiError(429, code, f"{what} is not allowed (limit 0)", headers={"Retry-After": str(window_seconds)})
    taken = conditionally(lambda: table().update_item(
        Key={"PK": f"RATE#{key}", "SK": str(start)},
        UpdateExpression="ADD #n :one SET #ttl = :ttl",
        ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
        ExpressionAttributeNames={"#n": "taken", "#ttl": "ttl"},
        ExpressionAttributeValues={":one": 1, ":limit": limit, ":ttl": start + 2 * window_seconds},
    ))
    if not taken:
        retry_after = max(1, start + window_seconds - int(now))
        raise ApiError(429, code, f"{what}: at most {limit} per {window_seconds} s",
                       headers={"Retry-After": str(retry_after)})
