"""`Idempotency-Key` support on top of Powertools Idempotency (DynamoDB persistence, same table).

The key is scoped to the user: the record lives under PK `IDEMPOTENCY#{userId}`, SK = hash of
(user, key). A repeat within IDEMPOTENCY_TTL_SECONDS returns the first result; a repeat while the
first is still running gets 409; the same key with a different request gets 422. Errors are not
stored, so a failed start can be retried with the same key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chalicelib.platform.aws import client
from chalicelib.platform.errors import Refused
from chalicelib.platform.settings import get_settings
from chalicelib.platform.shapes import JsonObject

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_lambda_context: Any = None


def use_lambda_context(context: Any) -> None:
    """The current invocation's context: lets an abandoned in-progress record expire with the Lambda."""
    global _lambda_context
    _lambda_context = context


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise Refused("invalid_idempotency_key",
                       "Idempotency-Key must be 1-255 visible ASCII characters")
    return key


def run_once(user_id: str, key: str, request: JsonObject, action: Callable[[], JsonObject],
             lambda_context: Any = None, *, ttl_seconds: int | None = None) -> JsonObject:
    """Run `action` at most once per (user, key); later calls get its stored result, for `ttl_seconds`
    (default IDEMPOTENCY_TTL_SECONDS)."""
    from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415 - lazy: only with the header
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import (  # noqa: PLC0415
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    settings = get_settings()
    persistence = DynamoDBPersistenceLayer(
        table_name=settings.table_name,
        key_attr="PK",
        sort_key_attr="SK",
        static_pk_value=f"IDEMPOTENCY#{user_id}",
        expiry_attr="ttl",
        boto3_client=client("dynamodb"),
    )
    config = IdempotencyConfig(
        event_key_jmespath="[user, key]",
        payload_validation_jmespath="request",
        expires_after_seconds=ttl_seconds or settings.limits.idempotency_ttl_seconds,
        raise_on_no_idempotency_key=True,
    )
    lambda_context = lambda_context or _lambda_context
    if lambda_context is not None and hasattr(lambda_context, "get_remaining_time_in_millis"):
        config.register_lambda_context(lambda_context)

    @idempotent_function(data_keyword_argument="data", persistence_store=persistence, config=config)
    def _once(data: JsonObject) -> JsonObject:
        del data
        return action()

    try:
        return dict(_once(data={"user": user_id, "key": key, "request": request}))
    except IdempotencyAlreadyInProgressError:
        raise Refused("idempotency_in_progress",
                       "A request with this Idempotency-Key is still being processed") from None
    except IdempotencyValidationError:
        raise Refused("idempotency_key_reused",
                       "This Idempotency-Key was used with a different request") from None
