"""The sparse index (GSI2): partitions with a single value (`ACTIVE`, `PENDING`, `INTENTS`, `SLOTS`) listing the
items that are in that state now, so the schedule's sweeps read only what may need them."""

from __future__ import annotations

from chalicelib.platform.dynamo import BATCH_GET, batch_get, plain, table
from chalicelib.platform.shapes import Item


def index_page(partition: str, limit: int, start_key: Item | None = None) -> tuple[list[Item], Item | None]:
    """One page of a partition (at most `limit` <= BATCH_GET items, oldest first) and the key to continue from."""
    kwargs: Item = {"IndexName": "GSI2", "KeyConditionExpression": "GSI2PK = :pk", "Limit": min(limit, BATCH_GET),
                    "ExpressionAttributeValues": {":pk": partition}, "ScanIndexForward": True}
    if start_key:
        kwargs["ExclusiveStartKey"] = start_key
    page = table().query(**kwargs)
    keys = [{"PK": i["PK"], "SK": i["SK"]} for i in page.get("Items", [])]
    found = {(str(i["PK"]), str(i["SK"])): i for i in batch_get(keys)} if keys else {}
    ordered = [found.get((str(k["PK"]), str(k["SK"]))) for k in keys]
    items = [plain(i) for i in ordered if i is not None and i.get("GSI2PK") == partition]
    return items, page.get("LastEvaluatedKey")


def query_index_partition(partition: str, limit: int = 500) -> list[Item]:
    """Items of one GSI2 (sparse index) partition, oldest first, up to `limit`.

    GSI2 projects only the keys (infra/template.yaml): its partitions have a single value (`PENDING`, `ACTIVE`,
    ...), so every write it carries lands on one index partition, and a queued start's attempts (which change
    no key) then never write to it at all. The items are read from the table in batches of BATCH_GET; one that
    left the partition between the query and the read is left out."""
    keys: list[Item] = []
    kwargs: Item = {
        "IndexName": "GSI2",
        "KeyConditionExpression": "GSI2PK = :pk",
        "ExpressionAttributeValues": {":pk": partition},
        "ScanIndexForward": True,
    }
    while len(keys) < limit:
        page = table().query(**kwargs)
        keys.extend({"PK": i["PK"], "SK": i["SK"]} for i in page.get("Items", []))
        if not page.get("LastEvaluatedKey"):
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    keys = keys[:limit]
    found: dict[tuple[str, str], Item] = {}
    for start in range(0, len(keys), BATCH_GET):
        for item in batch_get(keys[start:start + BATCH_GET]):
            found[(str(item["PK"]), str(item["SK"]))] = item
    ordered = [found.get((str(k["PK"]), str(k["SK"]))) for k in keys]
    return [plain(i) for i in ordered if i is not None and i.get("GSI2PK") == partition]
