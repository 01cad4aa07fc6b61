"""The API's answers, as documented (chalicelib.api.openapi publishes them) and as built: the routes make each answer
from its model, so the document and the bytes cannot drift apart. Built on first use (pydantic's defer_build): a
cold start pays for the models of the routes it serves."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.api.models import LAZY
from chalicelib.platform.shapes import JsonObject


class QueuedStart(BaseModel):
    model_config = LAZY

    requestId: str
    status: str = Field(description="queued")
    statusUrl: str
    retryAfter: int = Field(description="seconds until the next poll is worth it (the ETA, 1-30)")
    attempts: int
    position: int = Field(description="1-based place in the agent's queue (1: the head), exact")
    etaSeconds: int = Field(description="position x the measured interval at which capacity frees")
    nextAttemptAt: str = Field(description="now + the ETA")


class UsageWindow(BaseModel):
    model_config = LAZY

    window: str = Field(description="the UTC day (2026-12-06) or calendar month (2026-12)")
    usedSeconds: int = Field(description="endedSeconds + runningSeconds")
    endedSeconds: int = Field(description="billed seconds of the sessions that ended in this window")
    runningSeconds: int = Field(description="how long the active sessions have run so far")
    limitSeconds: int | None = Field(description="the budget; null: unlimited")
    remainingSeconds: int | None
    resetsAt: str
    resetsInSeconds: int


class ActiveUsage(BaseModel):
    model_config = LAZY

    sessionId: str
    runningSeconds: int


class Usage(BaseModel):
    model_config = LAZY

    userId: str
    day: UsageWindow
    month: UsageWindow
    activeSessions: list[ActiveUsage]


class SessionRecord(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)

    sessionId: str
    agent: str
    transport: str
    status: str = Field(description="active | ended | stopped")
    createdAt: str
    endedAt: str | None = None
    endReason: str | None = None


class SessionList(BaseModel):
    model_config = LAZY

    sessions: list[SessionRecord]
    nextCursor: str | None


class SessionDetails(SessionRecord):
    model_config = ConfigDict(extra="allow", defer_build=True)

    pipecat: JsonObject | None = Field(description="Pipecat Cloud's view (private API), when available")


class CancelResult(BaseModel):
    model_config = LAZY

    requestId: str
    status: str


class PendingStart(BaseModel):
    model_config = LAZY

    requestId: str
    status: str
    agent: str
    createdAt: str
    statusUrl: str


class PendingStarts(BaseModel):
    """The caller's queued and starting requests (listing them does not count as asking about them)."""

    model_config = LAZY

    starts: list[PendingStart]


class DialinAnswer(BaseModel):
    model_config = LAZY

    status: str
    sessionId: str | None = None


class GuestTokenAnswer(BaseModel):
    """A guest token: `Authorization: Bearer <token>` on the routes guests may use, until `expiresAt`."""

    model_config = LAZY

    token: str
    tokenType: str = Field(description="Bearer")
    guestId: str = Field(description="guest_...: the id the bot sees in body.user.id")
    expiresAt: str
    expiresIn: int = Field(description="seconds (GUEST_TOKEN_SECONDS)")
