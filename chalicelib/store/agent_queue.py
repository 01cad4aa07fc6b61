"""Each agent's FIFO of queued starts in DynamoDB (data access only): sequence numbers, the dispatcher
lease, wake-ups and the measured rate at which capacity frees.

Items, in the partition `QUEUE#{agent}`:
- SK `STATE`: `tail` (the last sequence number handed out), `head` (every number below it has left the
  queue), `gone` (number set: numbers >= head that left, e.g. served, cancelled or expired; the dispatcher
  folds them into `head`), the dispatcher lease (`lease_owner`, `lease_until`), `wakes` (bumped when the
  gateway frees capacity) and `free_interval` (seconds between queued starts served: the measured rate at
  which capacity frees, an exponentially weighted average kept by the dispatcher), and `taken_by` (the token of
  the last number handed out: a repeated bump whose answer was lost is recognised, not applied twice).
- SK `SEQ#{seq:012d}`: `request_id`, the queued start holding that place (the dispatcher reads the head
  by its number); an entry with `abandoned` marks a number whose enqueue never completed.

A start's place is exact and O(1): one consistent GetItem of STATE,
`position(s) = s - head + 1 - |{g in gone : head <= g < s}|`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from chalicelib.platform.aws import client, wake_queue_url
from chalicelib.platform.dynamo import plain, put_if, table, update_if
from chalicelib.platform.observability import logger
from chalicelib.platform.shapes import Item

ENTRY_TTL_SECONDS = 7 * 86400
WAKE_GATE_SECONDS = 10  # a dispatcher asked for but not yet running is not asked for again sooner


def _state_key(agent: str) -> dict[str, str]:
    return {"PK": f"QUEUE#{agent}", "SK": "STATE"}


def _entry_key(agent: str, seq: int) -> dict[str, str]:
    return {"PK": f"QUEUE#{agent}", "SK": f"SEQ#{seq:012d}"}


@dataclass
class QueueState:
    agent: str
    tail: int = 0
    head: int = 1
    gone: set[int] = field(default_factory=set)
    lease_owner: str = ""
    lease_until: float = 0.0
    wakes: int = 0
    free_interval: float | None = None
    wake_sent_at: int = 0

    @classmethod
    def from_item(cls, agent: str, item: Item | None) -> QueueState:
        if not item:
            return cls(agent)
        values = plain(item)
        return cls(agent, tail=int(values.get("tail", 0)), head=int(values.get("head", 1)),
                   gone={int(g) for g in values.get("gone", set())}, lease_owner=str(values.get("lease_owner", "")),
                   lease_until=float(values.get("lease_until", 0)), wakes=int(values.get("wakes", 0)),
                   free_interval=float(values["free_interval"]) if values.get("free_interval") else None,
                   wake_sent_at=int(values.get("wake_sent_at", 0)))

    def waiting(self) -> int:
        """How many starts are in the queue (queued, or being tried by the dispatcher)."""
        return max(0, self.tail - self.head + 1 - sum(1 for g in self.gone if self.head <= g <= self.tail))

    def position(self, seq: int) -> int:
        """1-based place of `seq` among the starts still waiting (1: the head)."""
        return max(1, seq - self.head + 1 - sum(1 for g in self.gone if self.head <= g < seq))

    def leased(self, now: float) -> bool:
        return self.lease_until > now

    def eta_seconds(self, position: int, default_interval: float) -> float:
        return position * (self.free_interval or default_interval)


def read(agent: str) -> QueueState:
    return QueueState.from_item(agent, _state_item(agent))


def _state_item(agent: str) -> Item | None:
    item = table().get_item(Key=_state_key(agent), ConsistentRead=True).get("Item")
    return dict(item) if item else None


# ------------------------------------------------------------------ joining the queue
def allocate(agent: str, max_queued: int, known: QueueState | None = None) -> QueueState | None:
    """Hand out the next sequence number, unless `max_queued` starts already wait (None: full). Returns the
    queue state the bump wrote: its `tail` is the number handed out, and positions can be read from it.

    `head - 1 + |gone >= head|` (the numbers that have left) never decreases, so a limit computed from
    a stale read (`known`, if the caller has just read the state) is only ever too strict; a refusal is
    checked once more against a fresh read."""
    state = known
    for _ in range(2):
        state = state or read(agent)
        left = state.head - 1 + sum(1 for g in state.gone if g >= state.head)
        placed = _next_number(agent, left + max_queued)
        if placed is not None:
            return placed
        state = None
    return None


def append(agent: str) -> QueueState:
    """Hand out the next number whatever MAX_QUEUED says: for a start already accepted whose place must be given
    back (chalicelib.upkeep.queue_sweep). Returns the state the bump wrote (`tail`: the number)."""
    placed = _next_number(agent, 2**62)
    if placed is None:  # the condition cannot fail below 2**62 numbers
        raise RuntimeError("the agent's queue handed out no number")
    return placed


def _next_number(agent: str, limit: int) -> QueueState | None:
    """`ADD tail` is not idempotent: when its answer is lost (a read timeout) and botocore sends it again, a second
    number would be taken and the first left without an entry, stalling the head for the dispatcher's grace
    (ENTRY_GRACE_SECONDS). So each bump carries a token, and a repeat whose first attempt was applied is refused
    by its own condition and recognised by a read (unless another start took a number in between)."""
    token = uuid.uuid4().hex
    updated = update_if(_state_key(agent), "ADD tail :one SET head = if_not_exists(head, :one), taken_by = :token",
                        condition="(attribute_not_exists(tail) OR tail < :limit) "
                                  "AND (attribute_not_exists(taken_by) OR taken_by <> :token)",
                        values={":one": 1, ":limit": limit, ":token": token}, returned="ALL_NEW")
    if updated is not None:
        return QueueState.from_item(agent, updated)
    item = _state_item(agent) or {}
    return QueueState.from_item(agent, item) if item.get("taken_by") == token else None


def entry_put(agent: str, seq: int, request_id: str) -> Item:
    """The queue entry as a TransactWriteItems `Put` (refused if the number was given up as abandoned)."""
    ddb = table()
    return {"TableName": ddb.name, "ConditionExpression": "attribute_not_exists(PK)",
            "Item": {**_entry_key(agent, seq), "request_id": request_id,
                     "ttl": int(time.time()) + ENTRY_TTL_SECONDS}}


def entry(agent: str, seq: int) -> Item | None:
    item = table().get_item(Key=_entry_key(agent, seq), ConsistentRead=True).get("Item")
    return dict(plain(item)) if item else None


def abandon(agent: str, seq: int) -> bool:
    """Give up a number whose enqueue never wrote its entry (a Lambda that died in between)."""
    return put_if({**_entry_key(agent, seq), "abandoned": True, "ttl": int(time.time()) + ENTRY_TTL_SECONDS},
                  "attribute_not_exists(PK)")


# ------------------------------------------------------------------ leaving the queue
def mark_gone(agent: str, seq: int) -> None:
    """`seq` has left the queue (any reason). Idempotent; a number already folded into head is ignored."""
    update_if(_state_key(agent), "ADD gone :s", condition="head <= :n", values={":s": {seq}, ":n": seq})


def advance(agent: str, seq: int, free_interval: float | None = None) -> None:
    """The head `seq` left the queue (dispatcher only): one write moves head past it and records the
    measured interval; if head moved meanwhile (it cannot, with one dispatcher) fall back to `gone`."""
    update = "SET head = :next"
    values: Item = {":seq": seq, ":next": seq + 1}
    if free_interval is not None:
        update += ", free_interval = :f"
        values[":f"] = Decimal(str(round(free_interval, 3)))
    if update_if(_state_key(agent), update, condition="head = :seq", values=values) is None:
        mark_gone(agent, seq)


def fold_head(state: QueueState) -> QueueState:
    """Move head past the numbers that have left (dispatcher only); returns the state as written."""
    head, folded = state.head, set()
    while head in state.gone:
        folded.add(head)
        head += 1
    if not folded:
        return state
    values: Item = {":old": state.head, ":new": head, ":folded": folded}
    if update_if(_state_key(state.agent), "SET head = :new DELETE gone :folded", condition="head = :old",
                 values=values) is not None:
        state.head, state.gone = head, state.gone - folded
    return state


# ------------------------------------------------------------------ the dispatcher lease
def acquire(agent: str, owner: str, seconds: float, now: float | None = None) -> QueueState | None:
    """Take (or renew) the agent's dispatcher lease; None when another live dispatcher holds it."""
    now = time.time() if now is None else now
    updated = update_if(  # the wake-up that asked for this run is consumed: the next arrival may ask again
        _state_key(agent), "SET lease_owner = :o, lease_until = :u, wake_sent_at = :zero",
        condition="attribute_exists(PK) AND (attribute_not_exists(lease_until) OR lease_until < :now "
                  "OR lease_owner = :o)",
        values={":o": owner, ":u": int(now + seconds), ":now": int(now), ":zero": 0}, returned="ALL_NEW")
    return QueueState.from_item(agent, updated) if updated is not None else None


