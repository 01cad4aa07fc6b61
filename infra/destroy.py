"""Remove a deployed stage's data stack: `make destroy STAGE=dev REGION=eu-west-1 [DELETE_DATA=1]` (after
`chalice delete`, which removes the functions, the API and their roles).

Removed: the stage's secret, at once (no recovery window: one pending deletion would keep its name, and so the
stage's name, from being deployed again for up to 30 days), then the CloudFormation stack `pipecat-gateway-<stage>-data`
(queues, the events table, the event bus, alarms, the alarm topic, the dashboard). The secret's key names are
printed first, never their values.

Kept unless DELETE_DATA=1 (`--delete-data`): the sessions table, which the template retains (users' session
records, usage counters), and the functions' CloudWatch log groups. A stage name can be deployed again only once
its table is gone (the template creates it by name): back it up if you need it, then destroy with DELETE_DATA=1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from infra.deploy import FUNCTION_PERMISSIONS, _session, function_name, stack_name
from infra.secret import read_secret, secret_name


def _delete_stack(cfn: Any, name: str, timeout: float, poll: float) -> str:
    """Delete the stack and wait; returns what happened."""
    try:
        cfn.describe_stacks(StackName=name)
    except cfn.exceptions.ClientError:
        return "absent"
    cfn.delete_stack(StackName=name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        except cfn.exceptions.ClientError:
            return "deleted"
        if status == "DELETE_COMPLETE":
            return "deleted"
        if status.endswith("FAILED"):
            raise SystemExit(f"stack {name} ended in {status}: see its events in the CloudFormation console")
        time.sleep(poll)
    raise SystemExit(f"stack {name} still being deleted after {timeout:.0f} s")


def destroy(stage: str, region: str, endpoint_url: str | None = None, delete_data: bool = False,
            app_name: str = "pipecat-gateway", timeout: float = 1800) -> dict[str, Any]:
    session = _session(endpoint_url, region)
    secrets = session.client("secretsmanager", endpoint_url=endpoint_url)
    cloudwatch = session.client("cloudwatch", endpoint_url=endpoint_url)
    report: dict[str, Any] = {"stage": stage, "region": region, "removed": [], "kept": []}
    name = secret_name(stage)
    value = read_secret(secrets, name)
    if value is not None:
        keys = sorted(value) if isinstance(value, dict) else []
        secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        report["removed"].append(f"secret {name} (it held: {', '.join(keys) or 'no value'})")
    # the stack's alarms (moto's CloudFormation leaves them to infra.deploy, which makes them by name)
    prefix = f"{app_name}-{stage}-"
    alarms = [a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]]
    if alarms:
        cloudwatch.delete_alarms(AlarmNames=alarms)
    outcome = _delete_stack(session.client("cloudformation", endpoint_url=endpoint_url), stack_name(stage), timeout,
                            poll=1 if endpoint_url else 10)
    report["removed"].append(f"stack {stack_name(stage)} ({outcome}: queues, events table, event bus, alarms, "
                             "alarm topic, dashboard)")
    ddb = session.client("dynamodb", endpoint_url=endpoint_url)
    table = f"{app_name}-{stage}-sessions"
    logs = session.client("logs", endpoint_url=endpoint_url)
    groups = [f"/aws/lambda/{function_name(app_name, stage, f)}" for f in FUNCTION_PERMISSIONS]
    existing = {g["logGroupName"] for g in logs.describe_log_groups(
        logGroupNamePrefix=f"/aws/lambda/{app_name}-{stage}").get("logGroups", [])}
    try:
        ddb.describe_table(TableName=table)
        table_exists = True
    except ddb.exceptions.ResourceNotFoundException:
        table_exists = False
    if delete_data:
        if table_exists:
            ddb.delete_table(TableName=table)
            report["removed"].append(f"table {table}")
        for group in sorted(existing & set(groups)):
            logs.delete_log_group(logGroupName=group)
            report["removed"].append(f"log group {group}")
    else:
        if table_exists:
            report["kept"].append(f"table {table} (retained: sessions and usage; DELETE_DATA=1 removes it)")
        report["kept"] += [f"log group {g}" for g in sorted(existing & set(groups))]
    if table_exists and not delete_data:
        report["redeploy"] = (f"the retained table blocks a deploy under the name {stage!r}: back it up, then "
                              f"make destroy STAGE={stage} REGION={region} DELETE_DATA=1; or deploy another stage name")
    else:
        report["redeploy"] = f"make deploy STAGE={stage} REGION={region}, then put the keys in again (make secret)"
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL") or None)
    parser.add_argument("--delete-data", action="store_true", help="also the sessions table and the log groups")
    args = parser.parse_args(argv)
    if not args.region:
        parser.error("--region (or AWS_REGION) is required: the stage lives in one region")
    if args.stage == "local":
        parser.error("the local stage is make dev's; nothing to destroy")
    print(json.dumps(destroy(args.stage, args.region, args.endpoint_url, args.delete_data), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
