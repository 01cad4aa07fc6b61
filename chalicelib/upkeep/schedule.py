"""The reconcile schedule's run, step by step: each step runs on its own, and a step that fails is logged and
counted (`ScheduleStepFailed`, its name in `<step>_failed`) and never stops the others. So an SQS outage that
breaks the queue sweep (it sends wake-ups) does not delay the orphan sweep, which needs only Pipecat Cloud and
DynamoDB. One order is kept: slots of unknown starts are recovered only after a successful orphan sweep, so a
slot is never freed while a bot that might hold it runs."""

from __future__ import annotations

from collections.abc import Callable

from chalicelib.platform.observability import count, logger
from chalicelib.platform.settings import get_settings
from chalicelib.store import intents
from chalicelib.upkeep import orphans, queue_sweep, reconcile

Step = Callable[[], dict[str, int]]


def _steps() -> list[tuple[str, Step]]:
    return [
        ("reconcile", reconcile.run),
        ("queue", lambda: {f"queue_{k}": v for k, v in queue_sweep.sweep().items()}),
        ("orphans", orphans.sweep),
        ("intents", lambda: {"intents_recovered": intents.recover(get_settings().orphans.grace_seconds)}),
    ]


def run() -> dict[str, int]:
    summary: dict[str, int] = {}
    for name, step in _steps():
        if name == "intents" and summary.get("orphans_failed"):
            summary["intents_skipped"] = 1  # no sweep this run: a slot's bot may still be running
            continue
        try:
            summary.update(step())
        except Exception:  # noqa: BLE001 - one step's failure must not cost the others
            logger.exception("schedule step failed", extra={"step": name})
            count("ScheduleStepFailed", step=name)
            summary[f"{name}_failed"] = 1
    return summary
