"""The HTTP API: incidents, decisions, stand-down, history export, Twilio webhooks, console."""
