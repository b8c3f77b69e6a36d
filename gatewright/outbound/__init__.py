"""Calls gatewright makes to the outside world on its own account (not to model providers): webhooks."""
