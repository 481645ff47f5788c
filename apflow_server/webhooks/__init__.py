"""Webhook triggers: their HMAC signatures and the pluggable verify hook."""
