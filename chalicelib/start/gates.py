"""Start gates (docs/operations.md): one mechanism, for the whole organisation and per agent, that closes new starts
for a reason and opens them again. While a gate an agent depends on is closed, `POST /start` (and a call's or a
dial-out's start) is refused with the reason's code before anything is taken or called, and the agent's dispatcher
calls Pipecat Cloud for none of its queued starts: they keep their places until their deadline. Each change is a
lifecycle event (`gate.closed`, `gate.opened`) and a metric; opening wakes the dispatchers it held back.

Reasons: `spend_limit` (Pipecat Cloud's `spend.limit_reached`, until `spend.limit_cleared`), `billing` (a start
Pipecat Cloud refused with PCC-1004, billing not set: so the gate closes without webhooks too), `suspended` (an
agent's `service.suspended`, until `service.resumed`), `maintenance` (an operator's, with a message).
"""

from __future__ import annotations

from chalicelib.pcc.client import PccCallError
from chalicelib.platform.errors import Refused
from chalicelib.platform.observability import count, logger
from chalicelib.store import agent_queue, gates
from chalicelib.store.gates import ORG_SCOPE, agent_scope
from chalicelib.store.outbox import event_writes

RETRY_AFTER_SECONDS = 60
BILLING_CODE = "PCC-1004"
# reason -> (the refusal's kind, what the caller is told unless the gate holds a message of its own)
REFUSALS = {
    "spend_limit": ("spend_limit_reached", "The organisation's Pipecat Cloud spend limit is reached; new sessions "
                                           "are blocked until it is raised"),
    "billing": ("billing_not_set", "Pipecat Cloud refuses new sessions: the organisation's billing is not set"),
    "suspended": ("agent_suspended", "This agent is suspended at Pipecat Cloud"),
    "maintenance": ("starts_closed", "New sessions are closed for maintenance"),
}


def check(agent: str) -> None:
    """Refused (503, with Retry-After) when the organisation's gate or `agent`'s is closed."""
    for gate in gates.read([ORG_SCOPE, agent_scope(agent)]):
        for reason in sorted(gate.reasons, key=lambda r: list(REFUSALS).index(r) if r in REFUSALS else 99):
            kind, detail = REFUSALS.get(reason, ("starts_closed", "New sessions are closed"))
            count("StartRejected", code=kind)
            raise Refused(kind, gate.messages.get(reason) or detail, retry_after=RETRY_AFTER_SECONDS)


def is_open(agent: str) -> bool:
    return not any(gate.closed for gate in gates.read([ORG_SCOPE, agent_scope(agent)]))


def _label(scope: str) -> str:
    """The `agent` field of a gate's event: the agent's name, or `*` for the organisation."""
    return "*" if scope == ORG_SCOPE else scope.removeprefix("agent#")


def close(scope: str, reason: str, message: str = "", *, by: str = "pipecat-cloud") -> bool:
    """Close `scope`'s gate for `reason`; False when it already was closed for it."""
    events = event_writes("gate.closed", user_id=None, agent=_label(scope),
                          data={"scope": scope, "reason": reason, "message": message or None, "by": by})
    changed = gates.close(scope, reason, message, events)
    if changed:
        count("GateChanges", change="closed", reason=reason)
        count("StartGatesClosed")  # the alarm's metric (infra/template.yaml)
        logger.warning("start gate closed", extra={"scope": scope, "reason": reason, "by": by})
    return changed


def reopen(scope: str, reason: str, agents: list[str], *, by: str = "pipecat-cloud") -> bool:
    """Take `reason` off `scope`'s gate and wake the dispatchers of `agents` it may have held back; False when the
    gate was not closed for it."""
    events = event_writes("gate.opened", user_id=None, agent=_label(scope),
                          data={"scope": scope, "reason": reason, "by": by})
    changed = gates.reopen(scope, reason, events)
    if changed:
        count("GateChanges", change="opened", reason=reason)
        logger.warning("start gate reason lifted", extra={"scope": scope, "reason": reason, "by": by})
        for agent in agents:
            agent_queue.capacity_freed(agent, "gate_opened")
    return changed


def refused_for_billing(exc: PccCallError) -> bool:
    """A start Pipecat Cloud refused because the organisation's billing is not set: closes the organisation's gate
    (so the next start is refused here, without a call). True when it was that."""
    if exc.pcc_code != BILLING_CODE:
        return False
    close(ORG_SCOPE, "billing", by="pipecat-cloud-answer")
    return True
