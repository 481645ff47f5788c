"""GET /scheduler/ical: the live calendar feed.

A calendar app subscribes with `?api_key=<feed key>` (issued by `apflow scheduler feed-key`,
stored hashed, revocable) or a JWT (as `api_key` or a bearer header). A key opens exactly its
own user's calendar. Calendar apps poll: the answer carries an ETag and Last-Modified derived
from the tasks it shows, and an unchanged feed is a bodyless 304.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apflow_server.api.auth import Principal, decode_token, principal_of
from apflow_server.api.services import Services
from apflow_server.core.compute import off_loop
from apflow_server.core.errors import ApflowError, ForbiddenError, UnauthenticatedError
from apflow_server.core.task_fields import check_user_id
from apflow_server.exports.ical import ICalExporter
from apflow_server.service.feeds import looks_like_feed_key

FEED_NAME = "APFlow Tasks"


async def feed_user(request: Request, services: Services) -> str | None:
    """The user whose calendar this request may read (None: every user's, for admins and
    when authentication is off)."""
    settings = services.settings
    requested = check_user_id("user_id", request.query_params.get("user_id") or None)
    api_key = request.query_params.get("api_key") or None
    principal: Principal | None = principal_of(request)
    if api_key is not None:
        if looks_like_feed_key(api_key):
            owner = await services.service.feeds.user_of(api_key)
            if requested is not None and requested != owner:
                raise ForbiddenError("this feed key opens another user's calendar")
            return owner
        if not settings.jwt_secret:  # not a feed key, and there are no tokens to be one
            raise UnauthenticatedError(
                "unknown api_key: use a feed key from `apflow scheduler feed-key`"
            )
        principal = decode_token(api_key, settings)
    if principal is not None:
        if principal.is_admin:
            return requested
        if requested is not None and requested != principal.subject:
            raise ForbiddenError("you may only read your own calendar")
        return principal.subject
    if settings.jwt_secret:
        raise UnauthenticatedError("a feed key or a token is required (api_key=...)")
    return requested


def fingerprint(tasks: list[Any], *parts: str) -> tuple[str, datetime]:
    """An ETag and a Last-Modified for a feed of `tasks`: they change exactly when an event
    would (a task's definition, its next occurrence or its remaining runs)."""
    digest = hashlib.sha256("|".join(parts).encode())
    modified = datetime(2000, 1, 1, tzinfo=UTC)
    for task in tasks:
        digest.update(
            f"{task.id}|{task.updated_at.isoformat()}|{task.next_run_at}|{task.run_count}".encode()
        )
        modified = max(modified, task.updated_at, task.last_run_at or modified)
    return f'"{digest.hexdigest()[:32]}"', modified.replace(microsecond=0)


async def ical_feed(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        user_id = await feed_user(request, services)
    except ApflowError as error:
        status = error.http_status
        return JSONResponse({"error": error.message}, status_code=status)
    base_url = str(request.base_url).rstrip("/")
    exporter = ICalExporter(FEED_NAME, base_url=base_url, repository=services.repository)
    tasks = await exporter.fetch_tasks(user_id=user_id, enabled_only=True)
    etag, modified = fingerprint(tasks, FEED_NAME, base_url, user_id or "*")
    headers = {
        "ETag": etag,
        "Last-Modified": format_datetime(modified, usegmt=True),
        "Cache-Control": "private, max-age=300",
    }
    if _not_modified(request, etag, modified):
        return Response(status_code=304, headers=headers)
    # DTSTAMP is the feed's Last-Modified, so an unchanged feed is byte-for-byte the same.
    body = await off_loop(exporter.render, tasks, modified)
    return Response(body, media_type="text/calendar; charset=utf-8", headers=headers)


def _not_modified(request: Request, etag: str, modified: datetime) -> bool:
    match = request.headers.get("if-none-match")
    if match is not None:
        return etag in {tag.strip() for tag in match.split(",")} or match.strip() == "*"
    since = request.headers.get("if-modified-since")
    if since:
        try:
            return modified <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False
