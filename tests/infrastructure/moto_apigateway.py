"""Test-only shim: lets moto's API Gateway import the Swagger 2.0 document `chalice deploy` sends.

moto 5.2 (the version pinned in requirements-dev.txt) differs from AWS in three ways on this path, each
a moto gap, not a property of our app:
- ImportRestApi reads `info.description` unconditionally (KeyError); AWS treats it as optional and
  Chalice has no setting for it;
- PutRestApi refuses any `swagger: "2.0"` document, although its parser reads only `paths`, the
  methods and `x-amazon-apigateway-integration`, which Swagger 2.0 and OpenAPI 3 spell the same;
- PutIntegration requires `uri` and `httpMethod`, which AWS does not require of `mock` integrations
  (Chalice's generated CORS preflight methods).
The shim changes nothing else: the document's paths, methods and integrations reach moto as Chalice
wrote them, and the API's binary media types (which moto's import ignores) are set from the document,
as AWS does. Assertions are made on what moto then holds.
"""

from __future__ import annotations

from typing import Any

from moto.apigateway.models import APIGatewayBackend

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    original_import = APIGatewayBackend.import_rest_api
    original_put = APIGatewayBackend.put_rest_api
    original_integration = APIGatewayBackend.put_integration

    def import_rest_api(self: Any, api_doc: dict[str, Any], fail_on_warnings: bool) -> Any:
        api_doc.setdefault("info", {}).setdefault("description", "")
        return original_import(self, api_doc, fail_on_warnings)

    def put_rest_api(self: Any, function_id: str, api_doc: dict[str, Any], fail_on_warnings: bool,
                     mode: str = "merge") -> Any:
        document = dict(api_doc)
        if document.pop("swagger", None) is not None:
            document["openapi"] = "3.0.1"
        api = original_put(self, function_id, document, fail_on_warnings, mode)
        api.binaryMediaTypes = list(api_doc.get("x-amazon-apigateway-binary-media-types", []))
        return api

    def put_integration(self: Any, function_id: str, resource_id: str, method_type: str, integration_type: str,
                        uri: str | None = None, integration_method: str | None = None, **kwargs: Any) -> Any:
        return original_integration(self, function_id, resource_id, method_type, integration_type, uri,
                                    integration_method, **kwargs)

    APIGatewayBackend.import_rest_api = import_rest_api  # type: ignore[method-assign]
    APIGatewayBackend.put_rest_api = put_rest_api  # type: ignore[method-assign]
    APIGatewayBackend.put_integration = put_integration  # type: ignore[method-assign]
    _installed = True
