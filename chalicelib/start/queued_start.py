"""The life of a queued start, as the capacity queue's parts share it (the routes' side, the dispatcher, the sweep):
for now its abandonment rule. A bot nobody waits for still bills by the second, so a queued start whose owner has
not asked about it for QUEUED_ABANDON_SECONDS is cancelled instead of started."""

from __future__ import annotations

import time

from chalicelib.platform.observability import count, logger
from chalicelib.platform.settings import Settings
from chalicelib.store import agent_queue
from chalicelib.store import queued_starts as start_requests
from chalicelib.store.queued_starts import QueuedStart

ABANDONED_DETAIL = "nobody asked about it for QUEUED_ABANDON_SECONDS, so no bot was started for it"


def abandoned(request: QueuedStart, now: float, abandon_seconds: int) -> bool:
    """Queued, and its owner has not asked about it for `abandon_seconds` (requests without `seen_at`,
    recorded before abandonment existed, never are)."""
    return bool(abandon_seconds) and request["state"] == start_requests.QUEUED and "seen_at" in request \
        and now - float(request["seen_at"]) > abandon_seconds


def abandon(request: QueuedStart, now: float, abandon_seconds: int) -> bool:
    """Cancel an abandoned queued start (`abandoned`), freeing its slot and its place; False when its owner
    asked about it after all (conditional on `seen_at`) or it left the queue."""
    if start_requests.finish_without_session(request, start_requests.CANCELLED, "abandoned", ABANDONED_DETAIL,
                                             (start_requests.QUEUED,), abandoned_before=now - abandon_seconds):
        agent_queue.mark_gone(request["agent"], int(request["seq"]))
        count("QueuedStartsAbandoned")
        logger.info("queued start abandoned", extra={"request_id": request["request_id"]})
        return True
    return False


def abandoned_head(settings: Settings, request: QueuedStart) -> bool:
    """True when the head was abandoned (nobody asked about it lately) and is now cancelled, not started.
    The head is kept across retries without a re-read, so its `seen_at` may be stale: a fresh read decides,
    and the cancel is conditional on it (an owner asking at that moment wins)."""
    limit, now = settings.queued_abandon_seconds, time.time()
    if not abandoned(request, now, limit):
        return False
    fresh = start_requests.get(request["request_id"])
    if fresh is None or not abandoned(fresh, now, limit):
        request.update(fresh or {})
        return False
    if abandon(fresh, now, limit):  # its place is marked gone: the next loop folds the head past it
        return True
    request.update(start_requests.get(request["request_id"]) or {})
    return False

