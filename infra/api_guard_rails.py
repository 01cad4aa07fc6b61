"""After `chalice deploy`: API Gateway stage throttling and JSON gateway responses, the parts of a production
deploy Chalice has no setting for.

    python -m infra.api_guard_rails --stage dev [--rate 50 --burst 100]

Reads the REST API id from `.chalice/deployed/<stage>.json` (written by `chalice deploy`) and sets the
stage's default method throttling (`/*/*`): at most `rate` requests per second on average and `burst`
at once, across all callers; API Gateway answers 429 above that, before any Lambda runs. `make deploy`
runs it after `chalice deploy`; run it again after a plain `chalice deploy` that created a new API.

Gateway responses: what API Gateway answers by itself (no route matched: a path the app does not serve, or a
proxy path deeper than its 6 segments; its own throttling; a request it refuses before the Lambda) is our
`{"detail", "code"}` JSON too, never API Gateway's `403 {"message": "Missing Authentication Token"}`: an
unknown route is 404 `route_not_found`, stage throttling 429 `api_throttled`. They take effect with a new
deployment of the stage, which this makes.
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
# An app with ~500 concurrent sessions: a rush of a few thousand users pressing "talk" within a minute is
# ~100 starts/s, plus each queued start's status poll every <= 10 s (docs/deploying.md has the reasoning).
DEFAULT_RATE = 200.0
DEFAULT_BURST = 400


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


# response type -> (status to answer, or None to keep API Gateway's, our code, detail)
GATEWAY_RESPONSES: dict[str, tuple[str | None, str, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": ("404", "route_not_found", "No such route"),
    "RESOURCE_NOT_FOUND": ("404", "route_not_found", "No such route"),
    "THROTTLED": ("429", "api_throttled", "Too many requests reach this API; try again shortly"),
    # Lambda refusing the API function's invocation (its reserved concurrency is in use) is an integration
    # failure, which API Gateway answers 500 by default: to the client it is load, to retry shortly.
    "INTEGRATION_FAILURE": ("429", "api_busy", "The API is at its concurrency limit; try again shortly"),
    "UNAUTHORIZED": ("401", "unauthorized", "A valid bearer token is required"),
    "ACCESS_DENIED": ("403", "forbidden", "Not allowed"),
    "REQUEST_TOO_LARGE": ("413", "request_too_large", "The request is too large"),
    "DEFAULT_4XX": (None, "request_refused", "The request was refused"),
    "DEFAULT_5XX": (None, "gateway_error", "The API could not answer; try again"),
}


def apply_gateway_responses(apigateway: Any, rest_api_id: str, api_stage: str, cors_origin: str) -> list[str]:
    """Every response API Gateway makes by itself as JSON `{"detail", "code"}` (with our CORS origin, so a
    browser can read it), then a deployment so they take effect. Returns the types set."""
    for response_type, (status, code, detail) in GATEWAY_RESPONSES.items():
        kwargs: dict[str, Any] = {
            "restApiId": rest_api_id, "responseType": response_type,
            "responseParameters": {"gatewayresponse.header.Access-Control-Allow-Origin": f"'{cors_origin}'"},
            "responseTemplates": {"application/json": json.dumps({"detail": detail, "code": code})},
        }
        if status is not None:
            kwargs["statusCode"] = status
        apigateway.put_gateway_response(**kwargs)
    apigateway.create_deployment(restApiId=rest_api_id, stageName=api_stage,
                                 description="pipecat-gateway: JSON gateway responses")
    return list(GATEWAY_RESPONSES)


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
    config = json.loads((args.project_dir / ".chalice" / "config.json").read_text())
    cors_origin = config.get("stages", {}).get(args.stage, {}).get("environment_variables", {}).get(
        "CORS_ALLOW_ORIGIN") or os.environ.get("CORS_ALLOW_ORIGIN", "*")
    responses = apply_gateway_responses(apigateway, rest_api_id, api_stage, cors_origin)
    apply_throttling(apigateway, rest_api_id, api_stage, args.rate, args.burst)
    url = f"https://{rest_api_id}.execute-api.{args.region}.amazonaws.com/{api_stage}"
    print(json.dumps({"rest_api_id": rest_api_id, "stage": api_stage, "gateway_responses": responses,
                      "throttling": {"rateLimit": args.rate, "burstLimit": args.burst}}))
    print(f"API URL: {url}  (your app's start endpoint: {url}/start)")
    if cors_origin == "*":
        print("warning: CORS_ALLOW_ORIGIN is * : any web page may call this API from a browser; set it to your app's "
              "origin (docs/deploying.md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
