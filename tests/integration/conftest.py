"""Fixtures shared by the integration modules."""

from tests.integration.test_capacity_queue import queue  # noqa: F401 - a fresh retry queue + DLQ per test
from tests.integration.test_hostile_input import tracebacks  # noqa: F401 - unhandled errors the middleware logged
from tests.integration.test_pcc_webhooks import hooks  # noqa: F401 - Pipecat Cloud's webhook secret in place
from tests.integration.test_telephony import phone  # noqa: F401 - the provider-credentials fixture
