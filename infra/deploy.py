"""Deploy infra/template.yaml to AWS or to a local moto server, then feed its outputs to Chalice.

    python -m infra.deploy --stage dev                                  # real AWS (default creds)
    python -m infra.deploy --stage dev --env OIDC_ISSUER=https://... --env OIDC_AUDIENCE=... \
        --alarm-email ops@example.com
    python -m infra.deploy --stage local --endpoint-url http://127.0.0.1:5000 \
        --secret-json '{"public_key": "pk_...", "private_key": "..."}'

It writes the stack outputs into `.chalice/config.json` (the stage's environment_variables) and one
least-privilege policy per function, `.chalice/policy-<stage>-<function>.json`, each granting only
what that function's code calls (FUNCTION_PERMISSIONS). The merged stage configuration is validated
first: a setting the functions would refuse at cold start fails here, before anything is written.
Against moto (`--endpoint-url`, or `AWS_ENDPOINT_URL` in the environment) it also creates what moto's
CloudFormation skips (the secret, the table's TTL, the DLQ alarm).
"""

from __future__ import annotations

import argparse
import json
import os
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
    "EventsTableName": "EVENTS_TABLE_NAME",
    "EventsStreamArn": "EVENTS_STREAM_ARN",
    "EventBusName": "EVENTS_BUS_NAME",
    "EventsDeadLetterQueueUrl": "EVENTS_DLQ_URL",
}


# Chalice function name (lambda_functions key) -> what its code calls. A deployed function gets exactly
# this (tests/infrastructure/test_function_policies.py records every AWS call each function makes and
# fails on a grant that is never used or a call that is not granted).
#   dynamodb: item actions on the table; index_query: Query on its indexes (never on the table itself)
#   sqs: actions on the retry queue; secret: reads the Pipecat Cloud key secret
#   outbox: PutItem on the events table (an event is written in the transaction of the change it reports)
#   events_stream / event_bus / events_dlq: the delivery function's reads of the outbox's stream (what Lambda's
#   DynamoDB event source mapping needs on the function's role), PutEvents, and parking an event in the events DLQ
FUNCTION_PERMISSIONS: dict[str, dict[str, Any]] = {
    "api_handler": {
        # DeleteItem: a failed idempotent start; BatchGetItem: a user's usage counters (budgets, GET /usage)
        "dynamodb": ["GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem"],
        "index_query": True,
        "sqs": ["SendMessage"],
        "secret": True,
        "outbox": True,
    },
    "retry_worker": {
        "outbox": True,
        # BatchGetItem: the start gates, read before every attempt (chalicelib/start/gates.py)
        "dynamodb": ["GetItem", "BatchGetItem", "PutItem", "UpdateItem"],
        # SendMessage: a dispatcher run hands over to the next. The rest is what Lambda's SQS event source
        # mapping needs on the function's own role to poll the queue for it (AWS Lambda developer guide,
        # "Execution role permissions" for SQS); the code itself never receives or deletes.
        "sqs": ["SendMessage", "ReceiveMessage", "DeleteMessage", "GetQueueAttributes"],
        "secret": True,
    },
    "reconcile_sessions": {
        # GetItem: the sweeper re-reads a request it expires and the queues it restarts; BatchGetItem: the
        # items behind GSI2's keys (it projects only keys); DeleteItem: recovery retires start intents
        "dynamodb": ["GetItem", "BatchGetItem", "UpdateItem", "DeleteItem"],
        "index_query": True,
        "sqs": ["SendMessage"],
        "secret": True,
        "outbox": True,
    },
    "detect_ended": {
        # BatchGetItem: the items behind GSI2's keys (it projects only keys)
        "dynamodb": ["BatchGetItem", "UpdateItem"],
        "index_query": True,
        "sqs": ["SendMessage"],  # capacity freed: the queue's dispatcher is woken
        "secret": True,
        "outbox": True,
    },
    "deliver_events": {
        "events_stream": True,
        "event_bus": True,
        "events_dlq": True,
        "secret": True,  # the webhook's signing secret
    },
}
STREAM_ACTIONS = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]
# Permissions no function's code calls but the platform needs on that function's role.
EVENT_SOURCE_ACTIONS = {"retry_worker": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
                        "deliver_events": set(STREAM_ACTIONS)}


