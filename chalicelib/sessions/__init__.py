"""A user's sessions after they start: list, details, stop, and the session API proxy with its header and body rules."""
