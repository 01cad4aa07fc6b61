"""The capacity queue at its edges: no error is answered for a request that exists, a slot is released exactly
once whatever the dispatcher does meanwhile, and a start nobody waits for never becomes a bot. Counted from
DynamoDB (request states, slot counters) and the emulator's bots."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.platform import dynamo, rate_limits
from chalicelib.start import queued_start
from chalicelib.store import queued_starts, slots
from chalicelib.upkeep import queue_sweep
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_capacity_queue import at_capacity, drain, state
from tests.integration.test_start import assert_error, body
from tests.support import new_user


def requests_of(user: str) -> list[dict[str, Any]]:
    """Every start request DynamoDB holds for the user (the source of truth, not our listing)."""
    table = dynamo.table()
    return list(table.query(IndexName="GSI1", KeyConditionExpression="GSI1PK = :pk",
                            ExpressionAttributeValues={":pk": f"USER#{user}#REQUESTS"})["Items"])


def set_seen(request_id: str, seen_at: float) -> None:
    """As if its owner last asked about the request at `seen_at` (no wall-clock waiting in tests)."""
    dynamo.table().update_item(Key={"PK": f"REQUEST#{request_id}", "SK": "META"},
                                      UpdateExpression="SET seen_at = :s",
                                      ExpressionAttributeValues={":s": int(seen_at)})


def bots_of(emulator: EmulatorServer, user: str) -> int:
    with emulator.org.lock:
        return sum(1 for s in emulator.org.sessions.values() if (s.body or {}).get("user", {}).get("id") == user)


# ------------------------------------------------------------------ 2. ?wait=N: no 429 for a queued start
def test_a_long_poll_without_a_free_seat_answers_the_plain_202(gateway: Gateway, emulator: EmulatorServer,
                                                               queue: dict[str, Any], user: str,
                                                               configure_stage: Callable[..., None]) -> None:
    configure_stage(LONG_POLLS_PER_USER="1")
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    with rate_limits.concurrent(f"longpoll#{user}", 1, 60, kind="too_many_long_polls", what="Long-polls"):
        response = gateway.request("POST", "/start?wait=3", user=user, json_body={"transport": "daily"})
    assert response.status_code == 202, response.body
    data = body(response)
    assert [r["request_id"] for r in requests_of(user)] == [data["requestId"]]  # exactly the one it told us of
    assert gateway.request("DELETE", data["statusUrl"], user=user).status_code == 200  # and it can be cancelled
    assert state(data["requestId"]) == "cancelled" and slots.active_slots(user) == 0


def test_a_long_poll_past_the_status_rate_answers_the_plain_202(gateway: Gateway, emulator: EmulatorServer,
                                                                queue: dict[str, Any], user: str,
                                                                configure_stage: Callable[..., None],
                                                                rate_clock: float) -> None:
    configure_stage(STATUS_RATE_PER_MINUTE="1")
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    rate_limits.take(f"status#{user}", 1, 60, kind="status_rate_limited", what="Status polls")
    response = gateway.request("POST", "/start?wait=3", user=user, json_body={"transport": "daily"})
    assert response.status_code == 202, response.body
    assert [r["request_id"] for r in requests_of(user)] == [body(response)["requestId"]]


def test_a_failed_queued_start_says_which_request_failed(gateway: Gateway, emulator: EmulatorServer,
                                                         queue: dict[str, Any], user: str) -> None:
    rid = at_capacity(emulator, gateway, user)["body"]["requestId"]
    assert gateway.request("DELETE", f"/start/{rid}", user=user).status_code == 200
    answer = gateway.request("GET", f"/start/{rid}", user=user)
    assert_error(answer, 409, "start_cancelled")
    assert body(answer)["requestId"] == rid and body(answer)["reason"] == "cancelled"


# ------------------------------------------------------------------ 3. a slot is released exactly once
def test_cancel_racing_the_dispatchers_claim_and_requeue_releases_the_slot_once(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any], user: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving, injected: the cancel reads `queued`; the dispatcher claims the head (queued ->
    starting), so the cancel's transaction is refused; the dispatcher gets a 429 and requeues it (starting ->
    queued) before the cancel reads it again. The slot must still be given back, once."""
    rid = at_capacity(emulator, gateway, user)["body"]["requestId"]
    assert slots.active_slots(user) == 1
    real_get, reads = queued_starts.get, []

    def get(request_id: str, consistent: bool = True) -> dict[str, Any] | None:
        reads.append(request_id)
        if len(reads) == 2:  # the cancel's re-read after its refused transaction
            assert queued_starts.requeue(rid, 1, time.time(), "pcc_at_capacity")
        found = real_get(request_id, consistent)
        if len(reads) == 1:  # the cancel's first read, then the dispatcher's claim
            assert queued_starts.claim(rid, 1, 70, time.time())
        return found

    monkeypatch.setattr(queued_starts, "get", get)
    response = gateway.request("DELETE", f"/start/{rid}", user=user)
    monkeypatch.undo()
    assert response.status_code == 200, response.body
    assert len(reads) >= 2, "the interleaving was not exercised"
    assert state(rid) == "cancelled"
    assert slots.active_slots(user) == 0
    assert bots_of(emulator, user) == 0


