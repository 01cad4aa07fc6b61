"""Knows no domain: settings, errors, logs and metrics, AWS clients, HTTP plumbing, request parsing, secrets, auth,
idempotency and rate limits; imports nothing else from chalicelib.
"""
