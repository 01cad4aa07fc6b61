"""`python -m infra.pcc_emulator --port 8790 --agent my-agent`: run the emulator in the foreground (`--port 0`: a free
port, announced in PORT_FILE)."""

from __future__ import annotations

import argparse
import sys

from infra.port_file import serve

from .server import EmulatorServer
from .state import Organisation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pipecat Cloud API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--agent", action="append", help="agent name (repeatable)")
    parser.add_argument("--max-agents", type=int, default=50)
    parser.add_argument("--public-key", default="pk_emulator_public")
    parser.add_argument("--private-key", default="sk_emulator_private")
    args = parser.parse_args(argv)
    org = Organisation(args.public_key, args.private_key, agents=args.agent or ["my-agent"])
    for name in org.agents:
        org.configure_agent(name, max_agents=args.max_agents)
    server = EmulatorServer(args.host, args.port, org)
    print(f"pcc-emulator listening on {server.url} agents={sorted(org.agents)}", flush=True)
    serve(server, int(server.url.rsplit(":", 1)[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
