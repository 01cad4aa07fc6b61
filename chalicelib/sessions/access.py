"""Whether a verified caller may use the gateway at all: an operator can block a user (chalicelib.operations.admin),
who then gets 403 `user_blocked` on every route, before anything else is read or done."""

from __future__ import annotations

from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import count
from chalicelib.store import blocks


def refuse_if_blocked(user_id: str) -> None:
    if blocks.is_blocked(user_id):
        count("BlockedUserRefused")
        raise Refused("user_blocked", "This account is blocked")
