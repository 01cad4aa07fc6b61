"""The demo page's static server for `make dev`: `python -m http.server` with a listen backlog for bursts and the
port announced in PORT_FILE (infra/port_file.py), so `--port 0` works.

    python -m infra.demo_server --port 8080 --directory infra/demo
"""

from __future__ import annotations

import argparse
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from infra.port_file import serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--directory", required=True)
    args = parser.parse_args(argv)
    server = _Server((args.bind, args.port), functools.partial(SimpleHTTPRequestHandler, directory=args.directory))
    serve(server, server.server_address[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
