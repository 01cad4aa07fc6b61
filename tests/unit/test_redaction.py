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
