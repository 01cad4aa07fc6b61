"""The life of a queued start, as the capacity queue's parts share it (the routes' side, the dispatcher, the sweep):
its abandonment rule (a bot nobody waits for still bills by the second, so a queued start whose owner has not asked
about it for QUEUED_ABANDON_SECONDS is cancelled instead of started), its expiry past the deadline, leaving the
queue, and a place given back when the queue passed it."""

from __future__ import annotations

import time

from chalicelib.platform.observability import count, logger
from chalicelib.platform.settings import Settings
from chalicelib.start import lifecycle
from chalicelib.store import agent_queue, queued_starts
from chalicelib.store.queued_starts import QueuedStart

DEADLINE_DETAIL = "Pipecat Cloud stayed at capacity until the deadline"
ABANDONED_DETAIL = "nobody asked about it for QUEUED_ABANDON_SECONDS, so no bot was started for it"
SWEEP_GRACE_SECONDS = 120  # past its deadline by this much, a start no dispatcher failed is failed by whoever reads it


def finish(request: QueuedStart, state: str, code: str, detail: str, from_states: tuple[str, ...], *,
           abandoned_before: float | None = None) -> bool:
    """-> failed/cancelled without a session (chalicelib.store.queued_starts.finish_without_session), with the
    event the transition writes; True when this call moved it."""
    events = lifecycle.start_finished(request, state, code, detail)
    return queued_starts.finish_without_session(request, state, code, detail, from_states, events,
                                                abandoned_before=abandoned_before)


def abandoned(request: QueuedStart, now: float, abandon_seconds: int) -> bool:
    """Queued, and its owner has not asked about it for `abandon_seconds` (requests without `seen_at`,
    recorded before abandonment existed, never are)."""
    return bool(abandon_seconds) and request.state == queued_starts.QUEUED and request.seen_at is not None \
        and now - float(request.seen_at) > abandon_seconds


def abandon(request: QueuedStart, now: float, abandon_seconds: int) -> bool:
    """Cancel an abandoned queued start (`abandoned`), freeing its slot and its place; False when its owner
    asked about it after all (conditional on `seen_at`) or it left the queue."""
    if finish(request, queued_starts.CANCELLED, "abandoned", ABANDONED_DETAIL, (queued_starts.QUEUED,),
              abandoned_before=now - abandon_seconds):
        left_queue(request)
        count("QueuedStartsAbandoned")
        logger.info("queued start abandoned", extra={"request_id": request.request_id})
        return True
    return False


def head_to_try(settings: Settings, request: QueuedStart) -> QueuedStart | None:
    """The head as it stands: None when it was abandoned (nobody asked about it lately) and is now cancelled, not
    started; else the head, read again when it looked abandoned. The head is kept across retries without a re-read,
    so its `seen_at` may be stale: a fresh read decides, and the cancel is conditional on it (an owner asking at
    that moment wins)."""
    limit, now = settings.queue.queued_abandon_seconds, time.time()
    if not abandoned(request, now, limit):
        return request
    fresh = queued_starts.get(request.request_id)
    if fresh is None or not abandoned(fresh, now, limit):
        return fresh or request
    if abandon(fresh, now, limit):  # its place is marked gone: the next loop folds the head past it
        return None
    return queued_starts.get(request.request_id) or request


def expire_if_overdue(request: QueuedStart, now: float) -> QueuedStart:
    if request.state in (queued_starts.QUEUED, queued_starts.STARTING) \
            and now > request.deadline + SWEEP_GRACE_SECONDS \
            and (request.state == queued_starts.QUEUED or (request.lease_until or 0) < now):
        if finish(request, queued_starts.FAILED, "deadline_exceeded", DEADLINE_DETAIL,
                  (queued_starts.QUEUED, queued_starts.STARTING)):
            left_queue(request)
        return queued_starts.get(request.request_id) or request
    return request


def give_place_back(request: QueuedStart) -> bool:
    """A queued start whose place the queue has passed would never be tried (answered 202, served by nobody, failed
    only at its deadline). It must not happen; if it does, the start takes a new place at the tail. False when it
    had moved on meanwhile (the read was stale): the new number is marked gone, so the queue passes it."""
    agent = request.agent
    seq = agent_queue.append(agent).tail
    if queued_starts.move_place(request, seq, agent_queue.entry_put(agent, seq, request.request_id)):
        count("QueuedStartsStranded")
        logger.error("a queued start's place had been passed: it waits at the tail again",
                     extra={"request_id": request.request_id, "old_seq": request.seq, "seq": seq})
        return True
    agent_queue.mark_gone(agent, seq)
    return False


def left_queue(request: QueuedStart) -> None:
    if request.seq is not None:
        agent_queue.mark_gone(request.agent, request.seq)
