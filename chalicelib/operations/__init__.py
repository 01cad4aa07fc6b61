"""The operator's side: what Pipecat Cloud says of the organisation through its own webhooks (docs/operations.md).
Imported only by the routes that serve it (app.py, lazily).
"""
