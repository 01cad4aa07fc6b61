"""Lifecycle events (chalicelib/store/outbox.py, chalicelib/events): every state change records exactly one event in
its own transaction, a refused change records none, and the outbox's stream delivers each to EventBridge and to a
signed webhook, at least once, in order per session, parking what a sink will not take in the events DLQ.

Counted from the sources of truth: the events table (what was recorded), the emulator (what bots ran, when they
ended), the webhook receiver and an SQS queue behind an EventBridge rule (what was delivered)."""

from __future__ import annotations

import base64
import json
import math
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from chalicelib.events import delivery, sinks
from chalicelib.sessions.service import end_session
from chalicelib.start import queued_start
from chalicelib.store import queued_starts, session_records
from infra.pcc_emulator import EmulatorServer
from infra.sqs_poller import StreamPoller, scheduled_event
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_start import body
from tests.support import new_user, outbox_events


class Receiver:
    """The app's webhook endpoint: records what it is sent; answers 500 to the next `failing` requests."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.failing = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, data))
                    fail = receiver.failing > 0
                    receiver.failing -= 1 if fail else 0
                self.send_response(500 if fail else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/pipecat"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(data) for _, data in self.received]

    def stop(self) -> None:
        self.server.shutdown()


class Events:
    """The delivery path as deployed: the stream's batches to the deliver_events handler, two sinks, a DLQ."""

    def __init__(self, gateway: Gateway, outputs: dict[str, str], receiver: Receiver, secret: str) -> None:
        self.gateway, self.outputs, self.receiver, self.secret = gateway, outputs, receiver, secret
        self.poller = StreamPoller(gateway.app, outputs["EventsStreamArn"])
        self.sqs = boto3.client("sqs")
        self.table = boto3.resource("dynamodb").Table(outputs["EventsTableName"])
        # EventBridge -> a queue this test reads (the rule a user would write: everything from the gateway)
        name = f"events-{new_user()}"
        self.bus_queue = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.bus_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"]
        bridge = boto3.client("events")
        bridge.put_rule(Name=name, EventBusName=outputs["EventBusName"],
                        EventPattern=json.dumps({"source": ["pipecat-gateway"]}))
        bridge.put_targets(Rule=name, EventBusName=outputs["EventBusName"], Targets=[{"Id": "q", "Arn": arn}])
        self.poller.skip_to_latest()  # the stream is shared by the session's tests

    def pump(self) -> int:
        handled = 0
        while (batch := self.poller.poll_once()) > 0:
            handled += batch
        return handled

    def recorded(self, user: str) -> list[dict[str, Any]]:
        """The events the outbox holds for `user`, in the order they were written."""
        return outbox_events(user)

    def from_bus(self) -> list[dict[str, Any]]:
        found = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.bus_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.bus_queue, ReceiptHandle=message["ReceiptHandle"])

    def dead_lettered(self) -> list[dict[str, Any]]:
        found = []
        url = self.outputs["EventsDeadLetterQueueUrl"]
        while True:
            messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture()
def events(stack: dict[str, Any], app_env: Gateway, configure_stage: Any, receiver: Receiver,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Events]:
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    original = secrets.get_secret_value(SecretId=name)["SecretString"]
    webhook_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps({**json.loads(original),
                                                                     "events_webhook_secret": webhook_secret}))
    monkeypatch.setattr(delivery, "BACKOFF_FIRST_SECONDS", 0.01)
    configure_stage(EVENTS_WEBHOOK_URL=receiver.url)
    sinks.reset_sinks()
    try:
        yield Events(app_env, stack["outputs"], receiver, webhook_secret)
    finally:
        secrets.put_secret_value(SecretId=name, SecretString=original)
        sinks.reset_sinks()


def started(gateway: Gateway, user: str) -> str:
    response = gateway.start(user, {"transport": "daily"})
    assert response.status_code == 200, response.body
    return str(response.headers["X-Session-Id"])


