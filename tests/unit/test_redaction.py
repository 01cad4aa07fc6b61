from __future__ import annotations

import io
import logging

from chalicelib.platform.observability import RedactingFilter, logger, redact


def test_redact_masks_bearer_tokens_keys_and_token_fields() -> None:
    text = 'Authorization: Bearer eyJabc.def.ghi key=pk_live_123 {"token": "abc123"} sk_secret_9'
    out = redact(text)
    for secret in ("eyJabc.def.ghi", "pk_live_123", "abc123", "sk_secret_9"):
        assert secret not in out
    assert "[REDACTED]" in out


def test_logger_output_never_contains_secrets() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.info("calling with Bearer pk_abc", extra={"authorization": "Bearer xyz", "dailyToken": "dt_1",
                                                          "note": "token=zzz"})
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    for secret in ("pk_abc", "xyz", "dt_1", "zzz"):
        assert secret not in logged


def test_a_request_s_user_is_not_on_another_thread_s_log_lines() -> None:
    """One process may serve a request and run the dispatcher together (make dev, the tests, the benchmarks): the
    user a request thread tagged its lines with never appears on the dispatcher's."""
    import json
    import threading

    from chalicelib.platform.observability import tag_request, untag_request

    tagged, seen = threading.Event(), threading.Event()

    def request_thread() -> None:
        tag_request(user_id="alice")
        tagged.set()
        seen.wait(5)
        untag_request("user_id")

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.handlers[0].formatter)
    thread = threading.Thread(target=request_thread)
    thread.start()
    logger.addHandler(handler)
    try:
        assert tagged.wait(5)
        untag_request("user_id")  # this thread's own earlier requests (the suite runs many in one process)
        logger.info("queued start served")
    finally:
        seen.set()
        thread.join()
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["message"] == "queued start served" and "user_id" not in line
