"""The deploy path users run: `make deploy STAGE=dev REGION=eu-west-1` (infra.deploy, `chalice deploy`, the API
guard rails) against a moto server, in a copy of the project, whose environment names another region (every part
must land in the one asked for); then `make secret` (a key rotated, the others kept) and `make destroy` (what it
removes and keeps, and a redeploy of the same stage name after DELETE_DATA=1).

Asserts what moto then holds, read back with boto3: the three functions with their memory, timeouts
and reserved concurrency, each with its own role and policy; the SQS event source (batch size 1,
capped concurrency) on the retry queue; the reconcile schedule; the REST API with every route of the
app and its binary media types; stage throttling; the DLQ alarm e-mailed through SNS; the dashboard.
moto needs a small, documented shim to import Chalice's Swagger document (tests/infrastructure/
moto_apigateway.py); nothing is asserted about the shim's own output that AWS would not produce.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.api_guard_rails import DEFAULT_BURST, DEFAULT_RATE, GATEWAY_RESPONSES
from infra.deploy import FUNCTION_PERMISSIONS, function_name, policy_file
from tests.infrastructure import moto_apigateway

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
STAMP = VENV_BIN.parent / ".installed"
ALARM_EMAIL = "oncall@example.com"
REGION = "eu-west-1"  # the deploy's; the environment says us-east-1, where nothing may land


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, str]]:
    """A moto server of its own (so everything in it was made by this deploy)."""
    from moto.server import ThreadedMotoServer

    moto_apigateway.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # the kernel picks the port as it binds
    server.start()
    port = server.get_host_and_port()[1]
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    yield env
    server.stop()


def _client(aws: dict[str, str], service: str, region: str = REGION) -> Any:
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                 region_name=region).client(service, endpoint_url=aws["AWS_ENDPOINT_URL"])


def _project_copy(tmp: Path) -> Path:
    """What a user has after cloning: the app, infra/, the Makefile, the committed config."""
    project = tmp / "project"
    project.mkdir()
    for item in ("app.py", "requirements.txt", "requirements-dev.txt", "Makefile"):
        shutil.copy2(ROOT / item, project / item)
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", "dist", "demo")
    for folder in ("chalicelib", "infra"):
        shutil.copytree(ROOT / folder, project / folder, ignore=ignore)
    (project / ".chalice").mkdir()
    shutil.copy2(ROOT / ".chalice" / "config.json", project / ".chalice" / "config.json")
    return project


def _run(cmd: list[str], project: Path, aws: dict[str, str], timeout: float = 600, stdin: str | None = None,
         code: int = 0) -> str:
    env = {**os.environ, **aws}
    result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout,
                            input=stdin)
    assert result.returncode == code, f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def _make(target: str, deployed: dict[str, Any], aws: dict[str, str], *args: str, **kwargs: Any) -> str:
    # -o: the venv is already installed; make must not reinstall it because the copied files are new
    return _run(["make", "--no-print-directory", "-o", str(STAMP), target, "STAGE=dev", f"VENV={VENV_BIN.parent}",
                 *args], deployed["project"], aws, **kwargs)


@pytest.fixture(scope="module")
def deployed(aws: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = _project_copy(tmp_path_factory.mktemp("deploy"))
    deploy_args = ("--env OIDC_ISSUER=https://issuer.example.com --env OIDC_AUDIENCE=gateway-clients "
                   f"--alarm-email {ALARM_EMAIL}")
    # -o: the venv is already installed; make must not reinstall it because the copied files are new
    output = _make("deploy", {"project": project}, aws, f"REGION={REGION}", f"DEPLOY_ARGS={deploy_args}", timeout=900)
    config = json.loads((project / ".chalice" / "config.json").read_text())
    record = json.loads((project / ".chalice" / "deployed" / "dev.json").read_text())
    return {"project": project, "output": output, "config": config, "record": record}


def _functions(aws: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {f["FunctionName"]: f for f in _client(aws, "lambda").list_functions()["Functions"]}


@pytest.mark.timeout(900)
def test_make_deploy_creates_functions_with_their_settings(aws: dict[str, str], deployed: dict[str, Any]) -> None:
    functions = _functions(aws)
    settings = deployed["config"]["lambda_functions"]
    lam = _client(aws, "lambda")
    for function in FUNCTION_PERMISSIONS:
        name = function_name("pipecat-gateway", "dev", function)
        assert name in functions, sorted(functions)
        deployed_fn = functions[name]
        assert deployed_fn["MemorySize"] == settings[function]["lambda_memory_size"]
        assert deployed_fn["Timeout"] == settings[function]["lambda_timeout"]
        concurrency = lam.get_function_concurrency(FunctionName=name)
        assert concurrency["ReservedConcurrentExecutions"] == settings[function]["reserved_concurrency"]
        env = deployed_fn["Environment"]["Variables"]
        assert env["STAGE"] == "dev" and env["TABLE_NAME"] == "pipecat-gateway-dev-sessions"


def test_each_function_runs_as_its_own_role_with_the_policy_written_for_it(
        aws: dict[str, str], deployed: dict[str, Any]) -> None:
    iam = _client(aws, "iam")
    functions = _functions(aws)
    roles = set()
    for function in FUNCTION_PERMISSIONS:
        role_arn = functions[function_name("pipecat-gateway", "dev", function)]["Role"]
        role = role_arn.rsplit("/", 1)[-1]
        roles.add(role)
        names = iam.list_role_policies(RoleName=role)["PolicyNames"]
        assert len(names) == 1, names
        document = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        written = json.loads((deployed["project"] / ".chalice" / policy_file("dev", function)).read_text())
        assert document == written, function
        assert not iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert len(roles) == len(FUNCTION_PERMISSIONS) == 5


def test_worker_is_fed_by_the_retry_queue_one_message_at_a_time(aws: dict[str, str], deployed: dict[str, Any]) -> None:
    mappings = _client(aws, "lambda").list_event_source_mappings()["EventSourceMappings"]
    assert len(mappings) == 2  # the retry queue, and the events outbox's stream
    mapping = next(m for m in mappings if ":sqs:" in m["EventSourceArn"])
    assert mapping["EventSourceArn"].endswith(":pipecat-gateway-dev-retry")
    assert mapping["FunctionArn"].endswith(":function:" + function_name("pipecat-gateway", "dev", "retry_worker"))
    assert mapping["BatchSize"] == 1
    reserved = deployed["config"]["lambda_functions"]["retry_worker"]["reserved_concurrency"]
    maximum = mapping.get("ScalingConfig", {}).get("MaximumConcurrency")
    assert maximum is not None and 2 <= maximum <= reserved  # the event source never out-runs the reservation


def test_events_are_delivered_from_the_outbox_stream_from_its_start(aws: dict[str, str],
                                                                    deployed: dict[str, Any]) -> None:
    mappings = _client(aws, "lambda").list_event_source_mappings()["EventSourceMappings"]
    stream = [m for m in mappings if ":dynamodb:" in m["EventSourceArn"]]
    assert len(stream) == 1
    mapping = stream[0]
    stage_env = deployed["config"]["stages"]["dev"]["environment_variables"]
    assert mapping["EventSourceArn"] == stage_env["EVENTS_STREAM_ARN"]
    assert mapping["FunctionArn"].endswith(":function:" + function_name("pipecat-gateway", "dev", "deliver_events"))
    assert mapping["BatchSize"] == 100 and mapping["StartingPosition"] == "TRIM_HORIZON"


def test_reconcile_runs_every_five_minutes_and_end_detection_every_minute(
        aws: dict[str, str], deployed: dict[str, Any]) -> None:
    events = _client(aws, "events")
    rules = [r for r in events.list_rules()["Rules"] if r.get("ScheduleExpression")]
    scheduled = {}
    for rule in rules:
        [target] = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        scheduled[target["Arn"].rsplit(":", 1)[-1]] = rule["ScheduleExpression"]
    assert scheduled == {function_name("pipecat-gateway", "dev", "reconcile_sessions"): "rate(5 minutes)",
                         function_name("pipecat-gateway", "dev", "detect_ended"): "rate(1 minute)"}


def test_rest_api_serves_every_route_with_binary_types_and_throttling(
        aws: dict[str, str], deployed: dict[str, Any]) -> None:
    from app import app

    apigateway = _client(aws, "apigateway")
    apis = apigateway.get_rest_apis()["items"]
    assert [a["name"] for a in apis] == ["pipecat-gateway"]
    api = apis[0]
    assert "application/octet-stream" in api["binaryMediaTypes"]
    resources = apigateway.get_resources(restApiId=api["id"], limit=500)["items"]
    served = {r["path"]: set(r.get("resourceMethods", {})) for r in resources}
    for path, methods in app.routes.items():
        assert path in served, path
        assert set(methods) <= served[path], (path, set(methods) - served[path])
    stage = apigateway.get_stage(restApiId=api["id"], stageName="api")
    throttling = stage["methodSettings"]["*/*"]
    assert throttling["throttlingRateLimit"] == DEFAULT_RATE
    assert throttling["throttlingBurstLimit"] == DEFAULT_BURST


def test_what_api_gateway_answers_by_itself_is_json_detail_and_code(
        aws: dict[str, str], deployed: dict[str, Any]) -> None:
    """An unknown route (or a proxy path deeper than 6 segments) is 404 `route_not_found`, not API Gateway's
    `403 Missing Authentication Token`; every gateway response is `{"detail", "code"}` JSON."""
    apigateway = _client(aws, "apigateway")
    [api] = apigateway.get_rest_apis()["items"]
    responses = {r["responseType"]: r for r in apigateway.get_gateway_responses(restApiId=api["id"])["items"]}
    for response_type, (status, code, _detail) in GATEWAY_RESPONSES.items():
        response = responses[response_type]
        body = json.loads(response["responseTemplates"]["application/json"])
        assert set(body) == {"detail", "code"} and body["code"] == code, response_type
        if status is not None:
            assert response["statusCode"] == status, response_type
        assert response["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"].startswith("'")
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    assert responses["THROTTLED"]["statusCode"] == "429"
    # Lambda throttling the API function reaches API Gateway as an integration failure: load, not a 500
    assert responses["INTEGRATION_FAILURE"]["statusCode"] == "429"


def test_dlq_alarm_mails_the_operator_and_the_dashboard_shows_the_app(aws: dict[str, str],
                                                                      deployed: dict[str, Any]) -> None:
    cloudwatch = _client(aws, "cloudwatch")
    alarm = cloudwatch.describe_alarms(AlarmNames=["pipecat-gateway-dev-retry-dlq-not-empty"])["MetricAlarms"][0]
    topic = alarm["AlarmActions"][0]
    subscriptions = _client(aws, "sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", ALARM_EMAIL)]
    orphans = cloudwatch.describe_alarms(AlarmNames=["pipecat-gateway-dev-orphans-found"])["MetricAlarms"][0]
    assert orphans["MetricName"] == "OrphansFound" and orphans["AlarmActions"] == [topic]
    assert {d["Name"]: d["Value"] for d in orphans["Dimensions"]} == {"service": "pipecat-gateway", "stage": "dev"}
    stranded = cloudwatch.describe_alarms(AlarmNames=["pipecat-gateway-dev-queued-start-stranded"])["MetricAlarms"][0]
    assert stranded["MetricName"] == "QueuedStartsStranded" and stranded["AlarmActions"] == [topic]
    for name, metric in (("spend-threshold", "SpendThresholdReached"), ("start-gate-closed", "StartGatesClosed"),
                         ("pcc-api-key-changed", "PccApiKeyChanged")):  # the operator's side (docs/operations.md)
        found = cloudwatch.describe_alarms(AlarmNames=[f"pipecat-gateway-dev-{name}"])["MetricAlarms"][0]
        assert found["MetricName"] == metric and found["AlarmActions"] == [topic], name
        assert {d["Name"]: d["Value"] for d in found["Dimensions"]} == {"service": "pipecat-gateway", "stage": "dev"}
    guests = cloudwatch.describe_alarms(AlarmNames=["pipecat-gateway-dev-guest-budget-80"])["MetricAlarms"][0]
    assert (guests["MetricName"], guests["Threshold"], guests["ComparisonOperator"]) == (
        "GuestBudgetUsedPercent", 80, "GreaterThanOrEqualToThreshold")  # docs/guests.md
    assert guests["AlarmActions"] == [topic]
    body = json.loads(cloudwatch.get_dashboard(DashboardName="pipecat-gateway-dev")["DashboardBody"])
    metrics = {m[1] for widget in body["widgets"] for m in widget["properties"]["metrics"]}
    # the app's own EMF metrics (every name must be one the code emits) and AWS's queue / API metrics
    source = "\n".join(p.read_text() for p in (ROOT / "chalicelib").rglob("*.py"))
    for name in ("SessionsStarted", "StartsQueued", "QueuedStartsStarted", "QueuedStartsFailed", "PccLatency",
                 "OrphansFound", "OrphansStopped", "QueuedStartsStranded"):
        assert name in metrics and f'"{name}"' in source, name
    assert {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage", "4XXError", "5XXError"} <= metrics


def test_the_deploy_names_the_api_url_and_warns_of_an_open_cors_origin(deployed: dict[str, Any],
                                                                       aws: dict[str, str]) -> None:
    [api] = _client(aws, "apigateway").get_rest_apis()["items"]
    url = f"https://{api['id']}.execute-api.{REGION}.amazonaws.com/api"
    assert f"API URL: {url}  (your app's start endpoint: {url}/start)" in deployed["output"]
    assert "CORS_ALLOW_ORIGIN is *" in deployed["output"]  # the committed dev stage leaves it open


def test_every_part_lands_in_the_region_asked_for(aws: dict[str, str], deployed: dict[str, Any]) -> None:
    """The environment says us-east-1 (as a profile's region would); REGION=eu-west-1 wins for the data stack,
    the functions, the API and the guard rails alike: nothing of the stage is in us-east-1."""
    assert aws["AWS_DEFAULT_REGION"] == "us-east-1"
    assert _functions(aws) and _client(aws, "apigateway").get_rest_apis()["items"]
    assert "pipecat-gateway-dev-sessions" in _client(aws, "dynamodb").list_tables()["TableNames"]
    # (moto's backends are shared by every moto server of a test process: other tests' stacks may be there)
    elsewhere = {service: _client(aws, service, "us-east-1") for service in ("lambda", "dynamodb", "apigateway")}
    assert not [f for f in elsewhere["lambda"].list_functions()["Functions"]
                if f["FunctionName"].startswith("pipecat-gateway-dev")]
    assert not [t for t in elsewhere["dynamodb"].list_tables()["TableNames"] if t.startswith("pipecat-gateway-dev")]
    assert not [a for a in elsewhere["apigateway"].get_rest_apis()["items"] if a["name"] == "pipecat-gateway"]
    env = deployed["config"]["stages"]["dev"]["environment_variables"]
    assert f":{REGION}:" in env["EVENTS_STREAM_ARN"]  # the stage's environment names eu-west-1's resources


def test_a_deploy_without_a_region_says_so_before_anything_is_made(aws: dict[str, str],
                                                                   deployed: dict[str, Any]) -> None:
    without = {**aws, "AWS_DEFAULT_REGION": "", "AWS_REGION": ""}
    out = _make("deploy", deployed, without, code=2)
    assert "set REGION" in out and "infra.deploy" not in out


def _secret_value(aws: dict[str, str]) -> dict[str, Any]:
    raw = _client(aws, "secretsmanager").get_secret_value(SecretId="pipecat-gateway/dev/pcc-keys")["SecretString"]
    return dict(json.loads(raw))


def test_make_secret_rotates_one_key_and_keeps_the_others(aws: dict[str, str], deployed: dict[str, Any]) -> None:
    first = {"public_key": "pk_old_value", "private_key": "sk_old_value", "twilio_auth_token": "tw_value"}
    _make("secret", deployed, aws, f"REGION={REGION}", stdin=json.dumps(first))
    assert _secret_value(aws) == first
    out = _make("secret", deployed, aws, f"REGION={REGION}", stdin=json.dumps({"public_key": "pk_new_value"}))
    assert _secret_value(aws) == {**first, "public_key": "pk_new_value"}
    report = json.loads(out.strip().splitlines()[-1])
    assert report["changed"] == ["public_key"] and report["kept"] == ["private_key", "twilio_auth_token"]
    assert "_value" not in out  # names only, never a value
    _make("secret", deployed, aws, f"REGION={REGION}", stdin=json.dumps({"twilio_auth_token": None}))
    assert _secret_value(aws) == {"public_key": "pk_new_value", "private_key": "sk_old_value"}
    _make("secret", deployed, aws, f"REGION={REGION}", stdin="not json", code=2)
    assert _secret_value(aws) == {"public_key": "pk_new_value", "private_key": "sk_old_value"}


def _stage_gone(aws: dict[str, str]) -> None:
    """Everything make destroy removes, read back from moto."""
    assert not _functions(aws)
    assert not _client(aws, "lambda").list_event_source_mappings()["EventSourceMappings"]
    assert not _client(aws, "events").list_rules()["Rules"]
    assert not [r for r in _client(aws, "iam").list_roles()["Roles"] if r["RoleName"].startswith("pipecat-gateway-")]
    assert not _client(aws, "apigateway").get_rest_apis()["items"]
    stacks = _client(aws, "cloudformation").list_stacks()["StackSummaries"]
    assert all(s["StackStatus"] == "DELETE_COMPLETE" for s in stacks if s["StackName"] == "pipecat-gateway-dev-data")
    assert not [x for x in _client(aws, "secretsmanager").list_secrets()["SecretList"]
                if x["Name"] == "pipecat-gateway/dev/pcc-keys"]
    assert not _client(aws, "cloudwatch").describe_alarms(AlarmNamePrefix="pipecat-gateway-dev-")["MetricAlarms"]
    assert not [q for q in _client(aws, "sqs").list_queues().get("QueueUrls", []) if "pipecat-gateway-dev" in q]
    assert "pipecat-gateway-dev-events" not in _client(aws, "dynamodb").list_tables()["TableNames"]


@pytest.mark.timeout(1800)
def test_make_destroy_removes_the_stage_keeps_the_table_and_the_name_can_be_deployed_again(
        aws: dict[str, str], deployed: dict[str, Any]) -> None:
    out = _make("destroy", deployed, aws, f"REGION={REGION}", timeout=900)
    _stage_gone(aws)
    report = json.loads(out[out.index("{\n"):])
    assert "pipecat-gateway-dev-sessions" in _client(aws, "dynamodb").list_tables()["TableNames"]  # kept, and said
    assert any("table pipecat-gateway-dev-sessions" in k for k in report["kept"])
    assert any("it held: private_key, public_key" in r for r in report["removed"])  # names, never values
    assert "DELETE_DATA=1" in report["redeploy"] and "_value" not in out
    out = _make("destroy", deployed, aws, f"REGION={REGION}", "DELETE_DATA=1", timeout=900)
    assert "pipecat-gateway-dev-sessions" not in _client(aws, "dynamodb").list_tables()["TableNames"]
    assert "make deploy STAGE=dev" in json.loads(out[out.index("{\n"):])["redeploy"]
    # the same stage name deploys again, as the report says
    _make("deploy", deployed, aws, f"REGION={REGION}", "DEPLOY_ARGS=--env OIDC_ISSUER=https://issuer.example.com "
          "--env OIDC_AUDIENCE=gateway-clients", timeout=900)
    assert set(_functions(aws)) == {function_name("pipecat-gateway", "dev", f) for f in FUNCTION_PERMISSIONS}
    _make("destroy", deployed, aws, f"REGION={REGION}", "DELETE_DATA=1", timeout=900)
    _stage_gone(aws)
