"""The error an executor raises for a failure worth one clear line."""

from __future__ import annotations


class ExecutionError(Exception):
    """A task failed for a reason worth one clear line in its error field."""