def function_name(app_name: str, stage: str, function: str) -> str:
    """The Lambda function name Chalice gives a function (the API handler carries no suffix)."""
    return f"{app_name}-{stage}" if function == "api_handler" else f"{app_name}-{stage}-{function}"


def policy_file(stage: str, function: str) -> str:
    return f"policy-{stage}-{function}.json"


def stack_name(stage: str) -> str:
    return f"pipecat-gateway-{stage}-data"


def _session(endpoint_url: str | None, region: str) -> boto3.session.Session:
    if endpoint_url:
        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
    return boto3.session.Session(region_name=region)


def deploy_stack(stage: str, endpoint_url: str | None, region: str, timeout: float = 900,
                 parameters: dict[str, str] | None = None) -> dict[str, str]:
    """Create or update the stack; returns its outputs."""
    cfn = _session(endpoint_url, region).client("cloudformation", endpoint_url=endpoint_url)
    name = stack_name(stage)
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in {"Stage": stage, **(parameters or {})}.items()]
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


def ensure_local_extras(outputs: dict[str, str], endpoint_url: str, region: str, stage: str) -> dict[str, str]:
    """moto's CloudFormation skips the secret and the alarms and ignores TTL: create them directly."""
    session = _session(endpoint_url, region)
    secrets = session.client("secretsmanager", endpoint_url=endpoint_url)
    name = outputs["SecretName"]
    try:
        arn = secrets.describe_secret(SecretId=name)["ARN"]
    except secrets.exceptions.ResourceNotFoundException:
        arn = secrets.create_secret(Name=name, Description="Pipecat Cloud keys (local)")["ARN"]
    outputs.setdefault("SecretArn", arn)
    ddb = session.client("dynamodb", endpoint_url=endpoint_url)
    for table in (outputs["TableName"], outputs["EventsTableName"]):
        ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    # moto's `Ref` of an event bus is the object's repr, not its name: the name is the ARN's last part
    outputs["EventBusName"] = outputs["EventBusArn"].rsplit("/", 1)[-1]
    cloudwatch = session.client("cloudwatch", endpoint_url=endpoint_url)
    actions = [outputs["AlarmTopicArn"]] if outputs.get("AlarmTopicArn") else []

    def ensure_alarm(name: str, threshold: float = 0, comparison: str = "GreaterThanThreshold", **metric: Any) -> str:
        """An alarm as template.yaml defines it (by default above 0), missing data is fine."""
        if not cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]:
            cloudwatch.put_metric_alarm(AlarmName=name, EvaluationPeriods=1, Threshold=threshold,
                                        ComparisonOperator=comparison, TreatMissingData="notBreaching",
                                        AlarmActions=actions, **metric)
        return name

    prefix = outputs["TableName"].removesuffix("-sessions")
    for output, suffix, queue in (("DeadLetterAlarmName", "retry-dlq-not-empty", "DeadLetterQueueUrl"),
                                  ("EventsDeadLetterAlarmName", "events-dlq-not-empty", "EventsDeadLetterQueueUrl")):
        outputs.setdefault(output, ensure_alarm(
            f"{prefix}-{suffix}", Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
            Dimensions=[{"Name": "QueueName", "Value": outputs[queue].rsplit("/", 1)[-1]}],
            Statistic="Maximum", Period=60))
    app_metric = {"Name": "service", "Value": "pipecat-gateway"}, {"Name": "stage", "Value": stage}
    for output, suffix, metric in (("OrphanAlarmName", "orphans-found", "OrphansFound"),
                                   ("StrandedStartAlarmName", "queued-start-stranded", "QueuedStartsStranded"),
                                   ("SpendThresholdAlarmName", "spend-threshold", "SpendThresholdReached"),
                                   ("StartGateClosedAlarmName", "start-gate-closed", "StartGatesClosed"),
                                   ("ApiKeyChangedAlarmName", "pcc-api-key-changed", "PccApiKeyChanged")):
        outputs.setdefault(output, ensure_alarm(f"{prefix}-{suffix}", Namespace="PipecatGateway", MetricName=metric,
                                                Dimensions=list(app_metric), Statistic="Sum", Period=300))
    outputs.setdefault("GuestBudgetAlarmName", ensure_alarm(
        f"{prefix}-guest-budget-80", threshold=80, comparison="GreaterThanOrEqualToThreshold",
        Namespace="PipecatGateway", MetricName="GuestBudgetUsedPercent", Dimensions=list(app_metric),
        Statistic="Maximum", Period=300))
    return outputs


