"""Send the events parked in a stage's events DLQ again (chalicelib/events/redrive.py), with the stage's
configuration and your AWS credentials:

    python -m infra.redrive_events --stage prod [--max 1000]

Prints one JSON summary: received, redelivered (deleted from the DLQ), failed (left for the next run), left
(unreadable items, or a sink no longer configured: look at them in the queue).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from infra.sqs_poller import ROOT, stage_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--project-dir", type=Path, default=ROOT, help="where .chalice/config.json is")
    parser.add_argument("--max", type=int, default=1000, help="messages to handle at most")
    args = parser.parse_args(argv)
    os.environ.update({k: v for k, v in stage_env(args.project_dir, args.stage).items() if k not in os.environ})
    from chalicelib.events.redrive import redrive

    print(json.dumps(redrive(args.max)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
