"""The capacity queue's sweep, run by the reconcile schedule: fail requests past their deadline, cancel abandoned
ones, give a place back to a queued start whose place the queue passed, and restart the dispatcher of any agent
whose queue waits with none running (a lost wake-up, a dispatcher that died)."""

from __future__ import annotations

import time

from chalicelib.platform.settings import get_settings
from chalicelib.start import queued_start
from chalicelib.start.capacity_queue import enabled
from chalicelib.store import agent_queue, queued_starts


def sweep(now: float | None = None) -> dict[str, int]:
    """Fail requests past their deadline, cancel abandoned ones, give a place back to a queued start whose place
    the queue passed, and restart the dispatcher of any agent whose queue waits with none running (a lost
    wake-up, a dispatcher that died). Run from the reconcile schedule."""
    now = now or time.time()
    settings = get_settings()
    summary = {"pending": 0, "expired": 0, "abandoned": 0, "stranded": 0, "woken": 0}
    if not enabled():
        return summary
    agents: set[str] = set()
    states: dict[str, agent_queue.QueueState] = {}
    for request in queued_starts.pending():
        summary["pending"] += 1
        if request.state not in (queued_starts.QUEUED, queued_starts.STARTING):
            continue
        before = request.state
        if queued_start.expire_if_overdue(request, now).state != before:
            summary["expired"] += 1
            continue
        if queued_start.abandoned(request, now, settings.queue.queued_abandon_seconds) \
                and queued_start.abandon(request, now, settings.queue.queued_abandon_seconds):
            summary["abandoned"] += 1
            continue
        agents.add(request.agent)
        if request.state == queued_starts.QUEUED:
            if request.agent not in states:  # one read per agent, not per request
                states[request.agent] = agent_queue.read(request.agent)
            state = states[request.agent]
            seq = request.seq
            if seq is not None and (seq < state.head or seq in state.gone) and queued_start.give_place_back(request):
                summary["stranded"] += 1
    for agent in sorted(agents):
        state = agent_queue.read(agent)
        if state.waiting() and not state.leased(now):
            agent_queue.send_wake(agent)
            summary["woken"] += 1
    return summary
