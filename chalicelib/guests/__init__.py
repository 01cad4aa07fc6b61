"""Anonymous visitors of a public page: the human check, guest tokens, and the bounds on what anonymous traffic may
cost (docs/guests.md). Off unless GUEST_ACCESS; imported only by the routes that serve guests (app.py, lazily).
"""
