"""Feeds SQS messages to the app's `@app.on_sqs_message` handlers, as Lambda's event source would.

`chalice local` serves only HTTP routes, so `make dev` runs this beside it. Tests use `poll_once`.
Lambda semantics kept: one message per invoke (batch_size=1), the message is deleted only when the
handler returns, a raised error leaves it for redelivery (and the queue's redrive to the DLQ), and
each record carries its own messageId and ApproximateReceiveCount.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class _Context:
    """The parts of a Lambda context our handlers read."""

    def __init__(self, name: str, timeout_ms: int = 60_000) -> None:
        self.function_name = f"pipecat-gateway-local-{name}"
        self.aws_request_id = f"local-{time.time_ns()}"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_event(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes", {})),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
        ]
    }


def sqs_handlers(app: Any) -> dict[str, Any]:
    """queue name -> handler for each @app.on_sqs_message registration."""
    found = {}
    for source in app.event_sources:
        queue = getattr(source, "queue", None)
        if queue and getattr(source, "batch_size", None) is not None:
            found[queue] = app.handler_map[source.name]
    return found


def poll_once(app: Any, sqs: Any, queue_url: str, wait_seconds: int = 0) -> int:
    """Receive up to one message per handler queue and invoke the handler; returns messages handled."""
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    name = queue_url.rsplit("/", 1)[-1]
    handlers = sqs_handlers(app)
    # By queue name; an app with a single SQS handler serves whatever queue it is pointed at.
    handler = handlers.get(name) or (next(iter(handlers.values())) if len(handlers) == 1 else None)
    if handler is None:
        return 0
    messages = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=wait_seconds,
        AttributeNames=["All"], MessageAttributeNames=["All"],
    ).get("Messages", [])
    for message in messages:
        try:
            handler(sqs_event(message, queue_arn), _Context(name))
        except Exception as exc:  # noqa: BLE001 - Lambda would log it and leave the message
            print(f"[sqs poller] handler failed ({type(exc).__name__}); message left for redelivery",
                  file=sys.stderr, flush=True)
            continue
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages)


def _stage_env(stage: str) -> dict[str, str]:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="local SQS -> Lambda handler bridge")
    parser.add_argument("--stage", default="local")
    args = parser.parse_args(argv)
    os.environ.update(_stage_env(args.stage))
    sys.path.insert(0, str(ROOT))
    import boto3

    from app import app

    sqs = boto3.client("sqs")
    queue_url = os.environ.get("RETRY_QUEUE_URL", "")
    if not sqs_handlers(app):
        print("[sqs poller] the app has no SQS handlers; idle", flush=True)
    try:
        while True:
            if not sqs_handlers(app) or not queue_url:
                time.sleep(5)
                continue
            poll_once(app, sqs, queue_url, wait_seconds=5)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
