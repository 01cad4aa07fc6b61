"""The local event sources: feeds SQS messages to the app's `@app.on_sqs_message` handlers and the events
outbox's stream to its `@app.on_dynamodb_record` handler, as Lambda's event sources would, and runs its
`@app.schedule` handlers (reconciliation + queue sweeper) on their rate.

`chalice local` serves only HTTP routes, so `make dev` runs this beside it. Tests use `poll_once`.
`LOCAL_SCHEDULE_SECONDS` replaces the schedules' own rate locally (e.g. 10 to watch recovery quickly).
Lambda semantics kept: one message per invoke (batch_size=1), the message is deleted only when the
handler returns, a raised error leaves it for redelivery (and the queue's redrive to the DLQ), and
each record carries its own messageId and ApproximateReceiveCount.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
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


class StreamPoller:
    """Lambda's DynamoDB Streams event source for the app's `@app.on_dynamodb_record` handler: batches of up to
    its batch_size records, in order per shard, from TRIM_HORIZON; the checkpoint moves past a batch only when the
    handler returned, so a handler that raised (or was killed) gets the same batch again."""

    def __init__(self, app: Any, stream_arn: str, streams: Any = None) -> None:
        import boto3

        source = next(s for s in app.event_sources if getattr(s, "stream_arn", None) is not None)
        self.name, self.batch_size = source.name, int(source.batch_size)
        self.handler = app.handler_map[source.name]
        self.stream_arn = stream_arn
        self.streams = streams or boto3.client("dynamodbstreams")
        self.after: dict[str, str] = {}  # shard id -> the last sequence number handled

    def skip_to_latest(self) -> None:
        """Start after every record the stream holds now (a test's own events, not the run's earlier ones)."""
        for shard in self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]:
            iterator = self.streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=shard["ShardId"],
                                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while records := (page := self.streams.get_records(ShardIterator=iterator, Limit=1000))["Records"]:
                self.after[shard["ShardId"]] = records[-1]["dynamodb"]["SequenceNumber"]
                iterator = page["NextShardIterator"]

    def poll_once(self) -> int:
        """One batch per shard; returns the records handled (0 when none waited or the handler raised)."""
        handled = 0
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            position = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.after[shard_id]}
                        if shard_id in self.after else {"ShardIteratorType": "TRIM_HORIZON"})
            iterator = self.streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=shard_id,
                                                       **position)["ShardIterator"]
            records = self.streams.get_records(ShardIterator=iterator, Limit=self.batch_size)["Records"]
            if not records:
                continue
            for record in records:  # as Lambda hands them over: epoch seconds, the stream's ARN
                created = record["dynamodb"].get("ApproximateCreationDateTime")
                if hasattr(created, "timestamp"):
                    record["dynamodb"]["ApproximateCreationDateTime"] = created.timestamp()
                record["eventSourceARN"] = self.stream_arn
            try:
                self.handler({"Records": records}, _Context(self.name, timeout_ms=120_000))
            except Exception as exc:  # noqa: BLE001 - Lambda would log it and hand the batch over again
                print(f"[stream poller] handler failed ({type(exc).__name__}); batch handed over again",
                      file=sys.stderr, flush=True)
                continue
            self.after[shard_id] = records[-1]["dynamodb"]["SequenceNumber"]
            handled += len(records)
        return handled


_UNIT_SECONDS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def schedules(app: Any, override_seconds: float | None = None) -> dict[str, float]:
    """handler name -> interval in seconds, for each @app.schedule with a rate expression."""
    found = {}
    for source in app.event_sources:
        expression = getattr(source, "schedule_expression", None)
        if expression is None:
            continue
        text = expression if isinstance(expression, str) else expression.to_string()
        if override_seconds:
            found[source.name] = override_seconds
        elif text.startswith("rate("):
            value, unit = text[5:-1].split()
            found[source.name] = float(value) * _UNIT_SECONDS[unit]
    return found


def scheduled_event(name: str) -> dict[str, Any]:
    return {"version": "0", "id": f"local-{time.time_ns()}", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": "us-east-1", "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{name}"], "detail": {}}


def run_schedule(app: Any, name: str) -> None:
    try:
        result = app.handler_map[name](scheduled_event(name), _Context(name, timeout_ms=120_000))
        print(f"[local events] {name}: {json.dumps(result, default=str)}", flush=True)
    except Exception as exc:  # noqa: BLE001 - Lambda would log it; the next tick runs again
        print(f"[local events] {name} failed ({type(exc).__name__})", file=sys.stderr, flush=True)


def stage_env(project_dir: Path, stage: str) -> dict[str, str]:
    from infra.deploy import merged_stage_env

    return merged_stage_env(json.loads((project_dir / ".chalice" / "config.json").read_text()), stage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="local SQS + schedule -> Lambda handler bridge")
    parser.add_argument("--stage", default="local")
    parser.add_argument("--project-dir", type=Path, default=ROOT, help="where .chalice/config.json is")
    args = parser.parse_args(argv)
    os.environ.update(stage_env(args.project_dir, args.stage))
    sys.path.insert(0, str(ROOT))

    from app import app

    queue_url = os.environ.get("RETRY_QUEUE_URL", "")
    override = float(os.environ.get("LOCAL_SCHEDULE_SECONDS", "0") or 0) or None
    intervals = schedules(app, override)
    next_run = {name: time.monotonic() + interval for name, interval in intervals.items()}
    print(f"[local events] schedules: {intervals}", flush=True)
    stop = threading.Event()
    if sqs_handlers(app) and queue_url:
        # As many concurrent invocations as the event source allows (a dispatcher run lasts up to
        # DISPATCH_RUN_SECONDS and must not hold up the other agents' runs or the schedules).
        for _ in range(_max_concurrency(app)):
            threading.Thread(target=_consume, args=(app, queue_url, stop), daemon=True).start()
    stream_arn = os.environ.get("EVENTS_STREAM_ARN", "")
    if stream_arn:
        threading.Thread(target=_stream, args=(StreamPoller(app, stream_arn), stop), daemon=True).start()
    try:
        while True:
            now = time.monotonic()
            for name, due in next_run.items():
                if now >= due:
                    run_schedule(app, name)
                    next_run[name] = time.monotonic() + intervals[name]
            time.sleep(max(0.1, min([d - time.monotonic() for d in next_run.values()] + [1.0])))
    except KeyboardInterrupt:
        stop.set()
        return 0


def _max_concurrency(app: Any) -> int:
    found = [getattr(s, "maximum_concurrency", None) for s in app.event_sources if getattr(s, "queue", None)]
    return max([int(f) for f in found if f] or [1])


def _stream(poller: StreamPoller, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            if not poller.poll_once():
                time.sleep(0.25)
        except Exception as exc:  # noqa: BLE001 - e.g. moto restarting: try again, as Lambda's poller would
            print(f"[stream poller] read failed ({type(exc).__name__})", file=sys.stderr, flush=True)
            time.sleep(1)


def _consume(app: Any, queue_url: str, stop: threading.Event) -> None:
    import boto3

    sqs = boto3.client("sqs")
    while not stop.is_set():
        try:
            poll_once(app, sqs, queue_url, wait_seconds=5)
        except Exception as exc:  # noqa: BLE001 - e.g. moto restarting: try again, as Lambda's poller would
            print(f"[sqs poller] receive failed ({type(exc).__name__})", file=sys.stderr, flush=True)
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
