"""Provider webhooks, Daily dial-in and dial-out with its policy, signatures and provider XML; imported by
app.py only.
"""
