"""Outbound notifications: events signed per the Standard Webhooks specification and delivered
at least once from the outbox (storage/notifications.py) by any instance."""
