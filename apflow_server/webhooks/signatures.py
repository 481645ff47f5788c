"""HMAC signatures of webhook triggers. Pure: no I/O, no clock of its own.

signature = lowercase hex HMAC-SHA256(secret, "{timestamp}.{task_id}.{raw body}")

The task id is written as `signed_task_id(task_id)`: unchanged for ids without a dot, which is
nearly every id (uuid4 by default), and with each `.` written `%2E` otherwise. Without that, a
signature would not say where the id ends: `"{ts}.x.y."` signs both task `x.y` with an empty
body and task `x` with the body `y.`. After the rewrite the id holds no dot, so the first dot
after the timestamp always ends it. Task ids never contain `%` (their alphabet is letters,
digits and `_ . : -`), so no id without a dot can collide with a rewritten one.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
ALGORITHM = "HMAC-SHA256"
SIGNED_CONTENT = "{timestamp}.{task_id}.{body}"


class SignatureError(Exception):
    """Why a signature was refused; `reason` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def signed_task_id(task_id: str) -> str:
    """The task id as the signed content spells it (see the module docstring)."""
    if "." not in task_id and "%" not in task_id:
        return task_id
    return task_id.replace("%", "%25").replace(".", "%2E")


def sign(secret: str, timestamp: str | int, task_id: str, body: bytes = b"") -> str:
    message = f"{timestamp}.{signed_task_id(task_id)}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    task_id: str,
    body: bytes,
    now: float,
    tolerance_seconds: int,
) -> None:
    """Accept a signature made for this task and body, at a time within the tolerance."""
    if not timestamp or not signature:
        raise SignatureError("missing", f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    try:
        moment = int(timestamp)
    except ValueError:
        raise SignatureError("bad_timestamp", f"{TIMESTAMP_HEADER} must be unix seconds") from None
    if abs(int(now) - moment) > tolerance_seconds:  # ints: a huge timestamp cannot overflow
        raise SignatureError("stale", "the webhook timestamp is outside the allowed window")
    expected = sign(secret, timestamp, task_id, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise SignatureError("bad_signature", "the webhook signature does not match")
