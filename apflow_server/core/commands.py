"""Rules for tasks that run commands (command_executor). Pure: no settings read, no I/O.

They are applied where a command task is written (the repository) and again where it runs (the
executor), because a run's inputs also hold what its dependencies returned.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from apflow_server.core.errors import ValidationError

COMMAND_EXECUTOR = "command_executor"


def names_command_executor(params: Any, schemas: Any) -> bool:
    """Whether a task names command_executor, by `params.executor_id` or `schemas.method`.

    Either one counts, even when the other names another executor: the run uses the first
    that is set, and a later change to one of them would switch the task to commands.
    """
    return any(
        isinstance(holder, dict) and holder.get(key) == COMMAND_EXECUTOR
        for holder, key in ((params, "executor_id"), (schemas, "method"))
    )


def check_command_env(env: Any, allowed: Collection[str], field: str = "inputs.env") -> None:
    """Refuse a command's `env` unless every name it sets is listed in `allowed`.

    Variables such as GIT_SSH_COMMAND, GIT_CONFIG_*, LD_PRELOAD or PATH make an allowed program
    run another one, so nothing is allowed unless the operator listed it.
    """
    if env is None:
        return
    if not isinstance(env, dict):
        raise ValidationError(field, "must be an object of variable names and values")
    for name in env:
        if name not in allowed:
            raise ValidationError(
                field, f"{name!r} may not be set: it is not in APFLOW_COMMAND_ENV_ALLOWLIST"
            )


# What a command run does is decided by the task's stored inputs alone: a dependency's result
# is merged into a run's inputs, and the dependency may belong to someone who may not write
# command tasks (a non-admin owner of the tree an admin put the command task in).
CONTROL_INPUTS = ("command", "cwd", "env", "timeout")


def pin_control_inputs(stored: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """`merged` with the command's control inputs taken from `stored` only."""
    pinned = dict(merged)
    for key in CONTROL_INPUTS:
        if key in stored:
            pinned[key] = stored[key]
        else:
            pinned.pop(key, None)
    return pinned
