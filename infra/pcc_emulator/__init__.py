"""A faithful local emulator of the Pipecat Cloud HTTP API (for tests and `make dev`)."""

from .server import EmulatorServer
from .state import Agent, Organisation, PccError, Session

__all__ = ["Agent", "EmulatorServer", "Organisation", "PccError", "Session"]
