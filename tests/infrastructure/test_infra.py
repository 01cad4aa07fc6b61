"""infra/template.yaml: cfn-lint clean, and deployed into moto it yields what the app needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

from chalicelib.platform.settings import parse_settings
from infra.deploy import FUNCTION_PERMISSIONS

ROOT = Path(__file__).resolve().parents[2]


def test_template_is_cfn_lint_clean() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "infra" / "template.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_table_keys_indexes_and_ttl(stack: dict[str, Any]) -> None:
    ddb = boto3.client("dynamodb")
    name = stack["outputs"]["TableName"]
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["PK", "SK"]
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {"GSI1", "GSI2"}
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "ttl"


def test_retry_queue_redrives_to_dlq_and_outlives_the_worker(stack: dict[str, Any]) -> None:
    sqs = boto3.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=stack["outputs"]["RetryQueueUrl"],
                                     AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) >= 5
    assert redrive["deadLetterTargetArn"] == stack["outputs"]["DeadLetterQueueArn"]
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    functions = config.get("lambda_functions", {})
    worker_timeout = functions.get("retry_worker", {}).get("lambda_timeout", 60)
    assert int(attrs["VisibilityTimeout"]) >= 6 * worker_timeout


def test_secret_and_alarm_exist(stack: dict[str, Any]) -> None:
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=stack["outputs"]["SecretName"])
    assert set(json.loads(secret["SecretString"])) == {"public_key", "private_key"}
    alarms = boto3.client("cloudwatch").describe_alarms(
        AlarmNames=[stack["outputs"]["DeadLetterAlarmName"]])["MetricAlarms"]
    assert alarms and alarms[0]["MetricName"] == "ApproximateNumberOfMessagesVisible"


def test_deploy_writes_stage_env_and_a_policy_per_function(stack: dict[str, Any]) -> None:
    chalice_dir = stack["project"] / ".chalice"
    config = json.loads((chalice_dir / "config.json").read_text())
    stage = config["stages"]["test"]
    env = stage["environment_variables"]
    assert env["TABLE_NAME"] == stack["outputs"]["TableName"]
    assert env["RETRY_QUEUE_URL"] == stack["outputs"]["RetryQueueUrl"]
    assert env["PCC_SECRET_ID"] == stack["outputs"]["SecretName"]
    assert stage["autogen_policy"] is False and "iam_policy_file" not in stage  # no stage-wide fallback
    for function, settings in stage["lambda_functions"].items():
        policy = json.loads((chalice_dir / settings["iam_policy_file"]).read_text())
        resources = [r for s in policy["Statement"] for r in s["Resource"]]
        assert "*" not in resources, function
        assert any(r.startswith("arn:aws:secretsmanager:") and "pcc-keys" in r for r in resources)
    # the whole merged environment is a valid configuration
    merged = {**config.get("environment_variables", {}), **env}
    assert parse_settings(merged).table_name == stack["outputs"]["TableName"]


def test_deploy_refuses_a_configuration_the_functions_would_refuse(tmp_path: Path) -> None:
    """dev needs OIDC settings: infra.deploy stops before touching AWS and names the variable."""
    config = tmp_path / ".chalice" / "config.json"
    config.parent.mkdir()
    config.write_text((ROOT / ".chalice" / "config.json").read_text())
    before = config.read_text()
    result = subprocess.run([sys.executable, "-m", "infra.deploy", "--stage", "dev", "--config", str(config),
                             "--endpoint-url", "http://127.0.0.1:9"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "OIDC_ISSUER" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert config.read_text() == before


def test_every_committed_stage_has_a_parseable_shape() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert {"local", "dev", "prod"} <= set(config["stages"])
    for name, stage in config["stages"].items():
        assert stage["autogen_policy"] is False, name
        assert "iam_policy_file" not in stage, name
        if name != "local":  # chalice local runs no IAM; every deployed function names its own policy
            assert {f: c["iam_policy_file"] for f, c in stage["lambda_functions"].items()} == {
                f: f"policy-{name}-{f}.json" for f in FUNCTION_PERMISSIONS}
    for function in FUNCTION_PERMISSIONS:  # guard rails every stage inherits
        assert config["lambda_functions"][function]["reserved_concurrency"] >= 1
    local = {**config["environment_variables"], **config["stages"]["local"]["environment_variables"]}
    settings = parse_settings(local)
    assert settings.auth.auth_mode == "insecure-dev" and settings.stage == "local"
    # the README's defaults, never ports of some earlier run
    assert local["PCC_API_URL"] == "http://127.0.0.1:8790" and local["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"


def test_routes_pass_chalice_deploy_validation() -> None:
    """What `chalice local/deploy` check before serving (the test client does not)."""
    from chalice.deploy.validate import validate_routes

    from app import app

    validate_routes(app.routes)
