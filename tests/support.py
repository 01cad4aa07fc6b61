"""Shared test machinery: a local OIDC issuer (JWKS over HTTP), cache resets, a gateway client."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent


_ENV_LOCK = threading.Lock()
_env_users = 0
_env_original: Any = None


@contextlib.contextmanager
def _shared_patched_env_vars(self: Any, environment_variables: dict[str, str]) -> Iterator[None]:
    """Chalice's test client swaps `os.environ` for a patched copy around each call and swaps the original
    back after it. Two overlapping calls (tests drive the gateway from threads) restore each other's copy,
    which left the stage's environment in `os.environ` for the rest of the run. Here the first call in
    patches, the last one out restores, under a lock. Overlapping calls come from one Gateway, so they
    share one stage environment."""
    global _env_users, _env_original
    with _ENV_LOCK:
        if _env_users == 0:
            _env_original = os.environ
            patched = os.environ.copy()
            patched.update(environment_variables)
            os.environ = patched  # type: ignore[assignment]  # noqa: B003 (as Chalice does: swapped, not cleared)
        _env_users += 1
    try:
        yield
    finally:
        with _ENV_LOCK:
            _env_users -= 1
            if _env_users == 0:
                os.environ = _env_original  # noqa: B003
                _env_original = None


def make_chalice_test_client_thread_safe() -> None:
    from chalice import test as chalice_test

    chalice_test.BaseClient._patched_env_vars = _shared_patched_env_vars  # type: ignore[method-assign]


def reset_gateway_caches() -> None:
    """Forget everything the app caches per container (settings, clients, secret, http pool)."""
    from chalicelib.pcc import client as pcc_client
    from chalicelib.platform import auth, aws, settings
    from chalicelib.platform import secrets as secrets_store

    settings.get_settings.cache_clear()
    aws.reset_all()
    secrets_store.reset_secret_cache()
    pcc_client.reset_http_client()
    auth._jwks_client.cache_clear()


class OidcIssuer:
    """An OIDC issuer on loopback: serves its JWKS and mints RS256 tokens."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.jwks_requests = 0
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        self._jwks = json.dumps({"keys": [jwk]}).encode()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.jwks_requests += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(issuer._jwks)))
                self.end_headers()
                self.wfile.write(issuer._jwks)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.audience = "pipecat-gateway-tests"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def token(self, sub: str | None, *, key: Any = None, kid: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"iss": self.url, "aud": self.audience, "iat": now, "exp": now + 600}
        if sub is not None:
            payload["sub"] = sub
        payload.update(claims)
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    def stop(self) -> None:
        self._server.shutdown()


def make_project_dir(tmp: Path) -> Path:
    """A copy of the Chalice project config (a test stage gets written into it)."""
    project = tmp / "project"
    (project / ".chalice").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".chalice" / "config.json", project / ".chalice" / "config.json")
    return project


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


def api_gateway_event(method: str, resource: str, path_params: dict[str, str], *, headers: dict[str, str] | None = None,
                      body: bytes = b"", binary_types: list[str] | None = None,
                      query: dict[str, list[str]] | None = None, source_ip: str = "203.0.113.7") -> dict[str, Any]:
    """A REST API (v1) Lambda proxy event as API Gateway sends it: the body base64-encoded when its
    Content-Type is one of the API's binary media types, UTF-8 text otherwise."""
    import base64

    headers = dict(headers or {})
    path = resource
    for name, value in path_params.items():
        path = path.replace("{" + name + "}", value)
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    binary = content_type.split(";")[0].strip() in (binary_types or [])
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": {"httpMethod": method, "resourcePath": resource, "path": f"/api{path}", "stage": "api",
                           "requestId": uuid.uuid4().hex, "identity": {"sourceIp": source_ip}},
        "body": (base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace")) if body else None,
        "isBase64Encoded": binary,
    }


class LambdaContext:
    """The parts of a Lambda context the app reads."""

    function_name = "pipecat-gateway-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:pipecat-gateway-test"
    aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def clear_agent_queues(table: Any, agents: list[str]) -> None:
    """Empty the agents' start queues between tests (the table outlives each test): pending requests are
    marked failed and the queue partitions deleted, so no test's leftovers make the next one's starts wait; and open
    the start gates (a test's closed gate would refuse the next one's starts)."""
    pending = table.query(IndexName="GSI2", KeyConditionExpression="GSI2PK = :pk",
                          ExpressionAttributeValues={":pk": "PENDING"})["Items"]
    for item in pending:
        table.update_item(Key={"PK": item["PK"], "SK": item["SK"]},
                          UpdateExpression="SET #s = :failed, error_code = :code REMOVE GSI2PK, GSI2SK",
                          ExpressionAttributeNames={"#s": "state"},
                          ExpressionAttributeValues={":failed": "failed", ":code": "test_reset"})
    for agent in agents:
        items = table.query(KeyConditionExpression="PK = :pk",
                            ExpressionAttributeValues={":pk": f"QUEUE#{agent}"})["Items"]
        with table.batch_writer() as batch:
            for item in items:
                batch.delete_item(Key={"PK": item["PK"], "SK": item["SK"]})
    for scope in ["org", *(f"agent#{agent}" for agent in agents)]:  # the start gates open again
        table.delete_item(Key={"PK": f"GATE#{scope}", "SK": "META"})


def wait_for(what: Callable[[], bool], timeout: float = 60) -> bool:
    """Poll until `what()` holds and return whether it does (the timeout only ends a run that would otherwise hang:
    the caller asserts on what it observed, never on how long it took)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not what():
        time.sleep(0.02)
    return what()


def outbox_events(user_id: str | None) -> list[dict[str, Any]]:
    """The lifecycle events the outbox holds for `user_id` (None: the events with no user, `EVENTS#-`), oldest
    first, as every sink gets them (the stage's environment must be in os.environ)."""
    import boto3

    from chalicelib.platform.dynamo import events_table_name

    table = boto3.resource("dynamodb").Table(events_table_name())
    items = table.query(KeyConditionExpression="PK = :pk",
                        ExpressionAttributeValues={":pk": f"EVENTS#{user_id or '-'}"})["Items"]
    return [json.loads(str(item["event"])) for item in items]
