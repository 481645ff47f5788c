"""Errors every layer raises and every front end (JSON-RPC, REST, CLI) maps to its own form.

Each carries the JSON-RPC code of SPEC §6 so the mapping lives in one place.
"""

from __future__ import annotations

from typing import Any


class ApflowError(Exception):
    """Base of the errors a client may see; `code` is the JSON-RPC error code."""

    code = -32603

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ValidationError(ApflowError):
    """Bad input. `field` names the offending field (dotted path for nested values)."""

    code = -32602

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", data={"field": field})
        self.field = field
        self.reason = message


class NotFoundError(ApflowError):
    code = -32004


class ConflictError(ApflowError):
    code = -32009


class ForbiddenError(ApflowError):
    code = -32003


class UnauthenticatedError(ApflowError):
    code = -32001


class RateLimitedError(ApflowError):
    """Too many requests from one client; `data.retry_after` says when to try again."""

    code = -32029
