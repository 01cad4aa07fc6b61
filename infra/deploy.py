"""Deploy infra/template.yaml to AWS or to a local moto server, then feed its outputs to Chalice.

    python -m infra.deploy --stage dev                                  # real AWS (default creds)
    python -m infra.deploy --stage local --endpoint-url http://127.0.0.1:5000 \
        --secret-json '{"public_key": "pk_...", "private_key": "..."}'

It writes the stack outputs into `.chalice/config.json` (the stage's environment_variables) and a
least-privilege `.chalice/policy-<stage>.json`. Against moto it also creates what moto's
CloudFormation skips (the secret, the table's TTL).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "template.yaml"
DEFAULT_CONFIG = ROOT / ".chalice" / "config.json"
TERMINAL_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"}
STACK_OUTPUT_ENV = {
    "TableName": "TABLE_NAME",
    "RetryQueueUrl": "RETRY_QUEUE_URL",
    "RetryQueueName": "RETRY_QUEUE_NAME",
    "DeadLetterQueueUrl": "DLQ_URL",
    "SecretName": "PCC_SECRET_ID",
}


def stack_name(stage: str) -> str:
    return f"pipecat-gateway-{stage}-data"


def _session(endpoint_url: str | None, region: str) -> boto3.session.Session:
    if endpoint_url:
        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
    return boto3.session.Session(region_name=region)


def deploy_stack(stage: str, endpoint_url: str | None, region: str, timeout: float = 900) -> dict[str, str]:
    """Create or update the stack; returns its outputs."""
    cfn = _session(endpoint_url, region).client("cloudformation", endpoint_url=endpoint_url)
    name = stack_name(stage)
    params = [{"ParameterKey": "Stage", "ParameterValue": stage}]
    body = TEMPLATE.read_text()
    try:
        cfn.describe_stacks(StackName=name)
        exists = True
    except cfn.exceptions.ClientError:
        exists = False
    if exists:
        try:
            cfn.update_stack(StackName=name, TemplateBody=body, Parameters=params)
        except cfn.exceptions.ClientError as exc:
            if "No updates are to be performed" not in str(exc):
                raise
    else:
        cfn.create_stack(StackName=name, TemplateBody=body, Parameters=params)
    deadline = time.monotonic() + timeout
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if status in TERMINAL_OK:
            break
        if status.endswith("_FAILED") or status.endswith("ROLLBACK_COMPLETE"):
            raise RuntimeError(f"stack {name} ended in {status}: {stack.get('StackStatusReason', '')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"stack {name} still {status}")
        time.sleep(1 if endpoint_url else 10)
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def ensure_local_extras(outputs: dict[str, str], endpoint_url: str, region: str) -> dict[str, str]:
    """moto's CloudFormation skips the secret and the alarm and ignores TTL: create them directly."""
    session = _session(endpoint_url, region)
    secrets = session.client("secretsmanager", endpoint_url=endpoint_url)
    name = outputs["SecretName"]
    try:
        arn = secrets.describe_secret(SecretId=name)["ARN"]
    except secrets.exceptions.ResourceNotFoundException:
        arn = secrets.create_secret(Name=name, Description="Pipecat Cloud keys (local)")["ARN"]
    outputs.setdefault("SecretArn", arn)
    ddb = session.client("dynamodb", endpoint_url=endpoint_url)
    ttl = ddb.describe_time_to_live(TableName=outputs["TableName"])["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        ddb.update_time_to_live(
            TableName=outputs["TableName"],
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
        )
    cloudwatch = session.client("cloudwatch", endpoint_url=endpoint_url)
    alarm = f"{outputs['TableName'].removesuffix('-sessions')}-retry-dlq-not-empty"
    if not cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]:
        cloudwatch.put_metric_alarm(
            AlarmName=alarm, Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
            Dimensions=[{"Name": "QueueName", "Value": outputs["DeadLetterQueueUrl"].rsplit("/", 1)[-1]}],
            Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=0,
            ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching",
        )
    outputs.setdefault("DeadLetterAlarmName", alarm)
    return outputs


def put_secret(secret_id: str, value: dict[str, Any], endpoint_url: str | None, region: str) -> None:
    secrets = _session(endpoint_url, region).client("secretsmanager", endpoint_url=endpoint_url)
    secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))


def least_privilege_policy(outputs: dict[str, str], region: str, account: str) -> dict[str, Any]:
    secret_arn = f"arn:aws:secretsmanager:{region}:{account}:secret:{outputs['SecretName']}-??????"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/pipecat-gateway-*",
            },
            {
                "Sid": "SessionsTable",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                    "dynamodb:Query", "dynamodb:ConditionCheckItem",
                ],
                "Resource": [outputs["TableArn"], outputs["TableArn"] + "/index/*"],
            },
            {
                "Sid": "RetryQueue",
                "Effect": "Allow",
                "Action": [
                    "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
                ],
                "Resource": [outputs["RetryQueueArn"]],
            },
            {
                "Sid": "DeadLetterQueue",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes"],
                "Resource": [outputs["DeadLetterQueueArn"]],
            },
            {
                "Sid": "PipecatKeys",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [secret_arn],
            },
        ],
    }


def write_stage_config(
    config_path: Path,
    stage: str,
    outputs: dict[str, str],
    extra_env: dict[str, str] | None = None,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge the outputs into the stage's environment_variables (other keys are kept)."""
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.exists() else {
        "version": "2.0", "app_name": "pipecat-gateway", "stages": {}}
    stage_cfg = config.setdefault("stages", {}).setdefault(stage, {})
    env = stage_cfg.setdefault("environment_variables", {})
    for output, var in STACK_OUTPUT_ENV.items():
        if output in outputs:
            env[var] = outputs[output]
    env.update(extra_env or {})
    env["STAGE"] = stage
    if policy is not None:
        policy_file = f"policy-{stage}.json"
        stage_cfg["autogen_policy"] = False
        stage_cfg["iam_policy_file"] = policy_file
        (config_path.parent / policy_file).write_text(json.dumps(policy, indent=2) + "\n")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return config


def _account(endpoint_url: str | None, region: str) -> str:
    sts = _session(endpoint_url, region).client("sts", endpoint_url=endpoint_url)
    return str(sts.get_caller_identity()["Account"])


def deploy(
    stage: str,
    *,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    config_path: Path = DEFAULT_CONFIG,
    secret: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    outputs = deploy_stack(stage, endpoint_url, region)
    if endpoint_url:
        outputs = ensure_local_extras(outputs, endpoint_url, region)
    if secret is not None:
        put_secret(outputs["SecretName"], secret, endpoint_url, region)
    policy = least_privilege_policy(outputs, region, _account(endpoint_url, region))
    write_stage_config(config_path, stage, outputs, extra_env, policy)
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--endpoint-url", help="a moto server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--secret-json", help="set the secret's value (JSON object)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra stage environment variable (repeatable)")
    args = parser.parse_args(argv)
    secret = json.loads(args.secret_json) if args.secret_json else None
    extra = dict(item.split("=", 1) for item in args.env)
    outputs = deploy(args.stage, endpoint_url=args.endpoint_url, region=args.region,
                     config_path=args.config, secret=secret, extra_env=extra)
    shown = {k: v for k, v in outputs.items() if "Secret" not in k or k == "SecretName"}
    print(json.dumps({"stack": stack_name(args.stage), "outputs": shown}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