def release(agent: str, owner: str) -> None:
    update_if(_state_key(agent), "SET lease_until = :zero", condition="lease_owner = :o",
              values={":zero": 0, ":o": owner})


# ------------------------------------------------------------------ wake-ups
def send_wake(agent: str, delay_seconds: int = 0, freed: bool = False) -> None:
    """Ask for a dispatcher run for `agent` (one SQS message: the worker takes the lease or leaves it).
    `freed`: capacity was freed, so the head is tried at once."""
    client("sqs").send_message(QueueUrl=wake_queue_url(), DelaySeconds=delay_seconds,
                               MessageBody=json.dumps({"agent": agent, "freed": freed}))


def start_dispatcher(agent: str, now: float | None = None, known: QueueState | None = None) -> None:
    """Work arrived: make sure a dispatcher runs. Sends one wake-up per WAKE_GATE_SECONDS at most while
    none holds the lease (a storm of starts does not become a storm of worker invocations); raises when
    the message cannot be sent. `known`: the state written when the work joined; if it already showed a
    live lease or a recent wake-up, the gate's write is skipped (it would have been refused)."""
    now = time.time() if now is None else now
    gate = {":now": int(now), ":gate": int(now - WAKE_GATE_SECONDS)}
    if known is not None and (known.leased(now) or known.wake_sent_at >= gate[":gate"]):
        return
    if update_if(_state_key(agent), "SET wake_sent_at = :now",
                 condition="(attribute_not_exists(lease_until) OR lease_until < :now) AND "
                           "(attribute_not_exists(wake_sent_at) OR wake_sent_at < :gate)", values=gate) is None:
        return  # a dispatcher runs, or one was asked for a moment ago
    try:
        send_wake(agent)
    except Exception:
        update_if(_state_key(agent), "SET wake_sent_at = :zero", condition="wake_sent_at = :now",
                  values={":zero": 0, ":now": int(now)})
        raise


def capacity_freed(agent: str, reason: str) -> bool:
    """The gateway freed capacity of `agent` (a stop, a session seen ended): a running dispatcher sees
    `wakes` change and tries its head at once; with none running and starts waiting, one is started.
    True when a message was sent. Never raises (a lost wake-up costs one head backoff at most; the
    reconcile schedule restarts idle queues)."""
    if not wake_queue_url():
        return False
    try:
        updated = update_if(_state_key(agent), "ADD wakes :one", condition="attribute_exists(PK)",
                            values={":one": 1}, returned="ALL_NEW")
        if updated is None:
            return False  # this agent never queued anything
        state = QueueState.from_item(agent, updated)
        if state.waiting() == 0 or state.leased(time.time()):
            return False
        send_wake(agent, freed=True)
        return True
    except Exception:  # noqa: BLE001 - best effort by design (see above)
        logger.warning("could not wake the dispatcher", extra={"agent": agent, "reason": reason}, exc_info=True)
        return False
