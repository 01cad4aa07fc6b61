"""The OpenAPI 3.1 document of the gateway, generated from the pydantic models (served at /openapi.json)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel

from chalicelib.api import answers, models
from chalicelib.api.events import LifecycleEvent
from chalicelib.platform.shapes import JsonObject

REF = "#/components/schemas/{model}"


SCHEMAS: list[type[BaseModel]] = [
    models.StartRequest, models.ErrorResponse, models.DailyStartResponse, models.WebRTCStartResponse,
    models.WebSocketStartResponse, models.HealthResponse, answers.QueuedStart, answers.SessionRecord,
    answers.SessionList, answers.SessionDetails, answers.CancelResult, answers.PendingStart, answers.PendingStarts,
    answers.DialinAnswer, models.DialoutRequest, answers.Usage, models.GuestRequest, answers.GuestTokenAnswer,
    models.AdminGateRequest, models.BudgetOverride,
    LifecycleEvent,  # answered by no route: what the event sinks receive (docs/events.md)
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: JsonObject, description: str) -> JsonObject:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> JsonObject:
    return {str(c): _json(_ref("ErrorResponse"), "Error: {detail, code}") for c in codes}


START_SUCCESS = {"anyOf": [_ref("DailyStartResponse"), _ref("WebRTCStartResponse"), _ref("WebSocketStartResponse")]}
ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
SESSION_ID = {"name": "sessionId", "in": "path", "required": True, "schema": ID_SCHEMA}
REQUEST_ID = {"name": "requestId", "in": "path", "required": True, "schema": ID_SCHEMA}
WAIT = {"name": "wait", "in": "query", "required": False,
        "description": "Long-poll up to N seconds for a queued start", "schema": {"type": "integer", "minimum": 0,
                                                                                  "maximum": 25}}
SECURED: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"devUser": []}]
XML = {"description": "Provider XML", "content": {"application/xml": {"schema": {"type": "string"}}}}
FORM = {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "additionalProperties": {"type": "string"}}}}}
AUTH_ERRORS = (401, 503)
UPSTREAM = (502, 503, 504)


def _paths(proxy_depth: int) -> JsonObject:
    return {**_start_paths(), **_session_paths(), **_telephony_paths(), **_admin_paths(),
            **_proxy_paths(proxy_depth)}


def _admin_paths() -> JsonObject:
    """The admin API (docs/operations.md): callers whose token carries ADMIN_GROUP only."""
    agent = {"name": "agent", "in": "path", "required": True, "schema": ID_SCHEMA}
    free_form = _json({"type": "object"}, "See docs/operations.md")
    return {
        "/admin/agents/{agent}": {"get": {"operationId": "adminAgentView", "security": SECURED,
                                          "parameters": [agent],
                                          "responses": {"200": free_form, **_errors(403, 404, *AUTH_ERRORS)}}},
        "/admin/gates": {"post": {
            "operationId": "adminGate", "security": SECURED,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("AdminGateRequest")}}},
            "responses": {"200": free_form, **_errors(400, 403, 404, 413, 415, 422, *AUTH_ERRORS)}}},
        "/admin/users/{user_id}/block": {m: {
            "operationId": f"adminUser{'Block' if m == 'post' else 'Unblock'}", "security": SECURED,
            "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            **({"requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"reason": {"type": "string"}}}}}}} if m == "post" else {}),
            "responses": {"200": free_form, **_errors(400, 403, 413, 415, *AUTH_ERRORS)}} for m in ("post", "delete")},
        "/admin/users/{user_id}": {"get": {
            "operationId": "adminUserView", "security": SECURED,
            "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": free_form, **_errors(403, *AUTH_ERRORS)}}},
        "/admin/users/{user_id}/budget": {m: {
            "operationId": f"adminBudget{'Set' if m == 'put' else 'Clear'}", "security": SECURED,
            "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            **({"requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("BudgetOverride")}}}} if m == "put" else {}),
            "responses": {"200": free_form, **_errors(400, 403, 413, 415, 422, *AUTH_ERRORS)}}
            for m in ("put", "delete")},
        "/admin/sessions": {"get": {
            "operationId": "adminListSessions", "security": SECURED,
            "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                           for n in ("user", "agent", "status", "limit", "cursor")],
            "responses": {"200": free_form, **_errors(400, 403, 422, *AUTH_ERRORS)}}},
        "/admin/sessions/{sessionId}": {"delete": {
            "operationId": "adminStopSession", "security": SECURED, "parameters": [SESSION_ID],
            "responses": {"200": free_form, **_errors(403, 404, *AUTH_ERRORS, *UPSTREAM)}}},
    }


def _start_paths() -> JsonObject:
    return {
        "/health": {"get": {"operationId": "health", "security": [],
                            "responses": {"200": _json(_ref("HealthResponse"), "OK")}}},
        "/openapi.json": {"get": {"operationId": "openapi", "security": [],
                                  "responses": {"200": _json({"type": "object"}, "This document")}}},
        "/start": {"get": {
            "operationId": "pendingStarts", "security": SECURED,
            "responses": {"200": _json(_ref("PendingStarts"), "Queued or starting, newest first"),
                          **_errors(*AUTH_ERRORS)},
        }, "post": {
            "operationId": "startSession", "security": SECURED,
            "parameters": [WAIT, {"name": "Idempotency-Key", "in": "header", "required": False,
                                  "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("StartRequest")}}},
            "responses": {"200": _json(START_SUCCESS, "Started: the body the transport's client accepts"),
                          "202": _json(_ref("QueuedStart"), "Queued at capacity: poll statusUrl"),
                          **_errors(400, 404, 409, 413, 415, 422, 429, *AUTH_ERRORS, *UPSTREAM)},
        }},
        "/start/{requestId}": {
            "get": {"operationId": "startStatus", "security": SECURED, "parameters": [REQUEST_ID, WAIT],
                    "responses": {"200": _json(START_SUCCESS, "Started"),
                                  "202": _json(_ref("QueuedStart"), "Still queued"),
                                  **_errors(404, 409, 410, 422, 429, *AUTH_ERRORS)}},
            "delete": {"operationId": "cancelStart", "security": SECURED, "parameters": [REQUEST_ID],
                       "responses": {"200": _json(_ref("CancelResult"), "Cancelled (or already finished)"),
                                     **_errors(404, 409, *AUTH_ERRORS)}},
        },
    }


def _session_paths() -> JsonObject:
    return {
        "/guest": {"post": {
            "operationId": "guestToken", "security": [],
            "description": "A guest token for a visitor of an allowed page who passed the human check "
                           "(docs/guests.md); off unless GUEST_ACCESS.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("GuestRequest")}}},
            "responses": {"200": _json(_ref("GuestTokenAnswer"), "A guest token"),
                          **_errors(400, 403, 413, 415, 422, 429, 503)}}},
        "/sessions": {"get": {
            "operationId": "listSessions", "security": SECURED,
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string",
                                                              "enum": ["active", "ended", "stopped"]}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": _json(_ref("SessionList"), "Newest first"), **_errors(400, 422, *AUTH_ERRORS)},
        }},
        "/sessions/{sessionId}": {
            "get": {"operationId": "getSession", "security": SECURED, "parameters": [SESSION_ID],
                    "responses": {"200": _json(_ref("SessionDetails"), "Our record + Pipecat Cloud's details"),
                                  **_errors(404, *AUTH_ERRORS)}},
            "delete": {"operationId": "stopSession", "security": SECURED, "parameters": [SESSION_ID],
                       "responses": {"200": _json(_ref("SessionRecord"), "Stopped (idempotent)"),
                                     **_errors(400, 404, *AUTH_ERRORS, *UPSTREAM)}},
        },
        "/usage": {"get": {"operationId": "getUsage", "security": SECURED,
                           "responses": {"200": _json(_ref("Usage"), "The caller's usage and budget, per window"),
                                         **_errors(*AUTH_ERRORS)}}},
    }


def _telephony_paths() -> JsonObject:
    return {
        "/pcc/webhooks": {"post": {
            "operationId": "pccWebhook", "security": [],
            "description": "Pipecat Cloud's organisation webhooks, Standard Webhooks signed (docs/operations.md).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": _json({"type": "object", "properties": {"status": {"type": "string"}}},
                                       "Handled, ignored, or a duplicate delivery"),
                          **_errors(400, 401, 413, 415)}}},
        "/telephony/twilio": {"post": _webhook("twilioWebhook")},
        "/telephony/telnyx": {"post": _webhook("telnyxWebhook")},
        "/telephony/plivo": {"get": _webhook("plivoWebhookGet", body=False), "post": _webhook("plivoWebhook")},
        "/telephony/daily/dialin": {"post": {
            "operationId": "dailyDialin", "security": [],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": _json(_ref("DialinAnswer"), "Started (or the configuration test)"),
                          **_errors(400, 403, 409, 413, 415, 503, 502, 504)}}},
        "/telephony/exotel/{token}": {m: {
            "operationId": f"exotelWebhook{m.title()}", "security": [],
            "description": "Exotel Voicebot dynamic URL; the secret token in the path is required.",
            "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
            **({"requestBody": FORM} if m == "post" else {}),
            "responses": {"200": _json({"type": "object", "required": ["url"],
                                        "properties": {"url": {"type": "string"}}}, "Where Exotel streams the call"),
                          **_errors(400, 403, 409, 415, 503, 502, 504)}} for m in ("get", "post")},
        "/telephony/daily/dialout": {"post": {
            "operationId": "dailyDialout", "security": [*SECURED, {"apiKey": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DialoutRequest")}}},
            "responses": {"200": _json(_ref("DailyStartResponse"), "Started"),
                          "202": _json(_ref("QueuedStart"), "Queued at capacity"),
                          **_errors(400, 403, 404, 413, 415, 422, 429, *AUTH_ERRORS, *UPSTREAM)}}},
    }


def _proxy_paths(proxy_depth: int) -> JsonObject:
    paths: JsonObject = {}
    for depth in range(1, proxy_depth + 1):
        segments = [f"p{i}" for i in range(1, depth + 1)]
        path = "/sessions/{sessionId}/" + "/".join(f"{{{s}}}" for s in segments)
        params = [SESSION_ID] + [{"name": s, "in": "path", "required": True, "schema": ID_SCHEMA}
                                 for s in segments]
        operation = {
            "security": SECURED, "parameters": params,
            "description": "Session API proxy to the bot (multi-segment paths: one route per depth). "
                           "Answers with the bot's status, headers and body.",
            "responses": {"default": {"description": "The bot's answer, unchanged"}},
        }
        paths[path] = {m: {**operation, "operationId": f"sessionProxy{depth}{m.title()}"}
                       for m in ("get", "post", "put", "patch", "delete", "options", "head")}
    return paths


def _webhook(operation_id: str, body: bool = True) -> JsonObject:
    op: JsonObject = {"operationId": operation_id, "security": [],
                          "description": "Provider webhook; the provider's signature is required.",
                          "responses": {"200": XML, **_errors(400, 403, 409, 415, 503, 502, 504)}}
    if body:
        op["requestBody"] = FORM
    return op


@lru_cache(maxsize=1)
def document(proxy_depth: int = 6) -> JsonObject:
    schemas: JsonObject = {}
    for model in SCHEMAS:
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "pipecat-gateway", "version": "0.1.0",
                 "description": "Start and manage Pipecat Cloud sessions without exposing its keys."},
        "paths": _paths(proxy_depth),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "devUser": {"type": "apiKey", "in": "header", "name": "X-Dev-User",
                            "description": "insecure-dev mode on the local stage only"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
                           "description": "server-to-server key for dial-out"},
            },
        },
    }
