"""The Pipecat Cloud keys (and other credentials) from AWS Secrets Manager, cached.

The secret is a JSON object: {"public_key": "pk_...", "private_key": "..."} plus optional
telephony credentials. Values are held as pydantic SecretStr so they never appear in a repr, a log
line or an exception message.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from chalicelib.platform.aws import client
from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import logger
from chalicelib.platform.settings import get_settings


class GatewaySecrets(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    public_key: SecretStr
    private_key: SecretStr | None = None
    # telephony (each optional; a webhook whose credential is missing rejects every request)
    twilio_auth_token: SecretStr | None = None
    telnyx_public_key: SecretStr | None = None  # base64 Ed25519 public key from the Telnyx portal
    plivo_auth_token: SecretStr | None = None
    daily_pinless_secret: SecretStr | None = None  # base64 HMAC secret of the Daily dial-in config
    dialout_api_key: SecretStr | None = None  # server-to-server key for /telephony/daily/dialout
    exotel_webhook_token: SecretStr | None = None  # the secret path segment of /telephony/exotel/{token}
    # lifecycle events: the Standard Webhooks signing secret (`whsec_` + base64) of EVENTS_WEBHOOK_URL
    events_webhook_secret: SecretStr | None = None
    # guests (docs/guests.md): the human check provider's secret, and the keys guest tokens are signed with:
    # "kid:base64key" entries, comma-separated, the first signs and every one verifies (rotation: add a new first)
    human_check_secret: SecretStr | None = None
    guest_token_keys: SecretStr | None = None
    # Pipecat Cloud's organisation webhooks: the endpoint's Standard Webhooks signing secret (`whsec_...`)
    pcc_webhook_secret: SecretStr | None = None


@lru_cache(maxsize=1)
def _provider() -> Any:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

    return SecretsProvider(boto3_client=client("secretsmanager"))


def get_secrets(force_fetch: bool = False) -> GatewaySecrets:
    """The secret, cached for SECRET_CACHE_SECONDS. Raises Refused (503 at the edge) when it cannot be read."""
    settings = get_settings()
    try:
        raw = _provider().get(
            settings.pcc.secret_id,
            transform="json",
            max_age=settings.secret_cache_seconds,
            force_fetch=force_fetch,
        )
        return GatewaySecrets.model_validate(raw)
    except ValidationError:
        # Never include the value: only which keys are wrong.
        raise Refused("gateway_misconfigured", "The gateway's credentials are incomplete") from None
    except Exception as exc:  # noqa: BLE001 - any SDK/transform failure is an operator problem
        # Log the exception type only: SDK messages can echo request data.
        logger.error("secret read failed", extra={"error_type": type(exc).__name__})
        raise Refused("secret_unavailable", "The gateway's credentials are unavailable") from None


def reset_secret_cache() -> None:
    _provider.cache_clear()


def private_key() -> str:
    """The Pipecat Cloud private key (session details, listing, stopping); 503 when none is configured."""
    key = get_secrets().private_key
    if key is None:
        raise Refused("private_key_missing", "The gateway has no Pipecat Cloud private key configured")
    return key.get_secret_value()
