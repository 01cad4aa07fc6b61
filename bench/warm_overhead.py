"""Warm overhead: N sequential /start calls through the app's real Lambda handler path vs N direct httpx
calls to the emulator, at emulator latency 0 and 200 ms; plus TCP connections per path.

Reports added wall ms per start (p50/p95) and CPU ms per start, with the DynamoDB round trips (to a
moto *server* process) timed separately through botocore's event hooks so they can be excluded.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import httpx

from bench.harness import BenchStack, summary


class DynamoTimer:
    """Wall and CPU time spent inside DynamoDB API calls (request building to parsed response)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self._starts: list[tuple[float, float]] = []

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)

    def _before(self, **_: Any) -> None:
        self._starts.append((time.perf_counter(), time.process_time()))

    def _after(self, **_: Any) -> None:
        wall0, cpu0 = self._starts.pop()
        self.wall += time.perf_counter() - wall0
        self.cpu += time.process_time() - cpu0


def run(n: int = 200) -> dict[str, Any]:
    stack = BenchStack()
    try:
        from chalicelib.pcc import client as pcc_client
        from chalicelib.platform import dynamo, settings

        results: dict[str, Any] = {"n": n}
        payload = {"transport": "webrtc", "body": {"bench": True}}
        # warm up: secret cache, JWKS-free dev auth, boto3 clients, the pooled httpx connection
        for _ in range(5):
            stack.invoke("POST", "/start", user=f"warm-{uuid.uuid4().hex[:8]}", body=payload)
        timer = DynamoTimer()
        timer.attach(dynamo.table().meta.client)
        pcc_request = {"transport": "webrtc", "enableDefaultIceServers": True,
                       "body": {"bench": True, "user": {"id": "u"}}}
        url = f"{settings.get_settings().pcc.api_url}/v1/public/my-agent/start"
        # the same transport settings as the gateway's client, so only the gateway's own work differs
        direct_client = httpx.Client(timeout=30, transport=httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]))
        direct_client.post(url, json=pcc_request, headers={"Authorization": f"Bearer {stack.keys['public_key']}"})
        for latency_ms in (0, 200):
            stack.admin("knobs", {"latency_ms": latency_ms})
            app_wall, app_cpu, ddb_wall, ddb_cpu, direct_wall, direct_cpu = [], [], [], [], [], []
            conns_before = stack.stats()["connections"]
            for _ in range(n):
                timer.wall = timer.cpu = 0.0
                w0, c0 = time.perf_counter(), time.process_time()
                response = stack.invoke("POST", "/start", user=f"u-{uuid.uuid4().hex[:10]}", body=payload)
                app_wall.append((time.perf_counter() - w0) * 1000)
                app_cpu.append((time.process_time() - c0) * 1000)
                ddb_wall.append(timer.wall * 1000)
                ddb_cpu.append(timer.cpu * 1000)
                assert response["statusCode"] == 200, response
            # every stats() call is itself one new connection, counted before it answers
            app_conns = stack.stats()["connections"] - conns_before - 1
            conns_before = stack.stats()["connections"]
            for _ in range(n):
                w0, c0 = time.perf_counter(), time.process_time()
                r = direct_client.post(url, json=pcc_request,
                                       headers={"Authorization": f"Bearer {stack.keys['public_key']}"})
                direct_wall.append((time.perf_counter() - w0) * 1000)
                direct_cpu.append((time.process_time() - c0) * 1000)
                assert r.status_code == 200
            direct_conns = stack.stats()["connections"] - conns_before - 1
            app_s, direct_s = summary(app_wall), summary(direct_wall)
            excl = [a - d for a, d in zip(app_wall, ddb_wall, strict=True)]
            cpu_excl = [a - d for a, d in zip(app_cpu, ddb_cpu, strict=True)]
            results[f"latency_{latency_ms}ms"] = {
                "app_wall_ms": app_s,
                "direct_wall_ms": direct_s,
                "added_wall_ms": {"p50": round(app_s["p50"] - direct_s["p50"], 3),
                                  "p95": round(app_s["p95"] - direct_s["p95"], 3)},
                "added_wall_excluding_dynamodb_ms": {
                    "p50": round(summary(excl)["p50"] - direct_s["p50"], 3),
                    "p95": round(summary(excl)["p95"] - direct_s["p95"], 3)},
                "dynamodb_wall_ms": summary(ddb_wall),
                "app_cpu_ms": summary(app_cpu),
                "direct_cpu_ms": summary(direct_cpu),
                "added_cpu_excluding_dynamodb_ms": {
                    "p50": round(summary(cpu_excl)["p50"] - summary(direct_cpu)["p50"], 3),
                    "p95": round(summary(cpu_excl)["p95"] - summary(direct_cpu)["p95"], 3)},
                "wall_ratio_app_over_direct_p50": round(app_s["p50"] / direct_s["p50"], 2),
                "new_tcp_connections_app_path": app_conns,
                "new_tcp_connections_direct_httpx": direct_conns,
            }
        stack.admin("knobs", {"latency_ms": 0})
        results["pipecatcloud_library_tcp_connections"] = _pipecatcloud_connections(stack, min(n, 50))
        direct_client.close()
        pcc_client.reset_http_client()
        return results
    finally:
        stack.close()


def _pipecatcloud_connections(stack: BenchStack, n: int) -> dict[str, int]:
    """The official library doing the same N starts (it opens an aiohttp session per call)."""
    import os
    import subprocess
    import sys

    script = (
        "import asyncio\n"
        "from pipecatcloud.session import Session, SessionParams\n"
        f"for _ in range({n}):\n"
        f"    asyncio.run(Session('my-agent', api_key={stack.keys['public_key']!r},"
        " params=SessionParams(data={'bench': True})).start())\n"
    )
    before = stack.stats()["connections"]
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                   env={**os.environ, "PIPECAT_API_HOST": stack.emulator_url})
    return {"starts": n, "tcp_connections": stack.stats()["connections"] - before - 1}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
