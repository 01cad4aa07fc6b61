"""GET /openapi.json serves the generated document."""

from __future__ import annotations

import json

from chalicelib.api.openapi import document
from chalicelib.sessions.proxy import MAX_PROXY_DEPTH
from tests.conftest import Gateway


def test_served_document_matches(gateway: Gateway) -> None:
    response = gateway.request("GET", "/openapi.json")
    assert response.status_code == 200
    assert json.loads(response.body) == json.loads(json.dumps(document(MAX_PROXY_DEPTH)))
