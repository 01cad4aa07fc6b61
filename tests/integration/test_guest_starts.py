"""Guests use the ordinary API with a guest token (docs/guests.md), within numbers that bound what anonymous traffic
may cost. Against the real local stack and the fake siteverify; every outcome counted from the source of truth: the
emulator's bots and the body each got, and DynamoDB."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from chalice.local import LambdaEventConverter

from infra.pcc_emulator.server import EmulatorServer
from tests.conftest import Gateway, new_user
from tests.integration.test_guest_tokens import KEYS, ORIGIN, ask, guests, siteverify  # noqa: F401 - fixtures
from tests.integration.test_start import assert_error, body
from tests.support import outbox_events


def mint() -> tuple[str, str]:
    """A guest token as POST /guest issues it (minted here: these tests are about what a guest may do with one)."""
    from chalicelib.guests import access, tokens
    from chalicelib.platform.settings import get_settings

    token, guest = tokens.issue(tokens.SigningKeys.from_secret(KEYS), access.issuer(get_settings()), 900)
    return token, guest.guest_id


def as_guest(gateway: Gateway, token: str, method: str, path: str, payload: Any = None) -> Any:
    return gateway.request(method, path, json_body=payload, headers={"Authorization": f"Bearer {token}",
                                                                      "Origin": ORIGIN})


def guest_start(gateway: Gateway, token: str, payload: Any = None) -> Any:
    return as_guest(gateway, token, "POST", "/start", payload if payload is not None else {"transport": "daily"})


def bots(emulator: EmulatorServer) -> list[Any]:
    return list(emulator.org.sessions.values())


def pool(agent: str = "my-agent") -> int:
    from chalicelib.store import slots

    return slots.guest_pool(agent)


def no_guests_left(table: Any) -> None:
    """Every guest session an earlier test left running ended as the gateway ends one (its place given back), and
    the pools (whose pending starts the queues' clean-up deleted) set to zero, and the guests' day unused.
    The module's tests share one table: each starts from no guest at all."""
    from chalicelib.sessions import service
    from chalicelib.store import session_records

    for record in session_records.active_sessions():
        if record.user_id.startswith("guest_"):
            service.end_session(record, session_records.STOPPED, "test_cleanup", None)
    for agent in ("my-agent", "open-ws"):
        table.put_item(Item={"PK": f"GUESTS#{agent}", "SK": "ACTIVE_SESSIONS", "active": 0})
    for item in table.query(KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": "USAGE##guests"},
                            ProjectionExpression="PK, SK")["Items"]:
        table.delete_item(Key=item)  # the guests' day: each test starts with none used


@pytest.fixture()
def open_limits(guests: Gateway, configure_stage: Callable[..., None],  # noqa: F811 - the fixture
                emulator: EmulatorServer, table: Any) -> Iterator[Gateway]:
    """Guest access with limits out of the way, each test then tightening the one it is about."""
    configure_stage(GUEST_STARTS_PER_ADDRESS_PER_MINUTE="100", GUEST_STARTS_PER_HOUR="100", GUEST_MAX_ACTIVE="100",
                    GUEST_SECONDS_PER_DAY="0")
    emulator.org.configure_agent("my-agent", max_agents=300)
    no_guests_left(table)
    yield guests
    no_guests_left(table)


def test_a_guest_starts_talks_through_the_proxy_and_stops(open_limits: Gateway, emulator: EmulatorServer) -> None:
    issued = body(ask(open_limits, "pass-whole-way"))
    token, guest_id = issued["token"], issued["guestId"]
    started = guest_start(open_limits, token)
    assert started.status_code == 200, started.body
    session_id = started.headers["X-Session-Id"]
    [bot] = bots(emulator)
    assert bot.bot_body["user"] == {"id": guest_id, "guest": True}  # bot code can tell
    assert pool() == 1
    talked = as_guest(open_limits, token, "POST", f"/sessions/{session_id}/hello", {"hi": 1})
    assert talked.status_code == 200 and talked.headers["x-echo-bot"] == "1"
    listed = body(as_guest(open_limits, token, "GET", "/sessions"))["sessions"]
    assert [s["sessionId"] for s in listed] == [session_id]
    assert body(as_guest(open_limits, token, "GET", "/usage"))["userId"] == guest_id
    assert as_guest(open_limits, token, "DELETE", f"/sessions/{session_id}").status_code == 200
    assert not emulator.org.sessions[session_id].active and pool() == 0
    events = outbox_events(guest_id)
    assert [e["type"] for e in events] == ["session.started", "session.stopped"]
    assert all(e["guest"] is True for e in events)
    assert all("guest" not in e for e in outbox_events(None))  # nobody else is called a guest


def test_guest_tokens_reach_only_the_guest_routes(open_limits: Gateway, emulator: EmulatorServer,
                                                  configure_stage: Callable[..., None]) -> None:
    token, _ = mint()
    other, _ = mint()
    session_id = guest_start(open_limits, token).headers["X-Session-Id"]
    for method, path in (("GET", "/admin/sessions"), ("GET", "/admin/agents/my-agent"),
                         ("POST", "/telephony/daily/dialout")):
        assert_error(as_guest(open_limits, token, method, path, {}), 403, "guest_not_allowed")
    assert_error(as_guest(open_limits, other, "GET", f"/sessions/{session_id}"), 404, "session_not_found")
    assert_error(as_guest(open_limits, other, "DELETE", f"/sessions/{session_id}"), 404, "session_not_found")
    for origin in ({"Origin": "https://evil.example"}, {}):  # another page's browser, or no browser's Origin
        answer = open_limits.request("POST", "/start", json_body={"transport": "daily"},
                                     headers={"Authorization": f"Bearer {other}", **origin})
        assert_error(answer, 403, "origin_not_allowed")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_error(guest_start(open_limits, forged), 401, "unauthorized")
    # nobody may pose as a guest with a user's credentials
    assert_error(open_limits.request("GET", "/sessions", headers={"X-Dev-User": "guest_0"}), 401, "unauthorized")
    configure_stage(GUEST_ACCESS="false")  # a guest token is then any stranger's token
    assert_error(guest_start(open_limits, other), 401, "unauthorized")
    assert len(bots(emulator)) == 1 and emulator.org.sessions[session_id].active


def test_one_active_session_per_guest_and_its_starts_per_hour(open_limits: Gateway, emulator: EmulatorServer,
                                                              configure_stage: Callable[..., None],
                                                              rate_clock: float) -> None:
    configure_stage(GUEST_STARTS_PER_HOUR="3")
    token, _ = mint()
    first = guest_start(open_limits, token).headers["X-Session-Id"]
    assert_error(guest_start(open_limits, token), 429, "user_session_limit")  # one at a time
    assert as_guest(open_limits, token, "DELETE", f"/sessions/{first}").status_code == 200
    second = guest_start(open_limits, token).headers["X-Session-Id"]
    assert as_guest(open_limits, token, "DELETE", f"/sessions/{second}").status_code == 200
    refused = guest_start(open_limits, token)  # the fourth start this hour
    assert_error(refused, 429, "guest_starts_rate_limited")
    assert int(refused.headers["Retry-After"]) > 0
    assert len(bots(emulator)) == 2 and pool() == 0


def _from(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", address)


def test_200_guest_starts_from_one_address_and_from_50_end_at_the_limits(
        open_limits: Gateway, emulator: EmulatorServer, configure_stage: Callable[..., None],
        monkeypatch: pytest.MonkeyPatch, rate_clock: float) -> None:
    configure_stage(GUEST_STARTS_PER_ADDRESS_PER_MINUTE="2")
    _from(monkeypatch, "203.0.113.9")
    answers = [guest_start(open_limits, mint()[0]).status_code for _ in range(200)]  # 200 guests, one address
    assert answers.count(200) == 2 and answers.count(429) == 198
    assert len(bots(emulator)) == 2
    # 50 addresses, 4 starts each: 25 in one IPv6 /64 count as one address, 25 IPv4 addresses as 25
    addresses = [f"2001:db8:1:2::{i:x}" for i in range(1, 26)] + [f"198.51.100.{i}" for i in range(1, 26)]
    outcomes: dict[str, list[int]] = {}
    for address in addresses:
        _from(monkeypatch, address)
        outcomes[address] = [guest_start(open_limits, mint()[0]).status_code for _ in range(4)]
    assert sum(o.count(200) for a, o in outcomes.items() if ":" in a) == 2  # the /64's two
    assert all(o == [200, 200, 429, 429] for a, o in outcomes.items() if ":" not in a)
    assert len(bots(emulator)) == 2 + 2 + 25 * 2
    assert all(s.bot_body["user"]["guest"] is True for s in bots(emulator))


def test_guest_max_active_holds_under_concurrent_starts_and_leaves_users_their_capacity(
        open_limits: Gateway, emulator: EmulatorServer, configure_stage: Callable[..., None]) -> None:
    from chalicelib.guests import starts
    from chalicelib.platform.auth import Principal
    from chalicelib.platform.errors import TryLater

    configure_stage(GUEST_MAX_ACTIVE="3")

    def one(i: int) -> str:  # as 24 Lambdas would, at once
        try:
            result = starts.start(Principal(mint()[1], guest=True, address=f"192.0.2.{i}"), b'{"transport":"daily"}',
                                  None, status_base="/start", wait=0)
            return str(result.status)
        except TryLater as refusal:
            return refusal.kind

    with ThreadPoolExecutor(max_workers=12) as pool_of_lambdas:
        outcomes = list(pool_of_lambdas.map(one, range(24)))
    assert outcomes.count("200") == 3 and outcomes.count("guest_capacity_reached") == 21, outcomes
    assert len(bots(emulator)) == 3 and pool() == 3  # no overshoot: counted at the emulator
    configure_stage(ADMIN_GROUP="gateway-admins")
    operator = open_limits.oidc.token("operator-1", groups=["gateway-admins"])
    view = open_limits.request("GET", "/admin/agents/my-agent", headers={"Authorization": f"Bearer {operator}"})
    assert body(view)["guests"] == {"held": 3, "max": 3, "access": True}  # what the operator sees
    user = new_user()
    assert open_limits.start(user, {"transport": "daily"}).status_code == 200  # users are not held back
    token, _ = mint()
    assert_error(guest_start(open_limits, token), 429, "guest_capacity_reached")
    guest_bot = next(s for s in bots(emulator) if s.bot_body["user"].get("guest"))
    emulator.org.end_session(guest_bot.session_id)
    from chalicelib.store import session_records
    from chalicelib.upkeep import reconcile

    reconcile.detect_ended()
    ended = session_records.get_session(guest_bot.session_id)
    assert ended is not None and ended.status == "ended" and pool() == 2  # its place is given back with its end
    assert guest_start(open_limits, token).status_code == 200
    assert len(bots(emulator)) == 5


def _guests_used_today(seconds: int) -> None:
    from chalicelib.platform.dynamo import transact
    from chalicelib.start import billing
    from chalicelib.store import usage

    today = billing.day_window(time.time())
    transact(usage.usage_updates(usage.GUESTS_TOTAL, {today: seconds}, {}))


def test_the_guests_day_used_up_refuses_tokens_and_starts_until_midnight(
        open_limits: Gateway, emulator: EmulatorServer, configure_stage: Callable[..., None],
        siteverify: Any) -> None:  # noqa: F811 - the fixture
    configure_stage(GUEST_SECONDS_PER_DAY="100")
    token, _ = mint()
    _guests_used_today(100)
    refused = guest_start(open_limits, token)
    assert_error(refused, 429, "guest_budget_exceeded")
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    calls = siteverify.provider.calls
    assert_error(ask(open_limits, "pass-after-budget"), 429, "guest_budget_exceeded")
    assert siteverify.provider.calls == calls and bots(emulator) == []
    assert open_limits.start(new_user(), {"transport": "daily"}).status_code == 200  # users are not guests


def test_end_detection_stops_guests_past_their_session_max_or_the_guests_day(
        open_limits: Gateway, emulator: EmulatorServer, configure_stage: Callable[..., None]) -> None:
    from chalicelib.store import session_records
    from chalicelib.upkeep import reconcile

    configure_stage(GUEST_SESSION_MAX_SECONDS="30", GUEST_SECONDS_PER_DAY="1000")
    short = guest_start(open_limits, mint()[0]).headers["X-Session-Id"]
    user_session = open_limits.start(new_user(), {"transport": "daily"}).headers["X-Session-Id"]
    assert reconcile.detect_ended()["stopped"] == 0
    summary = reconcile.detect_ended(now=time.time() + 31)
    assert summary["stopped"] == 1, summary
    record = session_records.get_session(short)
    assert record is not None and record.status == "stopped" and record.end_reason == "guest_session_max"
    assert not emulator.org.sessions[short].active and emulator.org.sessions[user_session].active
    # the day: 990 s already ended today, two guests running 10 s each -> both stopped, the user kept
    _guests_used_today(990)
    running = [guest_start(open_limits, mint()[0]).headers["X-Session-Id"] for _ in range(2)]
    summary = reconcile.detect_ended(now=time.time() + 10)
    assert summary["capped"] == 2, summary
    for session_id in running:
        ended = session_records.get_session(session_id)
        assert ended is not None and ended.end_reason == "guest_budget"
        assert not emulator.org.sessions[session_id].active
    assert emulator.org.sessions[user_session].active and pool() == 0


def test_a_guest_at_capacity_is_refused_and_never_goes_past_queued_starts(
        open_limits: Gateway, emulator: EmulatorServer, configure_stage: Callable[..., None]) -> None:
    emulator.org.configure_agent("my-agent", max_agents=1)
    assert open_limits.start(new_user(), {"transport": "daily"}).status_code == 200  # the one place
    token, _ = mint()
    calls = emulator.org.start_calls
    assert_error(guest_start(open_limits, token), 429, "pcc_at_capacity")
    assert emulator.org.start_calls == calls + 1  # asked once, refused at capacity
    waiting = open_limits.start(new_user(), {"transport": "daily"})
    assert waiting.status_code == 202  # a user waits in the queue
    calls = emulator.org.start_calls
    assert_error(guest_start(open_limits, token), 429, "pcc_at_capacity")
    assert emulator.org.start_calls == calls  # the freed place is the user's: no call was made for the guest
    assert pool() == 0 and len(bots(emulator)) == 1
    configure_stage(GUEST_QUEUE="true", GUEST_MAX_ACTIVE="1")
    queued = guest_start(open_limits, token)
    assert queued.status_code == 202, queued.body  # behind the user, its place in the pool held
    assert pool() == 1
    assert_error(guest_start(open_limits, mint()[0]), 429, "guest_capacity_reached")


def test_guest_metrics_name_each_refusal(open_limits: Gateway, configure_stage: Callable[..., None],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    configure_stage(GUEST_SECONDS_PER_DAY="100")
    _guests_used_today(100)
    capsys.readouterr()
    assert_error(guest_start(open_limits, mint()[0]), 429, "guest_budget_exceeded")
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [r["reason"] for r in records if "GuestStartsRefused" in r] == ["guest_budget_exceeded"]


def test_a_guest_pool_that_drifted_is_healed_to_what_guests_hold(open_limits: Gateway, table: Any) -> None:
    from chalicelib.store import slots

    table.put_item(Item={"PK": "GUESTS#my-agent", "SK": "ACTIVE_SESSIONS", "active": 5,
                         "updated_at": "2000-01-01T00:00:00.000000Z", "GSI2PK": slots.POOLS_INDEX_KEY,
                         "GSI2SK": "my-agent"})
    assert slots.heal_guest_pools(time.time()) == 1 and pool() == 0  # a drifted pool is set to what guests hold
