"""Decoding request bodies into JSON objects, and pydantic errors into readable `detail`s.

Strict, because every value may travel on to Pipecat Cloud and to the bot: the size is checked before
parsing; the body must be UTF-8; `NaN`, `Infinity` and numbers that overflow a double (`1e999`) are
refused (no JSON encoder downstream can carry them); strings must be valid Unicode (a lone surrogate
escape such as `"\\ud800"` cannot be encoded again); nesting deeper than MAX_JSON_DEPTH is refused.
Each of these is a 400 `invalid_json`, never a 5xx.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError

from chalicelib.platform.errors import Refused
from chalicelib.platform.shapes import JsonObject

MAX_JSON_DEPTH = 32  # objects/arrays inside each other, the body itself counting as 1


def _invalid(detail: str) -> Refused:
    return Refused("invalid_json", detail)


def _refuse_constant(name: str) -> Any:
    raise _invalid(f"Request body is not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _invalid(f"Request body is not valid JSON: {text[:32]} does not fit a double")
    return value


def _check_tree(value: Any) -> None:
    """Depth and Unicode, iteratively (a recursive walk is what deep input would break)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise _invalid(f"Request body nests deeper than {MAX_JSON_DEPTH} levels")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key)
                stack.append((item, depth + 1))


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("Request body is not valid JSON: a string holds a lone surrogate") from None


def parse_json_object(raw: bytes | str | None, *, max_bytes: int) -> JsonObject:
    if raw is None or raw in (b"", ""):
        return {}
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise Refused("request_too_large", f"Request body exceeds {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("Request body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise _invalid(f"Request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and ints longer than Python converts (4300 digits)
        raise _invalid(f"Request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise _invalid("Request body must be a JSON object")
    _check_tree(value)
    return value


def validation_error(exc: ValidationError) -> Refused:
    """422 `validation_error`: `detail` a sentence people can read (client-js shows it as the error
    message), `errors` the structured list [{loc, msg, type}] for programs."""
    errors = [
        {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    parts = [f"{'.'.join(e['loc']) or 'request'}: {e['msg']}" for e in errors[:5]]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return Refused("validation_error", "Invalid request: " + "; ".join(parts) + more,
                    extra={"errors": errors})


def query_error(name: str, message: str) -> Refused:
    """422 `validation_error` for a query parameter, in the same shape as a body's (`errors` included)."""
    return Refused("validation_error", f"Invalid request: {name}: {message}",
                    extra={"errors": [{"loc": ["query", name], "msg": message, "type": "value_error"}]})


def query_int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter between `low` and `high` (`default` when absent), else 422 naming it."""
    try:
        value = int(params.get(name, str(default)))
    except ValueError:
        raise query_error(name, "must be an integer") from None
    if not low <= value <= high:
        raise query_error(name, f"must be between {low} and {high}")
    return value


def query_choice(params: dict[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter that is one of `choices` (None when absent or empty), else 422 naming them."""
    value = params.get(name) or None
    if value is not None and value not in choices:
        raise query_error(name, f"must be one of {[str(c) for c in choices]}")
    return value