def by_id(found: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in found:
        counts[event["id"]] = counts.get(event["id"], 0) + 1
    return counts


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_each_change_is_one_event_delivered_signed_to_both_sinks_in_order(
        events: Events, emulator: EmulatorServer) -> None:
    gateway, user = events.gateway, new_user()
    stopped = started(gateway, user)
    assert gateway.request("DELETE", f"/sessions/{stopped}", user=user).status_code == 200
    assert gateway.request("DELETE", f"/sessions/{stopped}", user=user).status_code == 200  # no change: no event
    ended = started(gateway, user)
    assert emulator.org.end_session(ended)
    details = body(gateway.request("GET", f"/sessions/{ended}", user=user))
    assert details["status"] == "ended"
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    queued = gateway.start(user, {"transport": "daily"})
    assert queued.status_code == 202, queued.body
    request_id = body(queued)["requestId"]
    assert gateway.request("DELETE", f"/start/{request_id}", user=user).status_code == 200

    recorded = events.recorded(user)
    assert [(e["type"], e.get("sessionId") or e.get("requestId")) for e in recorded] == [
        ("session.started", stopped), ("session.stopped", stopped), ("session.started", ended),
        ("session.ended", ended), ("start.queued", request_id), ("start.cancelled", request_id)]
    assert all(e["userId"] == user and e["agent"] == "my-agent" for e in recorded)
    assert recorded[0]["data"] == {"transport": "daily", "queued": False}
    assert recorded[1]["data"]["reason"] == "stopped_by_user"  # with Pipecat Cloud's details, read after the stop
    assert recorded[1]["data"]["completionStatus"] == "STOPPED_BY_API" and recorded[1]["data"]["durationSeconds"] >= 0
    assert recorded[5]["data"]["code"] == "cancelled"
    # session.ended carries Pipecat Cloud's view of the session; its duration to the second
    bot = emulator.org.sessions[ended]
    ended_data = recorded[3]["data"]
    assert ended_data["completionStatus"] == "HTTP_COMPLETED" and ended_data["reason"] == "HTTP_COMPLETED"
    assert ended_data["durationSeconds"] == math.ceil(_epoch(ended_data["endedAt"]) - _epoch(ended_data["createdAt"]))
    assert abs(ended_data["durationSeconds"] - (bot.ended_at - bot.created_at)) <= 1

    assert events.pump() >= len(recorded)
    ids = [e["id"] for e in recorded]
    hooked = [e for e in events.receiver.events() if e["userId"] == user]
    assert [e["id"] for e in hooked] == ids  # each once, in the order they happened
    assert hooked == recorded
    bus = [e for e in events.from_bus() if e["detail"]["userId"] == user]
    assert [e["detail"]["id"] for e in bus] == ids
    assert {(e["source"], e["detail-type"]) for e in bus} == {("pipecat-gateway", e["type"]) for e in recorded}
    # a receiver verifies each with the library a user would; a changed byte or another secret fails
    webhook = Webhook(events.secret)
    for headers, data in events.receiver.received:
        assert webhook.verify(data, headers) == json.loads(data)
        assert headers["webhook-id"] == json.loads(data)["id"]
        with pytest.raises(WebhookVerificationError):
            webhook.verify(data.replace(b'"agent"', b'"agenT"'), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()).verify(data, headers)
    assert events.dead_lettered() == []


def test_a_refused_change_records_no_event(events: Events, emulator: EmulatorServer) -> None:
    gateway, user = events.gateway, new_user()
    session_id = started(gateway, user)
    record = session_records.get_session(session_id)
    assert record is not None
    assert end_session(record, session_records.STOPPED, "stopped_by_user", None)
    assert not end_session(record, session_records.STOPPED, "stopped_by_user", None)  # already ended
    assert not end_session(record, session_records.ENDED, "HTTP_COMPLETED", {"endedAt": "x"})
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    queued = body(gateway.start(user, {"transport": "daily"}))
    request = queued_starts.get(queued["requestId"])
    assert request is not None
    assert queued_start.finish(request, queued_starts.CANCELLED, "cancelled", "x",
                                                 (queued_starts.QUEUED,))
    for state in (queued_starts.FAILED, queued_starts.CANCELLED):  # it left `queued`: refused
        assert not queued_start.finish(request, state, "x", "x", (queued_starts.QUEUED,))
    assert [e["type"] for e in events.recorded(user)] == [
        "session.started", "session.stopped", "start.queued", "start.cancelled"]
    events.pump()
    assert [e["type"] for e in events.receiver.events() if e["userId"] == user] == [
        "session.started", "session.stopped", "start.queued", "start.cancelled"]


def test_a_delivery_that_dies_midway_is_handed_over_again_and_nothing_is_lost(
        events: Events, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, user = events.gateway, new_user()
    for _ in range(3):
        session_id = started(gateway, user)
        assert gateway.request("DELETE", f"/sessions/{session_id}", user=user).status_code == 200
    recorded = [e["id"] for e in events.recorded(user)]
    assert len(recorded) == 6
    real_send = sinks.WebhookSink.send
    sent: list[str] = []

    def dies_at_the_third(self: Any, event: Any, data: str) -> None:
        if len(sent) == 2:
            raise MemoryError("the function died")  # not a sink failure: the invocation itself ends
        real_send(self, event, data)
        sent.append(event.id)

    monkeypatch.setattr(sinks.WebhookSink, "send", dies_at_the_third)
    assert events.poller.poll_once() == 0  # the batch failed: its checkpoint did not move
    monkeypatch.setattr(sinks.WebhookSink, "send", real_send)
    events.pump()
    delivered = by_id([e for e in events.receiver.events() if e["userId"] == user])
    assert set(delivered) == set(recorded)  # every event arrived ...
    assert [delivered[i] for i in recorded] == [2, 2, 1, 1, 1, 1]  # ... the two before the crash twice (same ids)
    assert by_id([e["detail"] for e in events.from_bus() if e["detail"]["userId"] == user]) == {
        i: (2 if n < 3 else 1) for n, i in enumerate(recorded)}  # EventBridge took the first three before it


def stopped_while_the_webhook_is_down(events: Events) -> tuple[str, list[dict[str, Any]]]:
    """A user's session started and stopped (two events recorded) while the webhook answers 500 to everything."""
    gateway, user = events.gateway, new_user()
    session_id = started(gateway, user)
    assert gateway.request("DELETE", f"/sessions/{session_id}", user=user).status_code == 200
    events.receiver.failing = 10_000
    return user, events.recorded(user)


def test_a_sink_that_keeps_failing_parks_its_events_in_the_dlq_and_the_other_sink_gets_all(
        events: Events, capsys: Any) -> None:
    user, recorded = stopped_while_the_webhook_is_down(events)
    capsys.readouterr()
    events.pump()
    metrics: dict[tuple[str, str], float] = {}
    for line in capsys.readouterr().out.splitlines():  # the EMF records: one per metric and sink per batch
        if '"_aws"' in line:
            record = json.loads(line)
            for name in ("EventsDelivered", "EventsFailed"):
                if name in record:
                    metrics[name, record["sink"]] = metrics.get((name, record["sink"]), 0) + sum(record[name])
    assert metrics == {("EventsDelivered", "eventbridge"): len(recorded), ("EventsFailed", "webhook"): len(recorded)}
    attempts = int(os.environ.get("EVENTS_DELIVERY_ATTEMPTS", "4"))
    assert len(events.receiver.received) == attempts  # the first event's tries; then the sink is skipped
    parked = events.dead_lettered()
    assert [(p["sink"], p["event"]) for p in parked] == [("webhook", e) for e in recorded]
    assert parked[0]["error"] == "webhook answered 500"
    assert [e["detail"]["id"] for e in events.from_bus() if e["detail"]["userId"] == user] == [
        e["id"] for e in recorded]


def test_a_webhook_without_its_signing_secret_sends_nothing(events: Events, stack: dict[str, Any]) -> None:
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    value = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps(
        {k: v for k, v in value.items() if k != "events_webhook_secret"}))
    from chalicelib.platform import secrets as secrets_store

    secrets_store.reset_secret_cache()
    user = new_user()
    started(events.gateway, user)
    events.pump()
    assert events.receiver.received == []
    parked = events.dead_lettered()
    assert [p["event"]["type"] for p in parked] == ["session.started"]
    assert "events_webhook_secret" in parked[0]["error"]


def test_calls_caps_orphans_failures_and_abandonment_are_each_one_event(
        phone: Any, events: Events, emulator: EmulatorServer) -> None:
    """The transitions the schedule and telephony make: `call.started` beside the call's `session.started`,
    `session.capped` at the hard cap, `session.orphan_stopped` (no user), `start.abandoned`, `start.failed`."""
    import time

    from chalicelib.upkeep import orphans, queue_sweep, reconcile
    from tests.integration.test_telephony import OWNER, new_call, twilio_call

    gateway = events.gateway
    already = {e["id"] for e in events.recorded(OWNER)}  # the telephony owner's events of earlier tests
    phone(TELEPHONY_WEBSOCKET_AUTH="token")
    call = new_call()
    assert twilio_call(gateway, call).status_code == 200
    [call_session] = [s for s in emulator.org.sessions.values() if s.body.get("telephony", {}).get("call_id")
                      == call["CallSid"]]
    user = new_user()
    capped = started(gateway, user)
    assert reconcile.run(now=time.time() + 7200 + 60)["stopped"] >= 2
    emulator_admin(emulator, "faults", {"start": [{"when": "after", "kind": "502"}]})
    assert gateway.start(new_user(), {"transport": "daily"}).status_code == 502  # a bot nobody recorded
    [orphan] = emulator.org.active_session_ids()
    assert orphans.sweep(now=time.time() + 3600)["orphans_stopped"] == 1
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    abandoned = body(gateway.start(user, {"transport": "daily"}))["requestId"]
    assert queue_sweep.sweep(now=time.time() + 60)["abandoned"] >= 1
    failed = body(gateway.start(user, {"transport": "daily"}))["requestId"]
    assert queue_sweep.sweep(now=time.time() + 3600)["expired"] >= 1

    caller = [(e["type"], e.get("callId"), e["data"]) for e in events.recorded(OWNER)
              if e.get("sessionId") == call_session.session_id]
    assert caller[:2] == [("session.started", call["CallSid"], {"transport": "websocket", "queued": False}),
                          ("call.started", call["CallSid"], {"provider": "twilio"})]
    assert [(t, c, d["reason"], d["completionStatus"]) for t, c, d in caller[2:]] == [
        ("session.capped", call["CallSid"], "hard_cap", "STOPPED_BY_API")]
    assert [(e["type"], e.get("sessionId") or e.get("requestId"), e["data"].get("code")) for e in
            events.recorded(user)] == [
        ("session.started", capped, None), ("session.capped", capped, None),
        ("start.queued", abandoned, None), ("start.abandoned", abandoned, "abandoned"),
        ("start.queued", failed, None), ("start.failed", failed, "deadline_exceeded")]
    [orphaned] = [e for e in events.recorded("-") if e.get("sessionId") == orphan]
    assert orphaned["type"] == "session.orphan_stopped" and orphaned["userId"] is None
    assert orphaned["data"]["createdAt"] == emulator.org.sessions[orphan].summary("emu-org")["createdAt"]
    events.pump()
    delivered = by_id(events.receiver.events())
    everything = [e for e in events.recorded(OWNER) if e["id"] not in already] + events.recorded(user) + [orphaned]
    assert [delivered.get(e["id"]) for e in everything] == [1] * len(everything)  # each delivered once


def test_end_detection_lists_each_agent_once_and_reports_every_end_once(
        events: Events, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The detect_ended schedule (every minute): one private-API listing per agent with active records, not one
    call per session; a details call only for a session that is gone; each end recorded once, however often
    it runs (a second run, or the 5-minute reconcile meanwhile, finds nothing more)."""
    from chalicelib.pcc import client as pcc_client
    from chalicelib.upkeep import reconcile

    gateway, user = events.gateway, new_user()
    other = new_user()
    daily = [started(gateway, user) for _ in range(2)] + [started(gateway, other)]
    ws = gateway.start(user, {"agent": "open-ws", "transport": "websocket"})
    assert ws.status_code == 200, ws.body
    calls: list[tuple[str, str]] = []
    real_list, real_get = pcc_client.list_sessions, pcc_client.get_session

    def listing(agent: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(("list", agent))
        return real_list(agent, *args, **kwargs)

    def details(agent: str, session_id: str, key: str) -> Any:
        calls.append(("details", session_id))
        return real_get(agent, session_id, key)

    monkeypatch.setattr(pcc_client, "list_sessions", listing)
    monkeypatch.setattr(pcc_client, "get_session", details)
    assert emulator.org.end_session(daily[0]) and emulator.org.end_session(daily[2])
    summary = gateway.app.handler_map["detect_ended"](scheduled_event("detect_ended"), None)
    assert summary["ended"] == 2, summary
    assert sorted(c for c in calls if c[0] == "list") == [("list", "my-agent"), ("list", "open-ws")]
    assert sorted(c[1] for c in calls if c[0] == "details") == sorted([daily[0], daily[2]])
    assert reconcile.detect_ended()["ended"] == 0 and reconcile.run()["ended"] == 0
    ended = [e for e in events.recorded(user) + events.recorded(other) if e["type"] == "session.ended"]
    assert sorted(e["sessionId"] for e in ended) == sorted([daily[0], daily[2]])
    assert all(e["data"]["completionStatus"] == "HTTP_COMPLETED" and e["data"]["durationSeconds"] >= 0
               for e in ended)


def test_an_unreadable_outbox_item_is_parked_and_never_blocks_the_stream(events: Events) -> None:
    """Our own writes are always valid events; an item that is not (written by hand, a bad migration) must not
    hold the stream: Lambda would hand the same batch over for ever and no later event would arrive."""
    user = new_user()
    events.table.put_item(Item={"PK": f"EVENTS#{user}", "SK": "2026-12-06T00:00:00.000000Z#bad", "type": "event",
                                "event": json.dumps({"id": "evt_x", "type": "session.finished"})})
    session_id = started(events.gateway, user)
    events.pump()
    assert [e["sessionId"] for e in events.receiver.events() if e["userId"] == user] == [session_id]
    parked = events.dead_lettered()
    assert [(p["sink"], p["error"]) for p in parked] == [(None, "not a lifecycle event")]
    assert "session.finished" in parked[0]["text"]


def test_parked_events_are_sent_again_once_the_endpoint_is_back(events: Events) -> None:
    """infra/redrive_events.py: each parked event goes again to the sink that did not take it, and leaves the DLQ
    only once taken; one that fails again stays for the next run."""
    from chalicelib.events.redrive import redrive

    user, recorded = stopped_while_the_webhook_is_down(events)
    events.pump()
    events.from_bus()
    events.receiver.received.clear()
    summary = redrive()  # the endpoint is still down: nothing leaves the DLQ
    assert summary["received"] == len(recorded) and summary["failed"] == len(recorded), summary
    events.receiver.failing = 0
    events.receiver.received.clear()
    summary = redrive()
    assert summary == {"received": len(recorded), "redelivered": len(recorded), "failed": 0, "left": 0}, summary
    assert [e for e in events.receiver.events() if e["userId"] == user] == recorded
    assert events.dead_lettered() == [] and events.from_bus() == []  # EventBridge had them already: not sent twice
