"""Human-check tokens already presented (PK `HUMANCHECK#{sha256 of the token}`, SK `META`, kept until `ttl`): a
token passes at most once, whatever its provider would say of a second use."""

from __future__ import annotations

import hashlib

from chalicelib.platform.dynamo import put_if


def spend(token: str, until: int) -> bool:
    """Record the token as presented, remembered until `until` (epoch seconds); False when it already was."""
    digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
    return put_if({"PK": f"HUMANCHECK#{digest}", "SK": "META", "ttl": until}, "attribute_not_exists(PK)")
