"""Server policy: turns a validated StartRequest into the Pipecat Cloud start request.

Nothing from the client is forwarded verbatim: every field of the PCC request is set here, from the
agent's policy, the allowed subset of user-supplied properties, and the verified identity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from chalicelib.api.models import StartRequest, Transport
from chalicelib.platform.auth import is_guest_id
from chalicelib.platform.errors import Refused
from chalicelib.platform.settings import AgentPolicy, Settings
from chalicelib.platform.shapes import JsonObject

IDENTITY_KEY = "user"
# Keys of `body` only the server sets: the verified identity, and what telephony tells the bot about its call
# (a web client that sent them could pose as a phone call, or make the bot dial out).
TELEPHONY_KEY, DIALIN_KEY, DIALOUT_KEY = "telephony", "dialin_settings", "dialout_settings"
RESERVED_BODY_KEYS = (IDENTITY_KEY, TELEPHONY_KEY, DIALIN_KEY, DIALOUT_KEY)
BODY_LIMIT = 1024 * 1024  # 1 MB of JSON, every transport (Pipecat Cloud's API guide)


@dataclass(frozen=True)
class PlannedStart:
    agent: str
    transport: Transport
    pcc_request: JsonObject
    call_id: str | None = None  # a telephony start's call, stored on the session record
    provider: str | None = None


def resolve_agent(settings: Settings, requested: str | None) -> tuple[str, AgentPolicy]:
    name = requested or settings.pcc.resolved_default_agent
    if name is None:
        raise Refused("agent_required", f"Choose an agent: one of {sorted(settings.pcc.agents)}")
    policy = settings.pcc.agents.get(name)
    if policy is None:
        raise Refused("unknown_agent", f"Agent {name!r} is not available")
    return name, policy


def _allowed(requested: JsonObject | None, allowed: list[str], field: str) -> JsonObject:
    if not requested:
        return {}
    denied = sorted(set(requested) - set(allowed))
    if denied:
        raise Refused("property_not_allowed", f"{field}: not allowed to set {denied}")
    return dict(requested)


def refuse_reserved_keys(body: JsonObject) -> None:
    """422 `reserved_body_key` when a client's body holds a key the server sets."""
    taken = [key for key in RESERVED_BODY_KEYS if key in body]
    if taken:
        raise Refused("reserved_body_key",
                       f"body.{taken[0]} is set by the server; a client may not send "
                       + ", ".join(f"body.{k}" for k in RESERVED_BODY_KEYS))


def with_identity(body: JsonObject, user_id: str, transport: Transport) -> JsonObject:
    """`body` plus the verified identity (a guest's with `"guest": true`, so bot code can tell), checked against
    Pipecat Cloud's size limit for the transport."""
    out = dict(body)
    out[IDENTITY_KEY] = {"id": user_id, "guest": True} if is_guest_id(user_id) else {"id": user_id}
    size = body_size(out)
    if size > BODY_LIMIT:
        raise Refused("body_too_large", f"body is {size} bytes; the limit is {BODY_LIMIT} bytes")
    return out


def body_size(body: JsonObject) -> int:
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def plan_start(settings: Settings, request: StartRequest, user_id: str) -> PlannedStart:
    agent, policy = resolve_agent(settings, request.agent)
    transport: Transport = request.transport or policy.transports[0]
    if transport not in policy.transports:
        raise Refused("transport_not_allowed",
                       f"Transport {transport!r} is not enabled for agent {agent!r}")
    refuse_reserved_keys(request.body)

    pcc: JsonObject = {"transport": transport}
    if transport == "daily":
        room = _allowed(request.dailyRoomProperties, policy.allowed_room_properties,
                        "dailyRoomProperties")
        token = _allowed(request.dailyMeetingTokenProperties, policy.allowed_token_properties,
                         "dailyMeetingTokenProperties")
        room.update(policy.room_properties)
        token.update(policy.token_properties)
        pcc["createDailyRoom"] = True
        if room:
            pcc["dailyRoomProperties"] = room
        if token:
            pcc["dailyMeetingTokenProperties"] = token
    elif request.dailyRoomProperties or request.dailyMeetingTokenProperties:
        raise Refused("property_not_allowed",
                       "Daily room and token properties apply only to the daily transport")
    if transport == "webrtc" and policy.enable_default_ice_servers:
        pcc["enableDefaultIceServers"] = True

    if transport == "websocket" and policy.websocket_auth == "none":
        # PCC rejects any body here, so no identity can be passed; say so instead of failing later.
        if request.body:
            raise Refused("websocket_body_not_allowed",
                           f"Agent {agent!r} uses websocket_auth 'none': a body cannot be sent")
        return PlannedStart(agent, transport, pcc)

    pcc["body"] = with_identity(request.body, user_id, transport)
    return PlannedStart(agent, transport, pcc)


# ------------------------------------------------------------------ telephony's starts
# Telephony builds no Pipecat Cloud request of its own: each kind of call start is planned here, beside the
# web start, with the same identity rule and size check.
def call_plan(agent: str, owner: str, *, provider: str, call_id: str, caller: str, callee: str) -> PlannedStart:
    """A provider call in token mode: a websocket session whose bot learns the call from `body.telephony`."""
    body = {TELEPHONY_KEY: {"provider": provider, "call_id": call_id, "from": caller, "to": callee}}
    return PlannedStart(agent, "websocket", {"transport": "websocket",
                                             "body": with_identity(body, owner, "websocket")},
                        call_id=call_id, provider=provider)


def dialin_plan(agent: str, owner: str, *, caller: str, callee: str, call_id: str, call_domain: str,
                sip_headers: JsonObject, expires_at: int) -> PlannedStart:
    """A Daily PSTN/SIP dial-in: a Daily room with a dial-in SIP endpoint; `body.dialin_settings` for the bot."""
    body = {DIALIN_KEY: {"From": caller, "To": callee, "call_id": call_id, "call_domain": call_domain,
                         "sip_headers": sip_headers}}
    return PlannedStart(agent, "daily", {
        "transport": "daily",
        "createDailyRoom": True,
        "dailyRoomProperties": {
            "sip": {"display_name": caller or "caller", "sip_mode": "dial-in", "num_endpoints": 1},
            "exp": expires_at,
        },
        "body": with_identity(body, owner, "daily"),
    }, call_id=call_id, provider="daily")


def dialout_plan(agent: str, owner: str, *, client_body: JsonObject, target: dict[str, str],
                 expires_at: int) -> PlannedStart:
    """A Daily dial-out: a room allowed to dial out; `body.dialout_settings` names the (authorized) target."""
    refuse_reserved_keys(client_body)
    body = {**client_body, DIALOUT_KEY: [target]}
    return PlannedStart(agent, "daily", {
        "transport": "daily",
        "createDailyRoom": True,
        "dailyRoomProperties": {"enable_dialout": True, "exp": expires_at},
        "body": with_identity(body, owner, "daily"),
    }, provider="daily-dialout")
