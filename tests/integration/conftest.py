"""Fixtures shared by the integration modules."""

from tests.integration.test_telephony import phone  # noqa: F401 - the provider-credentials fixture