@pytest.mark.parametrize("states", [(queued_starts.QUEUED, queued_starts.STARTING), (queued_starts.STARTING,)])
def test_deadline_and_dispatcher_failures_release_the_slot_once_under_the_same_race(
        gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any], user: str,
        monkeypatch: pytest.MonkeyPatch, states: tuple[str, ...]) -> None:
    """The same fallback serves deadline expiry (queued or starting) and the dispatcher's failures (starting).
    Here the request moves to a state outside `states` and back between the refused write and the re-read."""
    rid = at_capacity(emulator, gateway, user)["body"]["requestId"]
    if states == (queued_starts.STARTING,):
        assert queued_starts.claim(rid, 1, 70, time.time())
    request = queued_starts.get(rid)
    assert request is not None
    table = dynamo.table()
    client = table.meta.client
    real_transact, calls = client.transact_write_items, []

    def transact(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # just before the first try, the state moves away ...
            table.update_item(Key={"PK": f"REQUEST#{rid}", "SK": "META"}, UpdateExpression="SET #s = :x",
                              ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues={":x": "elsewhere"})
            try:
                return real_transact(**kwargs)
            finally:  # ... and comes back before the re-read
                table.update_item(Key={"PK": f"REQUEST#{rid}", "SK": "META"}, UpdateExpression="SET #s = :x",
                                  ExpressionAttributeNames={"#s": "state"},
                                  ExpressionAttributeValues={":x": request.state})
        return real_transact(**kwargs)

    monkeypatch.setattr(client, "transact_write_items", transact)
    assert queued_start.finish(request, queued_starts.FAILED, "deadline_exceeded", "x", states)
    monkeypatch.undo()
    assert len(calls) == 2
    assert state(rid) == "failed" and slots.active_slots(user) == 0


def test_a_drifted_counter_still_lets_the_request_finish(gateway: Gateway, emulator: EmulatorServer,
                                                         queue: dict[str, Any], user: str) -> None:
    rid = at_capacity(emulator, gateway, user)["body"]["requestId"]
    dynamo.table().update_item(Key={"PK": f"USER#{user}", "SK": "ACTIVE_SESSIONS"},
                                      UpdateExpression="SET active = :z", ExpressionAttributeValues={":z": 0})
    request = queued_starts.get(rid)
    assert request is not None
    assert queued_start.finish(request, queued_starts.CANCELLED, "cancelled", "x",
                                                 (queued_starts.QUEUED,))
    assert state(rid) == "cancelled" and slots.active_slots(user) == 0


# ------------------------------------------------------------------ 4. a start nobody waits for is never started
def test_an_abandoned_queued_start_is_cancelled_not_started(gateway: Gateway, emulator: EmulatorServer,
                                                            queue: dict[str, Any],
                                                            configure_stage: Callable[..., None]) -> None:
    configure_stage(QUEUED_ABANDON_SECONDS="30")
    gone, waiting = new_user(), new_user()
    gone_rid = at_capacity(emulator, gateway, gone)["body"]["requestId"]
    waiting_rid = body(gateway.start(waiting, {"transport": "daily"}))["requestId"]
    set_seen(gone_rid, time.time() - 31)  # its owner closed the tab 31 s ago
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(gateway, queue, until=lambda: state(waiting_rid) == "started")
    assert state(gone_rid) == "cancelled"
    record = queued_starts.get(gone_rid)
    assert record is not None and record.error_code == "abandoned"
    assert bots_of(emulator, gone) == 0 and bots_of(emulator, waiting) == 1
    assert slots.active_slots(gone) == 0
    answer = gateway.request("GET", f"/start/{gone_rid}", user=gone)
    assert_error(answer, 409, "start_cancelled")
    assert body(answer)["reason"] == "abandoned"


def test_a_start_whose_owner_polls_is_served(gateway: Gateway, emulator: EmulatorServer, queue: dict[str, Any],
                                             user: str, configure_stage: Callable[..., None]) -> None:
    configure_stage(QUEUED_ABANDON_SECONDS="30")
    rid = at_capacity(emulator, gateway, user)["body"]["requestId"]
    set_seen(rid, time.time() - 31)
    polled = int(time.time())
    assert gateway.request("GET", f"/start/{rid}", user=user).status_code == 202  # the poll counts
    record = queued_starts.get(rid)
    assert record is not None and record.seen_at >= polled
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 5})
    drain(gateway, queue, until=lambda: state(rid) == "started")
    assert bots_of(emulator, user) == 1


def test_a_long_poll_keeps_its_start_alive_until_it_ends(gateway: Gateway, emulator: EmulatorServer,
                                                         queue: dict[str, Any], user: str,
                                                         configure_stage: Callable[..., None]) -> None:
    configure_stage(QUEUED_ABANDON_SECONDS="30")
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    before = time.time()
    response = gateway.request("POST", "/start?wait=1", user=user, json_body={"transport": "daily"})
    assert response.status_code == 202
    record = queued_starts.get(body(response)["requestId"])
    assert record is not None and record.seen_at >= int(before + 1)


