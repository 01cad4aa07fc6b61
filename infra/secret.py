"""Change some keys of a stage's secret and keep the others: `make secret STAGE=dev REGION=eu-west-1 < new.json`.

The secret (`pipecat-gateway/<stage>/pcc-keys`) holds one JSON object: the Pipecat Cloud keys, the telephony
credentials, the events signing secret. `aws secretsmanager put-secret-value` replaces the whole object, so rotating
one key that way drops the others. This reads the current object, sets the keys given on standard input (a JSON
object; a key set to null is removed), and stores the result as a new version. It prints the names of the keys it
changed and kept, never a value; values never pass on the command line (shell history, `ps`).

Running functions read the new value within SECRET_CACHE_SECONDS (300 by default): keep an old key valid at its
issuer that long after storing its replacement (docs/deploying.md, "Rotate a key").

    python -m infra.secret --stage dev --region eu-west-1 < new-keys.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from infra.deploy import _session


def secret_name(stage: str) -> str:
    return f"pipecat-gateway/{stage}/pcc-keys"


def read_secret(client: Any, name: str) -> Any:
    """The secret's value, parsed from its JSON ({} for a secret that has no value yet); None: no such secret."""
    try:
        raw = client.get_secret_value(SecretId=name).get("SecretString") or "{}"
    except client.exceptions.ResourceNotFoundException as exc:
        if "value" not in str(exc).lower():  # no secret at all (as opposed to a secret with no value yet)
            return None
        raw = "{}"
    return json.loads(raw)


def merged(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The secret's object with `changes` applied (a None value removes its key)."""
    result = dict(current)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def update_secret(stage: str, changes: dict[str, Any], region: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """Apply `changes` to the stage's secret; returns {"changed": [...], "removed": [...], "kept": [...]}."""
    if not changes:
        raise ValueError("no keys given: pass a JSON object on standard input")
    client = _session(endpoint_url, region).client("secretsmanager", endpoint_url=endpoint_url)
    name = secret_name(stage)
    current = read_secret(client, name)
    if current is None:
        raise SystemExit(f"no secret {name} in {region}: deploy the stage first (make deploy)")
    if not isinstance(current, dict):
        raise SystemExit(f"the secret {name} does not hold a JSON object; fix it by hand first")
    client.put_secret_value(SecretId=name, SecretString=json.dumps(merged(current, changes)))
    return {"secret": name,
            "changed": sorted(k for k, v in changes.items() if v is not None),
            "removed": sorted(k for k, v in changes.items() if v is None and k in current),
            "kept": sorted(k for k in current if k not in changes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL") or None)
    args = parser.parse_args(argv)
    if not args.region:
        parser.error("--region (or AWS_REGION) is required: the secret lives in the stage's region")
    try:
        changes = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        parser.error("standard input must be a JSON object of the keys to set")
    if not isinstance(changes, dict):
        parser.error("standard input must be a JSON object of the keys to set")
    try:
        print(json.dumps(update_secret(args.stage, changes, args.region, args.endpoint_url)))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
