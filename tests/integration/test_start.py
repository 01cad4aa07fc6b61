"""POST /start end to end: app handler path -> moto (DynamoDB, Secrets Manager) -> PCC emulator."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import boto3

from chalicelib.platform import dynamo
from chalicelib.store import slots
from infra.pcc_emulator import EmulatorServer
from tests.conftest import Gateway, emulator_admin
from tests.support import new_user


def body(response: Any) -> Any:
    return json.loads(response.body)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.body
    data = body(response)
    assert data["code"] == code, data
    assert data["detail"]
    return dict(data)


# ------------------------------------------------------------------ success per transport
def test_daily_start_returns_room_token_session_and_records_it(
        gateway: Gateway, emulator: EmulatorServer, user: str, table: Any) -> None:
    before = time.time()
    response = gateway.start(user, {"transport": "daily", "body": {"lang": "en"},
                                    "dailyRoomProperties": {"enable_recording": "cloud"}})
    assert response.status_code == 200, response.body
    data = body(response)
    assert set(data) == {"sessionId", "dailyRoom", "dailyToken"}
    assert response.headers["X-Session-Id"] == data["sessionId"]
    sent = emulator.org.sessions[data["sessionId"]]
    assert sent.body == {"lang": "en", "user": {"id": user}}  # verified identity injected
    item = table.get_item(Key={"PK": f"SESSION#{data['sessionId']}", "SK": "META"})["Item"]
    assert item["user_id"] == user and item["agent"] == "my-agent" and item["transport"] == "daily"
    assert item["status"] == "active" and item["created_at"]
    assert int(before) + 7200 + 3600 <= int(item["ttl"]) <= time.time() + 7200 + 3600  # written during the call
    assert slots.active_slots(user) == 1


def test_webrtc_start_returns_session_and_ice_config(gateway: Gateway, user: str) -> None:
    response = gateway.start(user, {"transport": "webrtc"})
    data = body(response)
    assert set(data) == {"sessionId", "iceConfig"}
    assert data["iceConfig"]["iceServers"][0]["urls"]


def test_websocket_start_returns_exactly_wsurl_and_token(gateway: Gateway, emulator: EmulatorServer,
                                                         user: str) -> None:
    """The body reaches the bot through the session, never in the URL (so no user id in any wsUrl), and
    websocket bodies get the same 1 MB as every transport."""
    big = "v" * 8000
    response = gateway.start(user, {"transport": "websocket", "body": {"k": big}})
    data = body(response)
    assert set(data) == {"wsUrl", "token"}
    assert urlsplit(data["wsUrl"]).query == "" and user not in data["wsUrl"]
    session_id = response.headers["X-Session-Id"]
    assert emulator.org.sessions[session_id].body == {"k": big, "user": {"id": user}}
    # how a websocket client learns its session id without the header: the newest active session
    listed = body(gateway.request("GET", "/sessions?status=active&limit=1", user=user))
    assert [s["sessionId"] for s in listed["sessions"]] == [session_id]


def test_websocket_auth_none_agent(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    assert_error(gateway.start(user, {"agent": "open-ws", "body": {"a": 1}}), 400,
                 "websocket_body_not_allowed")
    response = gateway.start(user, {"agent": "open-ws"})
    assert response.status_code == 200, response.body
    assert set(body(response)) == {"wsUrl", "token"}
    assert emulator.org.sessions[response.headers["X-Session-Id"]].body is None


# ------------------------------------------------------------------ authentication
def test_missing_forged_expired_wrong_audience_tokens_are_401(gateway: Gateway, oidc: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    bad_tokens = {
        "missing": None,
        "garbage": "not-a-jwt",
        "forged": oidc.token("mallory", key=other_key),
        "unknown kid": oidc.token("mallory", key=other_key, kid="other"),
        "expired": oidc.token("alice", exp=now - 3600, iat=now - 7200),
        "wrong audience": oidc.token("alice", aud="someone-else"),
        "wrong issuer": oidc.token("alice", iss="https://evil.example"),
        "no sub": oidc.token(None),
    }
    for name, token in bad_tokens.items():
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = gateway.client.http.request("POST", "/start", headers=headers, body=b"{}")
        assert response.status_code == 401, (name, response.body)
        assert body(response)["code"] == "unauthorized", name


def test_insecure_dev_mode_is_refused_outside_local(gateway: Gateway, configure_stage: Any) -> None:
    configure_stage(AUTH_MODE="insecure-dev")  # stage is "test", not "local"
    response = gateway.request("GET", "/health")
    assert_error(response, 500, "internal_error")


def test_insecure_dev_mode_on_local_stage_takes_the_header(gateway: Gateway, configure_stage: Any) -> None:
    configure_stage(AUTH_MODE="insecure-dev", STAGE="local")
    assert_error(gateway.request("POST", "/start", json_body={}), 401, "unauthorized")
    response = gateway.request("POST", "/start", json_body={}, headers={"X-Dev-User": "dev-1"})
    assert response.status_code == 200, response.body


# ------------------------------------------------------------------ validation
def test_validation_errors_say_what_is_wrong(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    assert_error(gateway.request("POST", "/start", user=user, body=b"{not json"), 400, "invalid_json")
    assert_error(gateway.request("POST", "/start", user=user, body=b"[1, 2]"), 400, "invalid_json")
    wrong_type = assert_error(gateway.start(user, {"body": "text"}), 422, "validation_error")
    # `detail` is a sentence (client-js shows it as the error message); the list is in `errors`
    assert isinstance(wrong_type["detail"], str) and wrong_type["detail"].startswith("Invalid request: body:")
    assert wrong_type["errors"][0]["loc"] == ["body"]
    unknown = assert_error(gateway.start(user, {"createDailyRoom": True}), 422, "validation_error")
    assert unknown["errors"][0]["loc"] == ["createDailyRoom"] and "createDailyRoom" in unknown["detail"]
    assert_error(gateway.start(user, {"transport": "pigeon"}), 422, "validation_error")
    assert_error(gateway.start(user, {"body": {"user": {"id": "admin"}}}), 422, "reserved_body_key")
    assert_error(gateway.start(user, {"agent": "not-allowed"}), 404, "unknown_agent")
    assert_error(gateway.start(user, {"dailyRoomProperties": {"sip": {}}}), 422, "property_not_allowed")
    assert emulator.org.start_calls == 0  # nothing reached Pipecat Cloud
    assert slots.active_slots(user) == 0


def test_size_limits_are_enforced_before_calling_pcc(gateway: Gateway, emulator: EmulatorServer,
                                                     user: str) -> None:
    assert_error(gateway.start(user, {"transport": "daily", "body": {"x": "y" * (1024 * 1024)}}), 413,
                 "body_too_large")
    assert_error(gateway.start(user, {"transport": "websocket", "body": {"x": "y" * (1024 * 1024)}}), 413,
                 "body_too_large")
    assert emulator.org.start_calls == 0


# ------------------------------------------------------------------ PCC error mapping
def test_pcc_errors_map_and_always_free_the_slot(gateway: Gateway, emulator: EmulatorServer, user: str,
                                                  configure_stage: Any) -> None:
    emulator_admin(emulator, "agents/my-agent", {"ready": False})
    assert_error(gateway.start(user, {}), 400, "agent_not_ready")
    assert_error(gateway.start(user, {"agent": "ghost-agent"}), 404, "agent_not_found")
    emulator_admin(emulator, "agents/my-agent", {"ready": True, "max_agents": 0})
    configure_stage(RETRY_QUEUE_URL="")  # without the capacity queue a 429 stays a 429
    capacity = gateway.start(user, {})
    assert_error(capacity, 429, "pcc_at_capacity")
    assert capacity.headers["Retry-After"]
    assert slots.active_slots(user) == 0


def test_wrong_key_is_502_and_never_leaks(gateway: Gateway, stack: dict[str, Any], user: str,
                                          configure_stage: Any, capsys: Any) -> None:
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    original = secrets.get_secret_value(SecretId=name)["SecretString"]
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps({"public_key": "pk_revoked_key"}))
    try:
        response = gateway.start(user, {})
        assert_error(response, 502, "upstream_auth_failed")
        assert b"pk_revoked_key" not in response.body
        assert "pk_revoked_key" not in capsys.readouterr().out
    finally:
        secrets.put_secret_value(SecretId=name, SecretString=original)


def test_secret_is_cached(gateway: Gateway, stack: dict[str, Any], user: str) -> None:
    assert gateway.start(user, {}).status_code == 200  # fills the cache
    secrets = boto3.client("secretsmanager")
    name = stack["outputs"]["SecretName"]
    original = secrets.get_secret_value(SecretId=name)["SecretString"]
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps({"public_key": "pk_rotated"}))
    try:
        assert gateway.start(user, {}).status_code == 200  # still the cached key
    finally:
        secrets.put_secret_value(SecretId=name, SecretString=original)


def test_pcc_unreachable_and_timeout(gateway: Gateway, emulator: EmulatorServer, user: str,
                                     configure_stage: Any) -> None:
    """A timeout may have started a bot: the slot stays held until recovery (after the orphan sweep);
    a connection that never opened proves nothing started: its slot is freed at once."""
    from chalicelib.store import intents
    from chalicelib.upkeep import orphans

    configure_stage(PCC_READ_TIMEOUT="0.3")
    emulator_admin(emulator, "knobs", {"latency_ms": 800})
    assert_error(gateway.start(user, {}), 504, "upstream_timeout")
    deadline = time.monotonic() + 30  # the emulator finishes the abandoned start: a bot we have no record of
    while not emulator.org.active_session_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    emulator_admin(emulator, "knobs", {"latency_ms": 0})
    assert slots.active_slots(user) == 1
    assert len(emulator.org.active_session_ids()) == 1
    configure_stage(PCC_API_URL="http://127.0.0.1:9")  # nothing listens on the discard port
    assert_error(gateway.start(user, {}), 502, "upstream_unavailable")
    assert slots.active_slots(user) == 1  # the unsent start gave its own slot back
    configure_stage(PCC_API_URL=emulator.url)
    later = time.time() + 3600
    intents.recover(300, now=time.time())  # too early for this one: its bot may still be unswept
    assert slots.active_slots(user) == 1
    assert orphans.sweep(now=later)["orphans_stopped"] == 1
    assert intents.recover(300, now=later) >= 1  # (and other tests' unknown starts: its job)
    assert slots.active_slots(user) == 0 and emulator.org.active_session_ids() == set()


# ------------------------------------------------------------------ idempotency and caps
def test_idempotency_key_returns_first_result_and_starts_one_bot(gateway: Gateway, emulator: EmulatorServer,
                                                                 user: str) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = gateway.start(user, {"transport": "daily"}, headers=headers)
    second = gateway.start(user, {"transport": "daily"}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert body(first) == body(second)
    assert second.headers["X-Session-Id"] == first.headers["X-Session-Id"]
    assert emulator.org.started == 1
    assert_error(gateway.start(user, {"transport": "webrtc"}, headers=headers), 422, "idempotency_key_reused")
    other_user = gateway.start(new_user(), {"transport": "daily"}, headers=headers)
    assert body(other_user)["sessionId"] != body(first)["sessionId"]
    assert emulator.org.started == 2


def test_failed_start_is_not_remembered_by_idempotency(gateway: Gateway, emulator: EmulatorServer,
                                                       user: str) -> None:
    emulator_admin(emulator, "agents/my-agent", {"ready": False})
    headers = {"Idempotency-Key": "retry-me"}
    assert gateway.start(user, {}, headers=headers).status_code == 400
    emulator_admin(emulator, "agents/my-agent", {"ready": True})
    assert gateway.start(user, {}, headers=headers).status_code == 200


def test_per_user_cap(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    for _ in range(3):
        assert gateway.start(user, {}).status_code == 200
    assert_error(gateway.start(user, {}), 429, "user_session_limit")
    assert emulator.org.started == 3
    assert gateway.start(new_user(), {}).status_code == 200  # other users are not affected


def test_slot_reservation_is_atomic_under_races(app_env: Gateway, user: str) -> None:
    from chalicelib.store import intents

    def take(_: int) -> intents.StartIntent | None:
        try:
            return intents.open_intent(user, "my-agent", 3, 20)
        except intents.NoSlot:
            return None

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(take, range(20)))
    assert slots.active_slots(user) == 3  # never more than the cap
    written = dynamo.table().query(IndexName="GSI1", KeyConditionExpression="GSI1PK = :pk",
                                          ExpressionAttributeValues={":pk": f"USER#{user}#INTENTS"})["Items"]
    assert len(written) == 3  # each slot is backed by its intent (they are written together)
    # A caller normally learns it got one; if an answer was lost and the SDK's retry then failed the
    # condition, the caller saw "full" and its intent is recovered later like any crashed start.
    assert 1 <= sum(r is not None for r in results) <= 3


# ------------------------------------------------------------------ CORS and health
def test_cors_preflight_allows_our_headers(gateway: Gateway) -> None:
    # chalice.test's HTTPResponse cannot hold the empty preflight body: ask its local gateway directly
    response = gateway.client.http._local_gateway.handle_request(
        method="OPTIONS", path="/start", body=b"",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"})
    assert response["statusCode"] == 200
    allowed = response["headers"]["Access-Control-Allow-Headers"].lower()
    for header in ("authorization", "content-type", "idempotency-key", "x-dev-groups", "x-dev-user"):
        assert header in allowed
    assert "POST" in response["headers"]["Access-Control-Allow-Methods"]


def test_errors_carry_cors_headers_so_browsers_can_read_them(gateway: Gateway) -> None:
    response = gateway.request("POST", "/start", json_body={})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"]


def test_wrong_content_type_is_json_error(gateway: Gateway, user: str) -> None:
    response = gateway.request("POST", "/start", user=user, body=b"x", headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


def test_logs_never_contain_keys_or_tokens(gateway: Gateway, emulator: EmulatorServer, user: str) -> None:
    import io

    from chalicelib.platform.observability import logger

    handler = logger.handlers[0]
    stream = io.StringIO()
    previous = handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        response = gateway.start(user, {"transport": "websocket"})
        ws_token = body(response)["token"]
        gateway.start(user, {"transport": "daily"})
        gateway.request("POST", "/start", json_body={}, headers={"Authorization": "Bearer pk_leaky"})
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]
    out = stream.getvalue()
    assert "session started" in out
    for secret in (emulator.org.public_key, emulator.org.private_key, ws_token, "Bearer ", "pk_leaky"):
        assert secret not in out
