"""Session-wide real parts: a moto server (AWS), the Pipecat Cloud emulator, an OIDC issuer, and the
infra stack deployed into moto. Tests drive the app through Chalice's local gateway (the same
routing, middleware and handler code a deployed Lambda runs)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.deploy import deploy  # noqa: E402
from infra.pcc_emulator import EmulatorServer, Organisation  # noqa: E402
from tests.support import (  # noqa: E402
    OidcIssuer,
    clear_agent_queues,
    make_chalice_test_client_thread_safe,
    make_project_dir,
    new_user,
    reset_gateway_caches,
)

make_chalice_test_client_thread_safe()

AGENTS = {
    "my-agent": {"allowed_room_properties": ["enable_recording"], "room_properties": {"exp_minutes": 60}},
    "open-ws": {"transports": ["websocket"], "websocket_auth": "none"},
    "ghost-agent": {},  # allowed by our policy but unknown to Pipecat Cloud
}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from infra import moto_atomic as moto_dynamodb

    moto_dynamodb.install()  # conditional writes atomic, as in DynamoDB (see the module)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # the kernel picks the port as it binds
    server.start()
    url = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    os.environ["AWS_ENDPOINT_URL"] = url
    yield url
    server.stop()


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    org = Organisation(agents=["my-agent", "open-ws"])
    with EmulatorServer(org=org) as server:
        yield server


@pytest.fixture()
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    emulator_server.org.reset()
    emulator_server.org.configure_agent("open-ws", websocket_auth="none")
    return emulator_server


@pytest.fixture(scope="session")
def oidc() -> Iterator[OidcIssuer]:
    issuer = OidcIssuer()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def stack(moto_url: str, emulator_server: EmulatorServer, oidc: OidcIssuer,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """infra/template.yaml deployed into moto as stage `test`, outputs written to a project config."""
    project = make_project_dir(tmp_path_factory.mktemp("chalice"))
    org = emulator_server.org
    outputs = deploy(
        "test",
        endpoint_url=moto_url,
        config_path=project / ".chalice" / "config.json",
        secret={"public_key": org.public_key, "private_key": org.private_key},
        extra_env={
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PCC_API_URL": emulator_server.url,
            "PCC_AGENTS": json.dumps(AGENTS),
            "PCC_DEFAULT_AGENT": "my-agent",
            "AUTH_MODE": "jwt",
            "OIDC_ISSUER": oidc.url,
            "OIDC_AUDIENCE": oidc.audience,
            "CORS_ALLOW_ORIGIN": "https://app.example.com",
            "POWERTOOLS_METRICS_NAMESPACE": "PipecatGatewayTests",
            # Per-user limits out of the way of the other tests (tests/integration/test_limits.py sets them).
            "START_RATE_PER_MINUTE": "100000",
            "STATUS_RATE_PER_MINUTE": "100000",
            "PROXY_RATE_PER_MINUTE": "100000",
            "DETAILS_RATE_PER_MINUTE": "100000",
        },
    )
    return {"outputs": outputs, "project": project}


class Gateway:
    """The app behind Chalice's local gateway, with helpers to call it as a user would."""

    def __init__(self, project: Path, oidc: OidcIssuer) -> None:
        from chalice.test import Client

        from app import app

        self.app = app
        self.project = project
        self.oidc = oidc
        self.client = Client(app, stage_name="test", project_dir=str(project))

    def reload(self) -> None:
        """Read the stage config again (Chalice's test client caches it)."""
        from chalice.test import Client

        self.client = Client(self.app, stage_name="test", project_dir=str(self.project))

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.oidc.token(user)}"}

    def request(self, method: str, path: str, *, user: str | None = None, json_body: Any = None,
                body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        sent = {"Content-Type": "application/json"}
        if user:
            sent.update(self.auth(user))
        sent.update(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
        return self.client.http.request(method, path, headers=sent, body=body or b"")

    def start(self, user: str, payload: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", "/start", user=user, json_body=payload if payload is not None else {},
                            **kwargs)


@pytest.fixture()
def gateway(stack: dict[str, Any], emulator: EmulatorServer, oidc: OidcIssuer) -> Iterator[Gateway]:
    reset_gateway_caches()
    ddb = boto3.resource("dynamodb").Table(stack["outputs"]["TableName"])
    clear_agent_queues(ddb, list(AGENTS))
    yield Gateway(stack["project"], oidc)
    clear_agent_queues(ddb, list(AGENTS))
    reset_gateway_caches()


@pytest.fixture()
def rate_clock(monkeypatch: pytest.MonkeyPatch) -> float:
    """The per-user rate limits' clock, stopped at one instant for the test. Their windows are fixed (a new count
    at every minute or hour), so a test that makes its N allowed calls and then the refused one would otherwise
    fail whenever a slow machine carries it across a window's edge. Returns the instant."""
    from types import SimpleNamespace

    from chalicelib.platform import rate_limits

    stopped = __import__("time").time()
    monkeypatch.setattr(rate_limits, "time", SimpleNamespace(time=lambda: stopped))
    return stopped


@pytest.fixture()
def configure_stage(stack: dict[str, Any], gateway: Gateway,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Change the test stage's environment variables for one test (restored afterwards). The stage's
    whole environment is also put in os.environ, so chalicelib can be called directly too (as the
    worker and scheduled handlers are)."""
    path = stack["project"] / ".chalice" / "config.json"
    original = path.read_text()

    def apply(**env: str) -> None:
        config = json.loads(path.read_text())
        config["stages"]["test"]["environment_variables"].update(env)
        path.write_text(json.dumps(config))
        merged = {**config.get("environment_variables", {}), **config["stages"]["test"]["environment_variables"]}
        for key, value in merged.items():
            monkeypatch.setenv(key, value)
        reset_gateway_caches()
        gateway.reload()

    yield apply
    path.write_text(original)
    reset_gateway_caches()


@pytest.fixture()
def app_env(gateway: Gateway, configure_stage: Callable[..., None]) -> Gateway:
    """The test stage's environment in os.environ, for calling chalicelib directly (as a handler would)."""
    configure_stage()
    return gateway


@pytest.fixture()
def table(stack: dict[str, Any]) -> Any:
    return boto3.resource("dynamodb").Table(stack["outputs"]["TableName"])


@pytest.fixture()
def user() -> str:
    return new_user()


def emulator_admin(emulator: EmulatorServer, path: str, body: Any = None) -> Any:
    response = httpx.post(f"{emulator.url}/_emulator/{path}", json=body or {})
    response.raise_for_status()
    return response.json()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Skip the interpreter's exit-time garbage collection over the session's heap (gigabytes of moto's
    in-memory AWS: its transactions deep-copy the whole table), which otherwise holds the run open for
    minutes after the last test. Nothing runs after this that needs collecting."""
    import gc

    gc.freeze()
