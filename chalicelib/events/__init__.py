"""Lifecycle events out of the outbox (chalicelib.store.outbox) to the sinks: EventBridge and signed webhooks,
with retries and a dead-letter queue; it reads the stream, it never changes the gateway's state."""

from chalicelib.events.delivery import deliver_stream_records

__all__ = ["deliver_stream_records"]
