"""Structured JSON logs (Powertools Logger) and EMF metrics, with secrets redacted.

Redaction is defence in depth: the code never passes keys or tokens to the logger, and this filter
also masks anything that looks like a bearer token, a Pipecat key or a token field.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from aws_lambda_powertools import Logger

SERVICE = "pipecat-gateway"
NAMESPACE = "PipecatGateway"

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]+"),
    re.compile(r"\b(pk_|sk_)[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)((?:token|authorization|secret|password|signature)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}&]+"),
]
_SENSITIVE_KEYS = {"authorization", "token", "dailytoken", "daily_token", "public_key", "private_key",
                   "secret", "password", "x-twilio-signature", "x-pinless-signature"}


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in _SENSITIVE_KEYS:
        return "[REDACTED]"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


class RedactingFilter(logging.Filter):
    _STANDARD = set(vars(logging.makeLogRecord({})))

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.args:
            record.args = tuple(_redact_value("", a) for a in record.args) if isinstance(
                record.args, tuple) else record.args
        for key, value in list(vars(record).items()):
            if key not in self._STANDARD:
                setattr(record, key, _redact_value(key, value))
        return True


# httpx logs every request URL at INFO; ours carry no secrets, but proxied query strings might.
logging.getLogger("httpx").setLevel(logging.WARNING)
# botocore tells at INFO where it found credentials and endpoints, on every new client: not our story.
logging.getLogger("botocore").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

logger = Logger(service=SERVICE)
for _handler in logger.handlers:
    _handler.addFilter(RedactingFilter())


def tag_request(**keys: Any) -> None:
    """Keys every later log line of this request carries (the user, API Gateway's request id). Kept per thread:
    where one process serves requests and the dispatcher together (`make dev`, the tests, the benchmarks), a
    dispatcher's line never carries the user of a request another thread is serving."""
    logger.thread_safe_append_keys(**keys)


def untag_request(*names: str) -> None:
    logger.thread_safe_remove_keys(list(names))


_metrics: Any = None


def metrics() -> Any:
    """Powertools EMF metrics, created on first use."""
    global _metrics
    if _metrics is None:
        from aws_lambda_powertools import Metrics  # noqa: PLC0415

        _metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
        _metrics.set_default_dimensions(stage=_stage())
    return _metrics


def _stage() -> str:
    """Every metric carries the stage, so one account's dev and prod dashboards never mix."""
    return os.environ.get("STAGE", "") or "unknown"


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Add a count metric; with dimensions it goes out at once as its own EMF blob."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric  # noqa: PLC0415

    if dimensions:
        with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE,
                           default_dimensions={**dimensions, "stage": _stage()}):
            pass
        return
    metrics().add_metric(name=name, unit=MetricUnit.Count, value=value)


def timing(name: str, milliseconds: float) -> None:
    from aws_lambda_powertools.metrics import MetricUnit  # noqa: PLC0415

    metrics().add_metric(name=name, unit=MetricUnit.Milliseconds, value=milliseconds)


_flush_lock = threading.Lock()


def flush_metrics() -> None:
    """Write the metrics added so far (the dispatcher adds them from its attempt threads: one flush at a time,
    and the emptiness check and the flush under the same lock)."""
    with _flush_lock:
        if _metrics is not None and _metrics.metric_set:
            _metrics.flush_metrics()
