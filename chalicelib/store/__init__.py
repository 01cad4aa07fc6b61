"""Every item type of the DynamoDB tables (sessions, slots, intents, queued starts, agent queues, call records, and
the events outbox written in their transactions); never calls Pipecat Cloud.
"""
