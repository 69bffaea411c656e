"""Webhooks on segment enter and exit: subscriptions, a durable outbox, signed delivery."""
