"""Names for data that is free-form by nature, so a signature says which kind it holds: a JsonObject (JSON we pass on
or answer with: a bot's body, Pipecat Cloud's answers, an API answer, an OpenAPI fragment) or an Item (a DynamoDB
item, key or request piece, as boto3 takes it). Records the code reasons about are dataclasses, not these."""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]
Item = dict[str, Any]
