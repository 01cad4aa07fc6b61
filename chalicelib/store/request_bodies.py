"""A queued start's Pipecat Cloud request, kept until an attempt replays it verbatim: as JSON text (DynamoDB cannot
hold floats in a map), inline on the request item up to INLINE_REQUEST_BYTES; larger ones (the body may be 1 MB, a
DynamoDB item at most 400 KB) in BODY#nnn items of CHUNK_BYTES each, written in the request's own transaction."""

from __future__ import annotations

import json

from chalicelib.platform.dynamo import table
from chalicelib.platform.shapes import Item, JsonObject

INLINE_REQUEST_BYTES = 64 * 1024
CHUNK_BYTES = 300 * 1024


def _chunk_key(index: int) -> str:
    return f"BODY#{index:03d}"


def stored(key: Item, pcc_request: JsonObject, ttl: int) -> tuple[Item, list[Item]]:
    """The attributes the request item gets (`pcc_request` inline, or `pcc_request_chunks`), and the chunks' `Put`s
    for the same transaction (`key`: the request item's)."""
    text = json.dumps(pcc_request, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) <= INLINE_REQUEST_BYTES:
        return {"pcc_request": text.decode()}, []
    chunks = [text[i:i + CHUNK_BYTES] for i in range(0, len(text), CHUNK_BYTES)]
    puts = [{"Put": {"Item": {"PK": key["PK"], "SK": _chunk_key(i), "data": chunk, "ttl": ttl}}}
            for i, chunk in enumerate(chunks)]
    return {"pcc_request_chunks": len(chunks)}, puts


def read(key: Item, inline: str | None, chunks: int) -> JsonObject:
    """The request again: `inline`, or reassembled from its `chunks` BODY#nnn items."""
    if inline is not None:
        return dict(json.loads(inline))
    parts = []
    for index in range(chunks):
        chunk = table().get_item(Key={**key, "SK": _chunk_key(index)}, ConsistentRead=True)["Item"]
        parts.append(bytes(chunk["data"].value if hasattr(chunk["data"], "value") else chunk["data"]))
    return dict(json.loads(b"".join(parts)))
