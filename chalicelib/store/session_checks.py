"""A session Pipecat Cloud announced (`session.started`) that no record of ours claimed yet, checked again once it is
past the orphan grace: a message on the worker's queue, delayed until then (SQS delays at most MAX_DELAY_SECONDS;
a later check is sent again with what is left), `{"agent", "check_session", "due", "announced"}`. `first_look`: the
first delivery's delay instead (Pipecat Cloud may announce a session before its start's answer reached us and the
record was written: a first look soon after finds it claimed)."""

from __future__ import annotations

import json

from chalicelib.platform.aws import client, wake_queue_url

MAX_DELAY_SECONDS = 900


def send(agent: str, session_id: str, due: int, now: float, *, announced: int | None = None,
         first_look: int | None = None) -> None:
    delay = max(0, min(MAX_DELAY_SECONDS, int(due - now) + 1))
    delay = min(delay, first_look) if first_look is not None else delay
    message = {"agent": agent, "check_session": session_id, "due": due, "announced": announced}
    client("sqs").send_message(QueueUrl=wake_queue_url(), DelaySeconds=delay, MessageBody=json.dumps(message))
