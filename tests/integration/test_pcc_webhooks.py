"""POST /pcc/webhooks (docs/operations.md): Pipecat Cloud's organisation webhooks, verified fail-closed, handled once
per delivery id. The key-rotation loop runs end to end: the emulator's key changes, the gateway's cached key fails,
the `api_key.rotated` webhook makes it read Secrets Manager again."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from standardwebhooks.webhooks import Webhook

from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_start import assert_error, body
from tests.support import new_user, outbox_events

SECRET = "whsec_" + base64.b64encode(b"pipecat cloud webhook secret 32b").decode()


@pytest.fixture()
def hooks(gateway: Gateway, configure_stage: Callable[..., None], stack: dict[str, Any]) -> Iterator[Gateway]:
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    original = secrets.get_secret_value(SecretId=name)["SecretString"]
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps({**json.loads(original),
                                                                     "pcc_webhook_secret": SECRET}))
    configure_stage()
    try:
        yield gateway
    finally:
        secrets.put_secret_value(SecretId=name, SecretString=original)


def deliver(gateway: Gateway, event_type: str, data: Any = None, *, webhook_id: str | None = None,
            secret: str = SECRET, at: datetime | None = None, prefix: str = "webhook",
            body_bytes: bytes | None = None) -> Any:
    payload = body_bytes if body_bytes is not None else json.dumps(
        {"event_type": event_type, "org": "acme", "created_at": "2026-12-07T10:00:00Z", "data": data or {}}).encode()
    msg_id = webhook_id or f"msg_{time.time_ns()}"
    moment = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=moment, data=payload)
    headers = {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(int(moment.timestamp())),
               f"{prefix}-signature": signature}
    return gateway.request("POST", "/pcc/webhooks", body=payload, headers=headers)


def test_a_rotated_key_is_read_again_when_pipecat_cloud_says_so(hooks: Gateway, emulator: EmulatorServer,
                                                                 stack: dict[str, Any]) -> None:
    user = new_user()
    first = hooks.start(user, {"transport": "daily"})
    assert first.status_code == 200  # the key is cached now
    hooks.request("DELETE", f"/sessions/{body(first)['sessionId']}", user=user)
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    current = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
    old_key, emulator.org.public_key = emulator.org.public_key, "pk_rotated_by_the_operator"
    try:
        secrets.put_secret_value(SecretId=name, SecretString=json.dumps({**current,
                                                                         "public_key": emulator.org.public_key}))
        assert_error(hooks.start(user, {"transport": "daily"}), 502, "upstream_auth_failed")  # the cached key
        answer = deliver(hooks, "api_key.rotated", {"key_id": "k1", "name": "default", "type": "public"})
        assert answer.status_code == 200 and body(answer) == {"status": "handled"}
        assert hooks.start(user, {"transport": "daily"}).status_code == 200  # read again: the new key
    finally:
        emulator.org.public_key = old_key


def test_forged_stale_unsigned_or_secretless_deliveries_change_nothing(hooks: Gateway, stack: dict[str, Any],
                                                                       configure_stage: Callable[..., None],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.operations import pcc_webhooks

    dropped: list[int] = []
    monkeypatch.setattr(pcc_webhooks, "reset_secret_cache", lambda: dropped.append(1))
    other = "whsec_" + base64.b64encode(b"another secret of thirty-two b..").decode()
    refusals = [
        deliver(hooks, "api_key.deleted", secret=other),  # another key
        deliver(hooks, "api_key.deleted", at=datetime.now(UTC) - timedelta(minutes=10)),  # stale
        deliver(hooks, "api_key.deleted", at=datetime.now(UTC) + timedelta(minutes=10)),  # from the future
        hooks.request("POST", "/pcc/webhooks", json_body={"event_type": "api_key.deleted", "data": {}}),  # unsigned
    ]
    for answer in refusals:
        assert_error(answer, 401, "invalid_signature")
    assert_error(deliver(hooks, "api_key.deleted", body_bytes=b'{"event_type": "x", "pad": "' + b"x" * 70_000
                         + b'"}'), 413, "request_too_large")
    assert_error(deliver(hooks, "", body_bytes=b'{"no_event_type": true}'), 400, "invalid_webhook")
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    current = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps(
        {k: v for k, v in current.items() if k != "pcc_webhook_secret"}))
    configure_stage()
    assert_error(deliver(hooks, "api_key.deleted"), 401, "invalid_signature")  # no secret: nothing verifies
    assert dropped == []


def test_a_delivery_is_handled_once_and_both_header_spellings_verify(hooks: Gateway,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.operations import pcc_webhooks

    dropped: list[int] = []
    monkeypatch.setattr(pcc_webhooks, "reset_secret_cache", lambda: dropped.append(1))
    webhook_id = f"msg_once_{time.time_ns()}"
    first = deliver(hooks, "api_key.rotated", webhook_id=webhook_id)
    again = deliver(hooks, "api_key.rotated", webhook_id=webhook_id, prefix="svix")  # retried, svix- headers
    assert body(first) == {"status": "handled"} and body(again) == {"status": "duplicate"}
    assert dropped == [1]
    assert body(deliver(hooks, "api_key.deleted", prefix="svix")) == {"status": "handled"} and dropped == [1, 1]


def test_an_event_type_not_acted_on_is_acknowledged_and_ignored(hooks: Gateway) -> None:
    for event_type in ("deployment.updated", "org.trial_ended", "something.new"):
        answer = deliver(hooks, event_type, {"service_name": "my-agent"})
        assert answer.status_code == 200 and body(answer) == {"status": "ignored"}


def test_a_bot_no_record_claims_is_stopped_once_past_the_grace_without_waiting_for_the_sweep(
        hooks: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    """Pipecat Cloud announces two bots started outside our records (the emulator's prefilled sessions) and one
    we started: ours is confirmed; the one past the grace is stopped at once (its check is due: no delay); the young
    one's check waits, and is not stopped when handled early. Counted at the emulator."""
    from chalicelib.store import session_records
    from chalicelib.upkeep import messages
    from tests.integration.test_capacity_queue import drain

    user = new_user()
    ours = body(hooks.start(user, {"transport": "daily"}))["sessionId"]
    old, young = emulator_admin(emulator, "agents/my-agent/prefill", {"ends_in": [3600, 3600]})["sessions"]
    long_ago = datetime.now(UTC) - timedelta(minutes=30)
    for session_id, started in ((ours, datetime.now(UTC)), (old, long_ago), (young, datetime.now(UTC))):
        envelope = {"event_type": "session.started", "org": "acme", "created_at": started.isoformat(),
                    "data": {"session_id": session_id, "service": "my-agent", "transport": "daily"}}
        answer = deliver(hooks, "session.started", body_bytes=json.dumps(envelope).encode())
        assert body(answer) == {"status": "handled"}
    drain(hooks, queue, until=lambda: old not in emulator.org.active_session_ids(), timeout=60)
    assert old not in emulator.org.active_session_ids()  # stopped: due at once (30 minutes past the grace)
    assert {ours, young} <= emulator.org.active_session_ids()
    record = session_records.get_session(ours)
    assert record is not None  # ours was confirmed, not checked
    young_check = json.dumps({"agent": "my-agent", "check_session": young, "due": int(time.time()) + 300})
    assert messages.handle(young_check) == {"session_check": "not_due"}  # its delayed check, handled early
    assert young in emulator.org.active_session_ids()


def test_a_spend_threshold_becomes_a_lifecycle_event(hooks: Gateway) -> None:
    def thresholds() -> list[Any]:
        return [e for e in outbox_events(None) if e["type"] == "account.spend_threshold"]

    before = len(thresholds())
    webhook_id = f"msg_threshold_{time.time_ns()}"
    data = {"percent": 90, "current_spend_cents": 9000, "limit_cents": 10000}
    assert body(deliver(hooks, "spend.threshold_reached", data, webhook_id=webhook_id)) == {"status": "handled"}
    assert body(deliver(hooks, "spend.threshold_reached", data, webhook_id=webhook_id)) == {"status": "duplicate"}
    found = thresholds()[before:]
    assert len(found) == 1 and found[0]["agent"] == "*" and found[0]["userId"] is None
    assert found[0]["data"] == {"percent": 90, "currentSpendCents": 9000, "limitCents": 10000}


def test_a_session_announced_before_its_start_was_recorded_is_confirmed_not_stopped(
        hooks: Gateway, emulator: EmulatorServer, queue: dict[str, Any], table: Any) -> None:
    """Pipecat Cloud may announce a session before its start's answer reaches us (the emulator does, from another
    thread): the announcement finds no record, and the first look at it, seconds later, finds the record the start
    wrote meanwhile and confirms it as of the announcement. The bot is never stopped."""
    from chalicelib.store import session_records
    from chalicelib.store.session_records import SessionRecord
    from tests.integration.test_capacity_queue import drain

    [early] = emulator_admin(emulator, "agents/my-agent/prefill", {"ends_in": [3600]})["sessions"]
    announced = datetime.now(UTC).replace(microsecond=0)
    envelope = {"event_type": "session.started", "org": "acme", "created_at": announced.isoformat(),
                "data": {"session_id": early, "service": "my-agent", "transport": "daily"}}
    assert body(deliver(hooks, "session.started", body_bytes=json.dumps(envelope).encode())) == {"status": "handled"}
    record = session_records.get_session(early)
    assert record is None  # the start's answer has not arrived yet
    table.put_item(Item=SessionRecord.new(user_id=new_user(), session_id=early, agent="my-agent", transport="daily",
                                          ttl_seconds=3600).to_item())  # ... now it has

    def confirmed() -> bool:
        item = table.get_item(Key={"PK": f"SESSION#{early}", "SK": "META"}).get("Item") or {}
        return bool(item.get("pcc_confirmed_at"))

    drain(hooks, queue, until=confirmed, timeout=60)
    item = table.get_item(Key={"PK": f"SESSION#{early}", "SK": "META"})["Item"]
    assert item["pcc_confirmed_at"] == announced.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert early in emulator.org.active_session_ids()  # claimed: never stopped
