"""Kept for earlier import paths: see `apflow_server.webhooks.signatures`."""

from apflow_server.webhooks.signatures import (
    ALGORITHM,
    SIGNATURE_HEADER,
    SIGNED_CONTENT,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    signed_task_id,
    verify,
)

__all__ = [
    "ALGORITHM",
    "SIGNATURE_HEADER",
    "SIGNED_CONTENT",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "sign",
    "signed_task_id",
    "verify",
]
