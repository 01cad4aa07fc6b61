"""The queue worker's side of a dispatcher run: a wake-up message becomes one run for its agent, under the agent's
lease (chalicelib.store.agent_queue), with its watchdog armed first (a run killed mid-way is replaced just after its
lease would expire), handing over to a fresh invocation when its time is up and starts still wait. The run itself
and its watchdog: chalicelib.start.dispatcher."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from chalicelib.platform.observability import logger, untag_request
from chalicelib.platform.settings import get_settings
from chalicelib.start import attempt as attempts
from chalicelib.start.dispatcher import Run, arm_watchdog
from chalicelib.store import agent_queue


def run(agent: str, budget_seconds: float | None = None, *, freed: bool = False) -> dict[str, int]:
    """One dispatcher run for `agent` (a worker invocation; `freed`: started because the gateway freed
    capacity, so the head is tried at once). Returns what it did."""
    settings = get_settings()
    owner = uuid.uuid4().hex
    summary = {"started": 0, "retried": 0, "failed": 0, "skipped": 0, "abandoned": 0}
    state = agent_queue.acquire(agent, owner, attempts.LEASE_SECONDS)
    if state is None:
        return {**summary, "busy": 1}  # another dispatcher serves this agent
    if state.waiting():
        arm_watchdog(agent)
    try:
        with ThreadPoolExecutor(max_workers=settings.queue.dispatch_max_in_flight,
                                thread_name_prefix="dispatch") as pool:
            Run(settings, agent, owner, state, pool, summary).loop(
                budget_seconds or settings.queue.dispatch_run_seconds, freed)
    except Exception:
        agent_queue.release(agent, owner)
        try:
            agent_queue.send_wake(agent, delay_seconds=5)  # resume soon, not after the message's visibility
        except Exception:  # noqa: BLE001 - the reconcile schedule restarts idle queues
            logger.warning("could not schedule the dispatcher's resumption", extra={"agent": agent})
        raise
    agent_queue.release(agent, owner)
    after = agent_queue.read(agent)
    if after.waiting() and not after.leased(time.time()) and not summary.get("gated"):
        agent_queue.send_wake(agent)  # run time spent, or work arrived as the lease was let go: hand over
    return summary


def handle_wake(message: object) -> dict[str, int]:
    """One wake-up, as the worker queue's message parsed (chalicelib.upkeep.messages): `{"agent": ..., "freed": bool}`
    (any other keys are ignored). Raises on a malformed one (redelivered, then the DLQ)."""
    if not isinstance(message, dict) or not isinstance(message.get("agent"), str):
        logger.error("malformed queue message: left for the DLQ")
        raise ValueError("a queue message names its agent")
    untag_request("user_id")  # a dispatcher run serves many users (where a thread also served a request)
    agent = message["agent"]
    if agent not in get_settings().pcc.agents:
        logger.error("queue message for an unknown agent: dropped", extra={"agent": agent[:100]})
        return {}
    return run(agent, freed=message.get("freed") is True)