def put_secret(secret_id: str, value: dict[str, Any], endpoint_url: str | None, region: str) -> None:
    secrets = _session(endpoint_url, region).client("secretsmanager", endpoint_url=endpoint_url)
    secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))


def least_privilege_policies(outputs: dict[str, str], region: str, account: str, stage: str,
                             app_name: str = "pipecat-gateway") -> dict[str, dict[str, Any]]:
    """One IAM policy per function: its own log group, and only the actions FUNCTION_PERMISSIONS lists."""
    secret_arn = f"arn:aws:secretsmanager:{region}:{account}:secret:{outputs['SecretName']}-??????"
    policies: dict[str, dict[str, Any]] = {}
    for function, needs in FUNCTION_PERMISSIONS.items():
        log_group = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{function_name(app_name, stage, function)}"
        statements: list[dict[str, Any]] = [{
            "Sid": "OwnLogGroup",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group, f"{log_group}:*"],
        }]
        if needs.get("dynamodb"):
            statements.append({"Sid": "SessionsTable", "Effect": "Allow", "Resource": [outputs["TableArn"]],
                               "Action": [f"dynamodb:{a}" for a in needs["dynamodb"]]})
        if needs.get("index_query"):
            statements.append({"Sid": "SessionsTableIndexes", "Effect": "Allow", "Action": ["dynamodb:Query"],
                               "Resource": [outputs["TableArn"] + "/index/*"]})
        if needs.get("sqs"):
            statements.append({"Sid": "RetryQueue", "Effect": "Allow",
                               "Action": [f"sqs:{a}" for a in needs["sqs"]], "Resource": [outputs["RetryQueueArn"]]})
        if needs.get("secret"):
            statements.append({"Sid": "PipecatKeys", "Effect": "Allow",
                               "Action": ["secretsmanager:GetSecretValue"], "Resource": [secret_arn]})
        if needs.get("outbox"):
            statements.append({"Sid": "EventsOutbox", "Effect": "Allow", "Action": ["dynamodb:PutItem"],
                               "Resource": [outputs["EventsTableArn"]]})
        if needs.get("events_stream"):
            statements.append({"Sid": "EventsStream", "Effect": "Allow", "Action": list(STREAM_ACTIONS),
                               "Resource": [outputs["EventsStreamArn"]]})
        if needs.get("event_bus"):
            statements.append({"Sid": "EventBus", "Effect": "Allow", "Action": ["events:PutEvents"],
                               "Resource": [outputs["EventBusArn"]]})
        if needs.get("events_dlq"):
            statements.append({"Sid": "EventsDeadLetterQueue", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                               "Resource": [outputs["EventsDeadLetterQueueArn"]]})
        policies[function] = {"Version": "2012-10-17", "Statement": statements}
    return policies


def example_outputs(stage: str, region: str = "us-east-1", account: str = "123456789012") -> dict[str, str]:
    """The outputs the data stack has for `stage` (names are fixed by the template): lets `chalice package`
    run for a deployable stage without AWS (the package test and `make bench`)."""
    prefix = f"pipecat-gateway-{stage}"
    return {
        "TableName": f"{prefix}-sessions",
        "TableArn": f"arn:aws:dynamodb:{region}:{account}:table/{prefix}-sessions",
        "RetryQueueUrl": f"https://sqs.{region}.amazonaws.com/{account}/{prefix}-retry",
        "RetryQueueArn": f"arn:aws:sqs:{region}:{account}:{prefix}-retry",
        "RetryQueueName": f"{prefix}-retry",
        "DeadLetterQueueUrl": f"https://sqs.{region}.amazonaws.com/{account}/{prefix}-retry-dlq",
        "DeadLetterQueueArn": f"arn:aws:sqs:{region}:{account}:{prefix}-retry-dlq",
        "SecretName": f"pipecat-gateway/{stage}/pcc-keys",
        "EventsTableName": f"{prefix}-events",
        "EventsTableArn": f"arn:aws:dynamodb:{region}:{account}:table/{prefix}-events",
        "EventsStreamArn": f"arn:aws:dynamodb:{region}:{account}:table/{prefix}-events/stream/2026-01-01T00:00:00.000",
        "EventBusName": f"{prefix}-events",
        "EventBusArn": f"arn:aws:events:{region}:{account}:event-bus/{prefix}-events",
        "EventsDeadLetterQueueUrl": f"https://sqs.{region}.amazonaws.com/{account}/{prefix}-events-dlq",
        "EventsDeadLetterQueueArn": f"arn:aws:sqs:{region}:{account}:{prefix}-events-dlq",
    }


