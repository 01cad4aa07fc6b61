"""After `chalice deploy`: API Gateway stage throttling, the part of a production deploy Chalice has no
setting for.

    python -m infra.api_guard_rails --stage dev [--rate 50 --burst 100]

Reads the REST API id from `.chalice/deployed/<stage>.json` (written by `chalice deploy`) and sets the
stage's default method throttling (`/*/*`): at most `rate` requests per second on average and `burst`
at once, across all callers; API Gateway answers 429 above that, before any Lambda runs. `make deploy`
runs it after `chalice deploy`; run it again after a plain `chalice deploy` that created a new API.
Against moto, pass `--endpoint-url` or set `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RATE = 50.0
DEFAULT_BURST = 100


def deployed_rest_api(project_dir: Path, stage: str) -> tuple[str, str]:
    """(rest_api_id, api stage name) from what `chalice deploy` recorded for the stage."""
    record = project_dir / ".chalice" / "deployed" / f"{stage}.json"
    if not record.exists():
        raise SystemExit(f"{record} not found: run `chalice deploy --stage {stage}` first")
    resources = json.loads(record.read_text())["resources"]
    api = next((r for r in resources if r.get("resource_type") == "rest_api"), None)
    if api is None:
        raise SystemExit(f"no REST API in {record}")
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    api_stage = config.get("stages", {}).get(stage, {}).get("api_gateway_stage") or config.get(
        "api_gateway_stage", "api")
    return str(api["rest_api_id"]), str(api_stage)


def apply_throttling(apigateway: Any, rest_api_id: str, api_stage: str, rate: float, burst: int) -> dict[str, Any]:
    if rate <= 0 or burst < 1:
        raise SystemExit("throttling needs --rate > 0 and --burst >= 1")
    result: dict[str, Any] = apigateway.update_stage(
        restApiId=rest_api_id, stageName=api_stage,
        patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(rate)},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(burst)},
        ],
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--project-dir", type=Path, default=ROOT)
    parser.add_argument("--rate", type=float, default=float(os.environ.get("API_THROTTLE_RATE", DEFAULT_RATE)))
    parser.add_argument("--burst", type=int, default=int(os.environ.get("API_THROTTLE_BURST", DEFAULT_BURST)))
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL") or None)
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    args = parser.parse_args(argv)
    import boto3

    rest_api_id, api_stage = deployed_rest_api(args.project_dir, args.stage)
    apigateway = boto3.session.Session(region_name=args.region).client("apigateway", endpoint_url=args.endpoint_url)
    apply_throttling(apigateway, rest_api_id, api_stage, args.rate, args.burst)
    print(json.dumps({"rest_api_id": rest_api_id, "stage": api_stage,
                      "throttling": {"rateLimit": args.rate, "burstLimit": args.burst}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
