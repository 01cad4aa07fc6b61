"""Every item type of the single DynamoDB table (sessions, slots, intents, queued starts, agent queues, call records);
never calls Pipecat Cloud.
"""
