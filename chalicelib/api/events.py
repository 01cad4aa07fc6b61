"""The lifecycle events the gateway publishes (docs/events.md): one schema for every sink, in the OpenAPI
document's components. Field names are camelCase like the rest of the API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.platform.shapes import JsonObject

EventType = Literal[
    "start.queued",  # a start refused with 429 joined its agent's queue (202)
    "start.failed",  # a queued start ended without a bot (data: code, detail)
    "start.cancelled",  # its owner cancelled a queued start
    "start.abandoned",  # nobody asked about a queued start for QUEUED_ABANDON_SECONDS: no bot was started
    "session.started",  # a bot started and was recorded (data: transport, queued)
    "session.stopped",  # stopped through DELETE /sessions/{id}
    "session.ended",  # seen ended at Pipecat Cloud (data: endedAt, durationSeconds, completionStatus, ...)
    "session.capped",  # stopped by the gateway's hard cap (SESSION_HARD_CAP_SECONDS)
    "session.orphan_stopped",  # a bot no record of ours claims, stopped by the orphan sweep
    "call.started",  # a telephony call's bot started (data: provider)
    "gate.closed",  # new starts closed for a reason (data: scope, reason, message, by; agent "*": the organisation)
    "gate.opened",  # a reason a gate was closed for was lifted (data: scope, reason, by)
    "account.spend_threshold",  # Pipecat Cloud: spend passed 80% / 90% of the limit (data: percent, ...; agent "*")
    "admin.action",  # an operator acted through the admin API (data: action, admin, and what it acted on)
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]


class LifecycleEvent(BaseModel):
    """One state change, as every sink receives it. `id` is unique per event: deliveries are at least once,
    so a consumer drops an id it has seen. A session's events are delivered in the order they happened."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^evt_[0-9a-f]{32}$")
    type: EventType
    time: str = Field(description="When the state change was recorded (ISO 8601, UTC)")
    userId: str | None = Field(description="The verified caller the start was made for; null for "
                                            "session.orphan_stopped (no record of ours claims the bot), the gates' "
                                            "and the account's events; an admin.action's is the user acted on")
    agent: str
    guest: bool | None = Field(default=None, description="true when `userId` is a guest's (docs/guests.md); "
                                                         "absent otherwise")
    sessionId: str | None = None
    requestId: str | None = None
    callId: str | None = None
    data: JsonObject = Field(default_factory=dict, description="Per type, see docs/events.md")

    def envelope(self) -> JsonObject:
        """The event as every sink gets it: ids that do not apply are left out; `userId` is always there."""
        return {**self.model_dump(exclude_none=True), "userId": self.userId}
