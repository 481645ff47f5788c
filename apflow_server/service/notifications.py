"""Notification endpoints and their deliveries: what a user sets up to be told when something
goes wrong. A user sees and changes only their own endpoints (another user's is "not found");
admins and the local operator anyone's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import httpx

from apflow_server.config import Settings
from apflow_server.core.clock import Clock, iso_utc, utcnow
from apflow_server.core.errors import NotFoundError, ValidationError
from apflow_server.core.events import DEFAULT_EVENTS, EVENT_TYPES, PING, Event
from apflow_server.core.task_fields import is_valid_unicode
from apflow_server.execution.rest.addresses import non_public_reason
from apflow_server.execution.rest.connection import ConnectError
from apflow_server.execution.rest.transport import resolve
from apflow_server.notifications import signing
from apflow_server.notifications.secret_box import SecretBox
from apflow_server.service.audit import Audit, Change
from apflow_server.service.caller import Principal, check_owner, user_scope
from apflow_server.storage import notifications as store
from apflow_server.storage.database import Database
from apflow_server.storage.models import NotificationEndpoint
from apflow_server.storage.pages import Page

MAX_URL = 2000
MAX_DESCRIPTION = 500
MAX_ENDPOINTS_PER_USER = 50


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: NotificationEndpoint
    secret: str  # whsec_..., shown once


class Notifications:
    def __init__(
        self, database: Database, settings: Settings, audit: Audit, clock: Clock = utcnow
    ) -> None:
        self.database = database
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self._box: SecretBox | None = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:  # made when first needed: the key file is created on first use
            self._box = SecretBox.for_settings(self.settings)
        return self._box

    async def create(
        self,
        caller: Principal | None,
        *,
        url: Any,
        events: Any = None,
        description: Any = None,
        user_id: Any = None,
    ) -> CreatedEndpoint:
        owner = _owner(caller, user_id)
        checked_url = await self._check_url(url)
        wanted = _events(events)
        text = _description(description)
        if len(await store.list_endpoints(self.database, owner)) >= MAX_ENDPOINTS_PER_USER:
            raise ValidationError("url", f"at most {MAX_ENDPOINTS_PER_USER} endpoints per user")
        secret = signing.new_secret()
        now = self.clock()
        endpoint = NotificationEndpoint(
            id=store.new_endpoint_id(),
            user_id=owner,
            url=checked_url,
            description=text,
            events=list(wanted),
            secret_encrypted=self.box.seal(secret),
            enabled=True,
            disabled_reason=None,
            failing_since=None,
            created_at=now,
            updated_at=now,
        )
        await store.create_endpoint(self.database, endpoint)
        fields = ("url", "events", "description", "secret")
        change = Change("endpoint.create", "endpoint", endpoint.id, owner, fields)
        await self.audit.record(caller, change)
        return CreatedEndpoint(endpoint, secret)

    async def listing(
        self, caller: Principal | None, user_id: Any = None
    ) -> list[NotificationEndpoint]:
        return await store.list_endpoints(self.database, user_scope(caller, user_id))

    async def get(self, caller: Principal | None, endpoint_id: Any) -> NotificationEndpoint:
        if (
            not isinstance(endpoint_id, str)
            or not endpoint_id
            or len(endpoint_id) > 64
            or "\x00" in endpoint_id
            or not is_valid_unicode(endpoint_id)
        ):
            raise ValidationError("id", "must be an endpoint id")
        endpoint = await store.get_endpoint(self.database, endpoint_id)
        if endpoint is None or (caller is not None and not caller.may_act_for(endpoint.user_id)):
            raise _not_found(endpoint_id)
        return endpoint

    async def update(
        self, caller: Principal | None, endpoint_id: Any, changes: dict[str, Any]
    ) -> NotificationEndpoint:
        """Change url, events, description or enabled; everything is checked before anything
        is written."""
        await self.get(caller, endpoint_id)
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "url":
                values["url"] = await self._check_url(value)
            elif name == "events":
                values["events"] = list(_events(value))
            elif name == "description":
                values["description"] = _description(value)
            elif name == "enabled":
                if not isinstance(value, bool):
                    raise ValidationError("enabled", "must be true or false")
                values["enabled"] = value
            else:
                raise ValidationError(name, "unknown field")
        updated = await store.update_endpoint(self.database, endpoint_id, values, self.clock())
        if updated is None:
            raise _not_found(endpoint_id)
        change = Change("endpoint.update", "endpoint", updated.id, updated.user_id, tuple(values))
        await self.audit.record(caller, change)
        return updated

    async def delete(self, caller: Principal | None, endpoint_id: Any) -> None:
        endpoint = await self.get(caller, endpoint_id)
        await store.delete_endpoint(self.database, endpoint_id)
        change = Change("endpoint.delete", "endpoint", endpoint.id, endpoint.user_id)
        await self.audit.record(caller, change)

    async def test(self, caller: Principal | None, endpoint_id: Any) -> int:
        """Queue a `ping` to the endpoint (whatever events it asked for)."""
        endpoint = await self.get(caller, endpoint_id)
        if not endpoint.enabled:
            raise ValidationError("id", "the endpoint is disabled; enable it first")
        event = Event(
            PING,
            endpoint.user_id,
            {"endpoint_id": endpoint.id, "message": "a test from apflow-server"},
            endpoint_id=endpoint.id,
        )
        async with self.database.transaction(write=True) as session:
            queued = await store.enqueue(session, [event], self.clock())
        change = Change("endpoint.test", "endpoint", endpoint.id, endpoint.user_id)
        await self.audit.record(caller, change)
        return queued

    async def deliveries(
        self,
        caller: Principal | None,
        *,
        endpoint_id: Any = None,
        status: Any = None,
        user_id: Any = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page:
        if endpoint_id is not None:
            endpoint = await self.get(caller, endpoint_id)
            check_owner(caller, endpoint.user_id, "endpoint")
        if status is not None and status not in store.DELIVERY_STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(store.DELIVERY_STATUSES)}")
        return await store.list_deliveries(
            self.database,
            user_id=user_scope(caller, user_id),
            endpoint_id=endpoint_id,
            status=status,
            limit=limit,
            offset=offset,
        )

    async def _check_url(self, value: Any) -> str:
        """An http(s) URL whose host is public (unless private addresses are allowed). The
        delivery checks again, on the address it actually connects to."""
        if not isinstance(value, str) or not value.strip():
            raise ValidationError("url", "must be an http or https URL")
        if len(value) > MAX_URL:
            raise ValidationError("url", f"must be at most {MAX_URL} characters")
        try:
            url = httpx.URL(value.strip())
        except (httpx.InvalidURL, ValueError):
            raise ValidationError("url", "is not a valid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValidationError("url", "must be an http or https URL with a host")
        if self.settings.notify_allow_private_urls:
            return str(url)
        try:
            addresses = [ip_address(url.host)]
        except ValueError:
            try:
                addresses = await resolve(url.host, url.port or 443)
            except ConnectError as exc:
                raise ValidationError("url", str(exc)) from None
        for address in addresses:
            reason = non_public_reason(address)
            if reason is not None:
                raise ValidationError(
                    "url",
                    f"{url.host} is a {reason} address ({address}); set "
                    "APFLOW_NOTIFY_ALLOW_PRIVATE_URLS=1 to allow it",
                )
        return str(url)


def _not_found(endpoint_id: str) -> NotFoundError:
    return NotFoundError(f"no notification endpoint {endpoint_id!r}", data={"id": endpoint_id})


def _owner(caller: Principal | None, user_id: Any) -> str | None:
    """Whose endpoint: the caller's own; an admin (or the local operator) may name a user."""
    if user_id is not None and not isinstance(user_id, str):
        raise ValidationError("user_id", "must be a string")
    if caller is None or caller.is_admin or caller.subject is None:
        return user_id
    check_owner(caller, user_id if user_id is not None else caller.subject, "endpoint")
    return caller.subject


def _events(value: Any) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_EVENTS
    if not isinstance(value, list) or not value:
        raise ValidationError("events", "must be a non-empty list of event names")
    for name in value:
        if name not in EVENT_TYPES:
            raise ValidationError(
                "events", f"unknown event {name!r} (known: {', '.join(EVENT_TYPES)})"
            )
    return tuple(dict.fromkeys(value))


def _description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION or "\x00" in value:
        raise ValidationError(
            "description", f"must be text of at most {MAX_DESCRIPTION} characters"
        )
    return value


def endpoint_to_dict(endpoint: NotificationEndpoint) -> dict[str, Any]:
    """An endpoint as shown to its owner: everything but the secret."""
    return {
        "id": endpoint.id,
        "user_id": endpoint.user_id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events or []),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": iso_utc(endpoint.failing_since),
        "created_at": iso_utc(endpoint.created_at),
        "updated_at": iso_utc(endpoint.updated_at),
    }


def delivery_to_dict(delivery: Any) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": iso_utc(delivery.next_attempt_at)
        if delivery.status == store.PENDING
        else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": iso_utc(delivery.created_at),
        "delivered_at": iso_utc(delivery.delivered_at),
        "payload": json.loads(delivery.body),
    }
