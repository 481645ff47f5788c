"""Who is asking, and what that lets them touch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apflow_server.core.errors import ForbiddenError, ValidationError


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `subject` None means a system caller (a verify hook or HMAC
    signature that named no user)."""

    subject: str | None
    is_admin: bool
    source: str  # jwt, hook, hmac

    def may_act_for(self, user_id: str | None) -> bool:
        return self.is_admin or self.subject is None or self.subject == user_id


def is_admin(principal: Principal | None) -> bool:
    """The local operator (None) and admins may do everything."""
    return principal is None or principal.is_admin


def check_owner(principal: Principal | None, user_id: str | None, what: str = "task") -> None:
    if principal is not None and not principal.may_act_for(user_id):
        raise ForbiddenError(f"this {what} belongs to another user")


def user_scope(principal: Principal | None, requested: Any) -> str | None:
    """The user filter a listing may use: anyone's for admins (and the local operator), one's
    own otherwise."""
    if requested is not None and not isinstance(requested, str):
        raise ValidationError("user_id", "must be a string")
    if principal is None or principal.is_admin or principal.subject is None:
        return requested
    if requested not in (None, principal.subject):
        raise ForbiddenError("you may only list your own tasks")
    return principal.subject
