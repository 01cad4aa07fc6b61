"""Start gates (docs/operations.md), driven by Pipecat Cloud's own webhooks and answers, counted at the emulator: a
closed gate refuses new starts before any call, the dispatcher calls Pipecat Cloud for none of the queued starts
(they keep their places), and opening it serves them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.start import worker
from chalicelib.store import queued_starts
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.integration.test_capacity_queue import drain, state
from tests.integration.test_pcc_webhooks import deliver
from tests.integration.test_start import assert_error, body
from tests.support import new_user, outbox_events


def gate_events() -> list[str]:
    return [str(e["type"]) for e in outbox_events(None) if str(e["type"]).startswith("gate.")]


def test_a_spend_limit_closes_starts_within_one_request_and_queued_starts_keep_their_places(
        hooks: Gateway, emulator: EmulatorServer, queue: dict[str, Any]) -> None:
    holder, waiting, late = new_user(), new_user(), new_user()
    emulator_admin(emulator, "agents/my-agent", {"max_agents": 1})
    running = hooks.start(holder, {"transport": "daily"})
    assert running.status_code == 200
    queued = hooks.start(waiting, {"transport": "daily"})
    assert queued.status_code == 202
    request_id = body(queued)["requestId"]
    seq = queued_starts.get(request_id).seq  # type: ignore[union-attr]

    assert body(deliver(hooks, "spend.limit_reached", {"current_spend_cents": 10000, "limit_cents": 10000})) == {
        "status": "handled"}
    calls = emulator.org.start_calls
    refused = hooks.start(late, {"transport": "daily"})
    assert_error(refused, 503, "spend_limit_reached")
    assert refused.headers["Retry-After"] == "60" and "100.00 of 100.00" in body(refused)["detail"]
    assert hooks.request("DELETE", f"/sessions/{body(running)['sessionId']}", user=holder).status_code == 200
    summary = worker.run("my-agent", budget_seconds=3)  # capacity freed, the gate closed
    assert summary.get("gated") == 1 and summary["started"] == 0
    assert emulator.org.start_calls == calls  # not one call while it is closed
    assert state(request_id) == "queued" and queued_starts.get(request_id).seq == seq  # type: ignore[union-attr]

    assert body(deliver(hooks, "spend.limit_cleared", {"previous_limit_cents": 10000})) == {"status": "handled"}
    drain(hooks, queue, until=lambda: state(request_id) == "started")
    assert hooks.start(late, {"transport": "daily"}).status_code in (200, 202)


def test_a_suspended_agent_is_refused_while_another_agent_is_not(hooks: Gateway, emulator: EmulatorServer) -> None:
    user = new_user()
    before = gate_events()
    suspended = {"service_id": "svc_1", "service_name": "my-agent", "region": "us-west",
                 "reason": "trial_exhausted"}
    deliver(hooks, "service.suspended", suspended)
    deliver(hooks, "service.suspended", suspended)  # another delivery: the gate holds the reason once
    calls = emulator.org.start_calls
    answer = hooks.start(user, {"transport": "daily"})
    assert_error(answer, 503, "agent_suspended")
    assert "trial_exhausted" in body(answer)["detail"] and emulator.org.start_calls == calls
    assert hooks.start(user, {"agent": "open-ws", "transport": "websocket"}).status_code == 200  # its own gate
    deliver(hooks, "service.suspended", {**suspended, "service_name": "not-ours"})  # not an agent of ours
    deliver(hooks, "service.resumed", {"service_id": "svc_1", "service_name": "my-agent"})
    assert hooks.start(new_user(), {"transport": "daily"}).status_code == 200
    assert gate_events()[len(before):] == ["gate.closed", "gate.opened"]


def test_a_billing_refusal_closes_the_gate_without_any_webhook(hooks: Gateway, emulator: EmulatorServer,
                                                               configure_stage: Callable[..., None]) -> None:
    configure_stage(ADMIN_GROUP="gateway-admins")
    emulator_admin(emulator, "org", {"spend_limited": True})
    try:
        calls = emulator.org.start_calls
        assert_error(hooks.start(new_user(), {"transport": "daily"}), 503, "billing_not_set")
        assert emulator.org.start_calls == calls + 1  # Pipecat Cloud said so once
        for _ in range(3):
            assert_error(hooks.start(new_user(), {"transport": "daily"}), 503, "billing_not_set")
        assert emulator.org.start_calls == calls + 1  # then the gate answers, without a call
    finally:
        emulator_admin(emulator, "org", {"spend_limited": False})
    assert_error(hooks.start(new_user(), {"transport": "daily"}), 503, "billing_not_set")  # until an operator acts
    token = hooks.oidc.token("operator-1", groups=["gateway-admins"])
    opened = hooks.request("POST", "/admin/gates", headers={"Authorization": f"Bearer {token}"},
                           json_body={"scope": "organisation", "action": "open", "reason": "billing"})
    assert opened.status_code == 200 and opened.json_body["changed"] is True, opened.body
    assert hooks.start(new_user(), {"transport": "daily"}).status_code == 200


def test_spend_limit_cleared_also_lifts_a_billing_closure(hooks: Gateway, emulator: EmulatorServer) -> None:
    """Pipecat Cloud's answer to a start at its spend limit is not documented (the emulator answers PCC-1004, billing
    not set): when the limit is cleared, the billing reason goes too, and a real billing refusal closes it again."""
    emulator_admin(emulator, "org", {"spend_limited": True})
    try:
        assert_error(hooks.start(new_user(), {"transport": "daily"}), 503, "billing_not_set")
    finally:
        emulator_admin(emulator, "org", {"spend_limited": False})
    assert body(deliver(hooks, "spend.limit_cleared", {"previous_limit_cents": 10000})) == {"status": "handled"}
    assert hooks.start(new_user(), {"transport": "daily"}).status_code == 200
