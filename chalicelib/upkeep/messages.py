"""The worker queue's messages, each to its handler: a session check (chalicelib.store.session_checks) to the orphan
rule, anything else to the dispatcher's wake-up (chalicelib.start.worker). Raises on a malformed check (redelivered,
then the DLQ)."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.start import worker
from chalicelib.upkeep import orphans


def handle(body: str) -> Any:
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    if isinstance(message, dict) and "check_session" in message:
        agent, session_id, due = message.get("agent"), message.get("check_session"), message.get("due")
        announced = message.get("announced")
        if not (isinstance(agent, str) and isinstance(session_id, str) and isinstance(due, int)
                and (announced is None or isinstance(announced, int))):
            raise ValueError("a session check names its agent, session and due time")
        return {"session_check": orphans.check_unclaimed(agent, session_id, due, announced=announced)}
    return worker.handle_wake(message)
