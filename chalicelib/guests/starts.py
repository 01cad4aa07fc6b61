"""POST /start for a guest (docs/guests.md): the guests' bounds first, each a refusal that takes nothing and calls
no one, then the ordinary start (chalicelib.start.service) on a guest's terms.

In this order: guest access on (app.py routes a guest token here only then; off, it is a stranger's token: 401),
the source address's starts this minute and the guest's starts this hour (429 `guest_starts_rate_limited`), the
guests' day (429 `guest_budget_exceeded`); then, in the start's own transaction, the guest's one active session
(429 `user_session_limit`) and its agent's guest pool (429 `guest_capacity_reached`). At capacity a guest is refused
(429 `pcc_at_capacity`), also while starts wait in the agent's queue (the capacity that frees is theirs), unless
GUEST_QUEUE: then it joins the same queue, its place in the pool held while it waits, so guests never hold more than
GUEST_MAX_ACTIVE places of an agent.
"""

from __future__ import annotations

from chalicelib.guests import budget
from chalicelib.platform import rate_limits
from chalicelib.platform.auth import Principal
from chalicelib.platform.errors import Refused
from chalicelib.platform.http import HttpResult
from chalicelib.platform.observability import count
from chalicelib.platform.settings import get_settings
from chalicelib.start import service as start_service
from chalicelib.start.service import StartTerms


def start(guest: Principal, raw_body: bytes | None, idempotency_key: str | None, *, status_base: str,
          wait: int) -> HttpResult:
    settings = get_settings().guests
    try:
        if not settings.access:
            raise Refused("guest_access_disabled", "Guest access is off")
        rate_limits.take(f"gueststartaddr#{guest.address}", settings.starts_per_address_per_minute, 60,
                         kind="guest_starts_rate_limited", what="Guest starts from this address")
        rate_limits.take(f"gueststart#{guest.user_id}", settings.starts_per_hour, 3600,
                         kind="guest_starts_rate_limited", what="Starts by this guest")
        budget.check()
        terms = StartTerms(limit=1, queue_on_capacity=settings.queue, pool_limit=settings.max_active,
                           behind_queue=True)
        return start_service.start(guest.user_id, raw_body, idempotency_key, status_base=status_base,
                                   wait=wait if settings.queue else 0, terms=terms)
    except Refused as refusal:
        count("GuestStartsRefused", reason=refusal.kind)
        raise
