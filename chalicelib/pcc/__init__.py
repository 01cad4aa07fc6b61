"""Talks to Pipecat Cloud: the pooled HTTP client and what its answers mean to our callers."""
