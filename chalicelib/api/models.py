"""Request and response models of our API (also the source of the OpenAPI document).

Models that only describe answers (for the OpenAPI document) or serve a route other than /start are built when first
used (`LAZY`, pydantic's defer_build): a cold start serving /start builds StartRequest alone (bench/cold_start.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chalicelib.platform.shapes import JsonObject

Transport = Literal["daily", "webrtc", "websocket"]
LAZY = ConfigDict(defer_build=True)


class StartRequest(BaseModel):
    """POST /start. Unknown fields are rejected; the server decides what reaches Pipecat Cloud."""

    model_config = ConfigDict(extra="forbid")

    agent: str | None = Field(default=None, min_length=1, max_length=128,
                              description="Agent name from the allow-list; optional when there is one")
    transport: Transport | None = Field(default=None, description="Defaults to the agent's first transport")
    body: JsonObject = Field(default_factory=dict, description="Data for the bot (JSON object)")
    dailyRoomProperties: JsonObject | None = Field(
        default=None, description="Only keys the server policy allows")
    dailyMeetingTokenProperties: JsonObject | None = Field(
        default=None, description="Only keys the server policy allows")


class ErrorResponse(BaseModel):
    model_config = LAZY

    detail: Any
    code: str


class DailyStartResponse(BaseModel):
    model_config = LAZY

    dailyRoom: str
    dailyToken: str
    sessionId: str


class IceServer(BaseModel):
    model_config = LAZY

    urls: list[str] | str
    username: str | None = None
    credential: str | None = None


class IceConfig(BaseModel):
    model_config = LAZY

    iceServers: list[IceServer]


class WebRTCStartResponse(BaseModel):
    model_config = LAZY

    sessionId: str
    iceConfig: IceConfig | None = None


class WebSocketStartResponse(BaseModel):
    """Exactly what the websocket transport accepts; the session id is in `X-Session-Id`."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    wsUrl: str
    token: str


class HealthResponse(BaseModel):
    model_config = LAZY

    status: Literal["ok"]
    stage: str


class DialoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    phoneNumber: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,15}$")
    sipUri: str | None = Field(default=None, pattern=r"^sips?:[^\s]{3,256}$")
    callerId: str | None = Field(default=None, max_length=64)
    body: JsonObject = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_target(self) -> DialoutRequest:
        if (self.phoneNumber is None) == (self.sipUri is None):
            raise ValueError("give exactly one of phoneNumber or sipUri")
        return self


class AdminGateRequest(BaseModel):
    """POST /admin/gates: close or open new starts for maintenance."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    scope: Literal["organisation", "agent"]
    agent: str | None = Field(default=None, min_length=1, max_length=128, description="for scope agent")
    action: Literal["close", "open"]
    message: str = Field(default="", max_length=500, description="what callers are told while it is closed")
    reason: Literal["maintenance", "billing", "spend_limit", "suspended"] = Field(
        default="maintenance", description="open: the reason lifted (a close is always `maintenance`): e.g. "
                                           "`billing` once the organisation's billing is set at Pipecat Cloud")


class BudgetOverride(BaseModel):
    """PUT /admin/users/{id}/budget: the user's billed seconds per UTC day and calendar month (0: unlimited)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    day: int = Field(ge=0, le=31 * 86400)
    month: int = Field(ge=0, le=31 * 86400)


class GuestRequest(BaseModel):
    """POST /guest: the human check widget's token (none on a stage whose check is `none`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    humanCheckToken: str | None = Field(default=None, min_length=1, max_length=4096,
                                        description="The Turnstile / hCaptcha / reCAPTCHA widget's response token")
