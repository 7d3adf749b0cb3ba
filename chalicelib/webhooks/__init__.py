"""Webhooks: the endpoints use case and the sender (issue 22; docs/webhooks.md)."""