def test_the_owner_asking_at_the_last_moment_wins(gateway: Gateway, emulator: EmulatorServer,
                                                  queue: dict[str, Any], user: str,
                                                  configure_stage: Callable[..., None]) -> None:
    """The dispatcher judged the request abandoned from what it read; the owner polled since: no cancel."""
    configure_stage(QUEUED_ABANDON_SECONDS="30")
    rid = at_capacity(emulator, gateway, user)["body"]["requestId"]
    set_seen(rid, time.time() - 31)
    stale = queued_starts.get(rid)
    assert stale is not None and queued_start.abandoned(stale, time.time(), 30)
    assert gateway.request("GET", f"/start/{rid}", user=user).status_code == 202
    assert not queued_start.abandon(stale, time.time(), 30)
    assert state(rid) == "queued" and slots.active_slots(user) == 1


def test_the_sweeper_cancels_abandoned_starts_deep_in_the_queue(gateway: Gateway, emulator: EmulatorServer,
                                                                queue: dict[str, Any],
                                                                configure_stage: Callable[..., None]) -> None:
    configure_stage(QUEUED_ABANDON_SECONDS="30")
    head, deep = new_user(), new_user()
    head_rid = at_capacity(emulator, gateway, head)["body"]["requestId"]
    deep_rid = body(gateway.start(deep, {"transport": "daily"}))["requestId"]
    set_seen(deep_rid, time.time() - 31)
    summary = queue_sweep.sweep()
    assert summary["abandoned"] == 1
    assert state(deep_rid) == "cancelled" and state(head_rid) == "queued"
    assert slots.active_slots(deep) == 0


def test_retry_after_lets_a_polling_client_stay_in_the_queue(gateway: Gateway, emulator: EmulatorServer,
                                                             queue: dict[str, Any], user: str,
                                                             configure_stage: Callable[..., None]) -> None:
    configure_stage(QUEUED_ABANDON_SECONDS="30", RETRY_CAP_SECONDS="10", RETRY_BASE_SECONDS="10")
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 0})
    for _ in range(5):  # a queue deep enough that the ETA is well past the abandonment window
        gateway.start(new_user(), {"transport": "daily"})
    data = body(gateway.start(user, {"transport": "daily"}))
    assert data["etaSeconds"] > 30
    assert data["retryAfter"] <= 10  # a client following it asks at least 3 times per window


def test_abandonment_off_with_zero_and_settings_checked(gateway: Gateway, emulator: EmulatorServer,
                                                        queue: dict[str, Any], user: str,
                                                        configure_stage: Callable[..., None]) -> None:
    configure_stage(QUEUED_ABANDON_SECONDS="0")
    rid = at_capacity(emulator, gateway, user)["body"]["requestId"]
    set_seen(rid, time.time() - 3600)
    assert queue_sweep.sweep()["abandoned"] == 0 and state(rid) == "queued"
    from chalicelib.platform.settings import SettingsError, parse_settings

    with pytest.raises(SettingsError, match="QUEUED_ABANDON_SECONDS"):
        parse_settings({"STAGE": "t", "PCC_AGENTS": "a", "PCC_SECRET_ID": "s", "TABLE_NAME": "t",
                        "AUTH_MODE": "cognito", "QUEUED_ABANDON_SECONDS": "5"})


# ------------------------------------------------------------------ GET /start: find a lost requestId
def test_get_start_lists_the_callers_pending_starts(gateway: Gateway, emulator: EmulatorServer,
                                                    queue: dict[str, Any], user: str) -> None:
    rid = at_capacity(emulator, gateway, user)["body"]["requestId"]
    other = new_user()
    gateway.start(other, {"transport": "daily"})
    listed = body(gateway.request("GET", "/start", user=user))["starts"]
    assert [(s["requestId"], s["status"], s["statusUrl"]) for s in listed] == [(rid, "queued", f"/start/{rid}")]
    before = queued_starts.get(rid)
    assert gateway.request("DELETE", listed[0]["statusUrl"], user=user).status_code == 200
    assert body(gateway.request("GET", "/start", user=user))["starts"] == []
    assert before is not None and before.seen_at is not None
    assert_error(gateway.request("GET", "/start"), 401, "unauthorized")


def test_dynamodb_holds_no_request_after_a_queue_full_refusal(gateway: Gateway, emulator: EmulatorServer,
                                                              queue: dict[str, Any], user: str,
                                                              configure_stage: Callable[..., None]) -> None:
    """An error answered for a start means no request exists for it."""
    configure_stage(MAX_QUEUED="1")
    at_capacity(emulator, gateway, new_user())
    refused = gateway.request("POST", "/start?wait=2", user=user, json_body={"transport": "daily"})
    assert_error(refused, 503, "queue_full")
    assert requests_of(user) == [] and slots.active_slots(user) == 0
