"""Errors every layer raises and every front end (JSON-RPC, REST, CLI) maps to its own form.

Each carries its JSON-RPC code, its HTTP status and a short `kind` (a label for metrics), so
the mapping lives here and nowhere else.
"""

from __future__ import annotations

from typing import Any


class ApflowError(Exception):
    """Base of the errors a client may see; `code` is the JSON-RPC error code."""

    code = -32603
    http_status = 500
    kind = "internal"

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ValidationError(ApflowError):
    """Bad input. `field` names the offending field (dotted path for nested values)."""

    code = -32602
    http_status = 400
    kind = "bad_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", data={"field": field})
        self.field = field
        self.reason = message


class NotFoundError(ApflowError):
    code = -32004
    http_status = 404
    kind = "not_found"


class TaskNotFoundError(NotFoundError):
    """No task with this id (or none the caller may see: the answer is the same)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found", data={"task_id": task_id})


class ConflictError(ApflowError):
    code = -32009
    http_status = 409
    kind = "conflict"


class ForbiddenError(ApflowError):
    code = -32003
    http_status = 403
    kind = "forbidden"


class UnauthenticatedError(ApflowError):
    code = -32001
    http_status = 401
    kind = "unauthenticated"


class RateLimitedError(ApflowError):
    """Too many requests from one client; `data.retry_after` says when to try again."""

    code = -32029
    http_status = 429
    kind = "rate_limited"


_KINDS = (
    ValidationError,
    NotFoundError,
    ConflictError,
    ForbiddenError,
    UnauthenticatedError,
    RateLimitedError,
)
# JSON-RPC answers its errors with HTTP 200, except these two, which are about the HTTP
# request itself (who sent it, how often) and keep their HTTP status.
TRANSPORT_CODES = frozenset({UnauthenticatedError.code, RateLimitedError.code})


def http_status(code: int) -> int:
    """The HTTP status of a JSON-RPC error code (500 for a code that is no client's fault)."""
    for kind in _KINDS:
        if kind.code == code:
            return kind.http_status
    return 500