def merged_stage_env(config: dict[str, Any], stage: str) -> dict[str, str]:
    """What a function of the stage sees: the global environment_variables, then the stage's."""
    return {**config.get("environment_variables", {}),
            **config.get("stages", {}).get(stage, {}).get("environment_variables", {})}


def check_stage_settings(config: dict[str, Any], stage: str) -> None:
    """Fail now, naming the variable, on a configuration the functions would refuse at cold start."""
    from chalicelib.platform.settings import SettingsError, parse_settings

    try:
        parse_settings(merged_stage_env(config, stage))
    except SettingsError as exc:
        raise SystemExit(f"stage {stage!r}: {exc}. Set it in .chalice/config.json or pass --env NAME=VALUE.") from None


def write_stage_config(
    config_path: Path,
    stage: str,
    outputs: dict[str, str],
    extra_env: dict[str, str] | None = None,
    policies: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Merge the outputs into the stage's environment_variables (other keys are kept) and give every
    function its own policy file. Raises SystemExit, writing nothing, when the result is not a valid
    configuration."""
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.exists() else {
        "version": "2.0", "app_name": "pipecat-gateway", "stages": {}}
    stage_cfg = config.setdefault("stages", {}).setdefault(stage, {})
    env = stage_cfg.setdefault("environment_variables", {})
    for output, var in STACK_OUTPUT_ENV.items():
        if output in outputs:
            env[var] = outputs[output]
    env.update(extra_env or {})
    env["STAGE"] = stage
    check_stage_settings(config, stage)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    if policies is not None:
        stage_cfg["autogen_policy"] = False
        stage_cfg.pop("iam_policy_file", None)  # no stage-wide fallback: every function names its own
        functions = stage_cfg.setdefault("lambda_functions", {})
        for function, policy in policies.items():
            functions.setdefault(function, {})["iam_policy_file"] = policy_file(stage, function)
            (config_path.parent / policy_file(stage, function)).write_text(json.dumps(policy, indent=2) + "\n")
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
    parameters: dict[str, str] | None = None,
) -> dict[str, str]:
    if config_path.exists():  # a configuration the functions would refuse stops us before AWS is touched
        config = json.loads(config_path.read_text())
        stage_env = config.setdefault("stages", {}).setdefault(stage, {}).setdefault("environment_variables", {})
        stage_env.update({**(extra_env or {}), "STAGE": stage})
        for var in STACK_OUTPUT_ENV.values():  # filled from the stack's outputs below
            stage_env.setdefault(var, "from-the-stack")
        check_stage_settings(config, stage)
    app_name = json.loads(config_path.read_text()).get("app_name", "pipecat-gateway") if config_path.exists() \
        else "pipecat-gateway"
    outputs = deploy_stack(stage, endpoint_url, region, parameters={"AppName": app_name, **(parameters or {})})
    if endpoint_url:
        outputs = ensure_local_extras(outputs, endpoint_url, region, stage)
    if secret is not None:
        put_secret(outputs["SecretName"], secret, endpoint_url, region)
    policies = least_privilege_policies(outputs, region, _account(endpoint_url, region), stage, app_name)
    write_stage_config(config_path, stage, outputs, extra_env, policies)
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
    parser.add_argument("--alarm-email", default="", help="e-mail the DLQ alarm (an SNS topic is created)")
    parser.add_argument("--alarm-topic-arn", default="", help="an existing SNS topic for the DLQ alarm")
    args = parser.parse_args(argv)
    secret = json.loads(args.secret_json) if args.secret_json else None
    extra = dict(item.split("=", 1) for item in args.env)
    parameters = {k: v for k, v in {"AlarmEmail": args.alarm_email, "AlarmTopicArn": args.alarm_topic_arn}.items()
                  if v}
    endpoint_url = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    outputs = deploy(args.stage, endpoint_url=endpoint_url, region=args.region,
                     config_path=args.config, secret=secret, extra_env=extra, parameters=parameters)
    shown = {k: v for k, v in outputs.items() if "Secret" not in k or k == "SecretName"}
    print(json.dumps({"stack": stack_name(args.stage), "outputs": shown}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
