"""Decoding request bodies into JSON objects, and pydantic errors into readable `detail`s."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from .errors import ApiError


def parse_json_object(raw: bytes | str | None, *, max_bytes: int) -> dict[str, Any]:
    if raw is None or raw in (b"", ""):
        return {}
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise ApiError(413, "request_too_large", f"Request body exceeds {max_bytes} bytes")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"Request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", "Request body must be a JSON object")
    return value


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
