"""The OpenAPI document stays in sync with the app's routes and models."""

from __future__ import annotations

import json
from pathlib import Path

from app import app
from chalicelib.api.models import StartRequest
from chalicelib.api.openapi import document
from chalicelib.sessions.proxy import MAX_PROXY_DEPTH


def test_every_route_and_method_is_documented_and_nothing_else() -> None:
    doc = document(MAX_PROXY_DEPTH)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routes = set()
    for path, methods in app.routes.items():
        openapi_path = path.replace("{session_id}", "{sessionId}").replace("{request_id}", "{requestId}")
        routes |= {(openapi_path, m) for m in methods}
    assert documented == routes


def test_document_is_openapi_31_and_models_come_from_pydantic() -> None:
    doc = document(MAX_PROXY_DEPTH)
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["schemas"]["StartRequest"] == StartRequest.model_json_schema(
        ref_template="#/components/schemas/{model}")
    assert doc["components"]["schemas"]["StartRequest"]["additionalProperties"] is False
    refs = {v for v in json.dumps(doc).split('"') if v.startswith("#/components/schemas/")}
    assert refs, "the document references its schemas"
    for ref in refs:
        assert ref.rsplit("/", 1)[-1] in doc["components"]["schemas"], ref
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            assert "operationId" in op


def test_the_lifecycle_event_schema_is_published_with_every_event_type() -> None:
    from chalicelib.api.events import EVENT_TYPES

    schema = document(MAX_PROXY_DEPTH)["components"]["schemas"]["LifecycleEvent"]
    assert set(schema["properties"]["type"]["enum"]) == set(EVENT_TYPES)
    assert {"id", "type", "time", "userId", "agent"} <= set(schema["required"])
    assert len(EVENT_TYPES) == 14
    docs = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    assert all(f"| `{name}` |" in docs for name in EVENT_TYPES)  # the catalogue lists every type


def test_the_outbox_writes_only_the_published_event_types() -> None:
    import pytest

    from chalicelib.api.events import EVENT_TYPES
    from chalicelib.store.outbox import EVENT_TYPE_NAMES, event_writes

    assert EVENT_TYPE_NAMES == set(EVENT_TYPES)
    with pytest.raises(ValueError):
        event_writes("session.finished", user_id="u", agent="a")
