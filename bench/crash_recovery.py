"""Crash -> slot free again: how long a start killed inside the Pipecat Cloud call holds its user's slot,
and how long its bot runs unrecorded.

Each sample: a start whose Lambda dies right after Pipecat Cloud created the bot (no code of ours runs
after that), then the reconcile schedule (orphan sweep, then intent recovery) ticks every 5 minutes at a
random phase against the crash, on a simulated clock: the schedule's period and the orphan grace are
minutes, so waiting for them would take hours. Everything else is real (the emulator, moto, the
handlers). Reported in seconds of that clock, with the bound (lease + grace + interval) and the ratio.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import httpx

from bench.harness import BenchStack, summary

INTERVAL = 300


class LambdaKilled(BaseException):
    pass


def run(samples: int = 20) -> dict[str, Any]:
    stack = BenchStack({"USER_SESSION_LIMIT": "1000"})
    try:
        return _run(stack, samples)
    finally:
        stack.close()


def _run(stack: BenchStack, samples: int) -> dict[str, Any]:
    from chalicelib.pcc import client as pcc_client
    from chalicelib.platform.settings import get_settings
    from chalicelib.store import intents, slots
    from chalicelib.upkeep import orphans

    settings = get_settings()
    real_start = pcc_client.start

    def killed(*args: Any, **kwargs: Any) -> Any:
        real_start(*args, **kwargs)
        raise LambdaKilled

    slot_free: list[float] = []
    bot_stopped: list[float] = []
    for i in range(samples):
        user = f"crash-{i}"
        pcc_client.start = killed  # type: ignore[assignment]
        try:
            stack.invoke("POST", "/start", user=user, body={})
        except LambdaKilled:
            pass
        finally:
            pcc_client.start = real_start  # type: ignore[assignment]
        crash = time.time()
        assert slots.active_slots(user) == 1 and _running(stack)
        tick = crash + random.uniform(0, INTERVAL)
        stopped_at = freed_at = None
        while freed_at is None or stopped_at is None:
            orphans.sweep(now=tick)
            intents.recover(settings.orphans.grace_seconds, now=tick)
            if stopped_at is None and not _running(stack):
                stopped_at = tick - crash
            if freed_at is None and slots.active_slots(user) == 0:
                freed_at = tick - crash
            tick += INTERVAL
        slot_free.append(freed_at)
        bot_stopped.append(stopped_at)
    lease = settings.pcc.connect_timeout + settings.pcc.read_timeout + intents.LEASE_MARGIN_SECONDS
    bound = lease + settings.orphans.grace_seconds + INTERVAL
    slot = summary(slot_free)
    return {
        "samples": samples, "schedule_interval_s": INTERVAL, "orphan_grace_s": settings.orphans.grace_seconds,
        "crash_to_slot_free_s": {**slot, "max": round(max(slot_free), 1)},
        "crash_to_bot_stopped_s": {**summary(bot_stopped), "max": round(max(bot_stopped), 1)},
        "bound_s": round(bound, 1), "max_over_bound": round(max(slot_free) / bound, 3),
    }


def _running(stack: BenchStack) -> bool:
    """Whether the emulator runs any bot (each sample starts from none)."""
    return bool(httpx.get(f"{stack.emulator_url}/_emulator/sessions").json()["active"])


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
