"""`apflow notify endpoints|deliveries`: where events are sent, and what was sent."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from apflow_server.config import Settings
from apflow_server.core.events import EVENT_TYPES
from apflow_server.core.logs import configure_logging
from apflow_server.notifications.dispatcher import Dispatcher
from apflow_server.notifications.worker import deliver_until_stopped
from apflow_server.service import Service
from apflow_server.service.notifications import (
    CreatedEndpoint,
    delivery_to_dict,
    endpoint_to_dict,
)
from apflow_server.storage.database import Database
from apflow_server.storage.notifications import DELIVERY_STATUSES
from apflow_server.storage.pages import Page

from . import output
from .options import format_option
from .runtime import OPERATOR, database_errors, run_with_service


@click.group("notify")
def notify_group() -> None:
    """Get told when something goes wrong: signed webhooks for failed, missed, late runs.

    Deliveries follow the Standard Webhooks specification: failed, missed, skipped or late
    runs, paused and resumed schedules, external schedulers that stopped calling."""


@notify_group.group("endpoints")
def endpoints_group() -> None:
    """The URLs events are sent to."""


events_option = click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(EVENT_TYPES),
    help="An event to send (repeat the option; default: every one but run.succeeded and ping).",
)


@endpoints_group.command("create")
@click.argument("url")
@events_option
@click.option("--description", help="What the endpoint is for.")
@click.option("--user-id", help="Whose endpoint (whose tasks' events it receives).")
@format_option
def create(
    url: str,
    events: tuple[str, ...],
    description: str | None,
    user_id: str | None,
    output_format: str,
) -> None:
    """Send events to URL. Prints the endpoint's signing secret (whsec_...) once."""

    async def work(service: Service) -> CreatedEndpoint:
        return await service.notifications.create(
            OPERATOR,
            url=url,
            events=list(events) or None,
            description=description,
            user_id=user_id,
        )

    created = run_with_service(work)
    shown = endpoint_to_dict(created.endpoint)
    if output_format == "json":
        output.print_json({**shown, "secret": created.secret})
        return
    output.line(f"Endpoint {shown['id']} sends {', '.join(shown['events'])} to {shown['url']}.")
    output.line("Its signing secret (shown once; verify every delivery with it):")
    output.line(created.secret)


@endpoints_group.command("list")
@click.option("--user-id", help="Only this user's endpoints.")
@format_option
def list_endpoints(user_id: str | None, output_format: str) -> None:
    """The endpoints (never their secrets)."""

    async def work(service: Service) -> list[Any]:
        return await service.notifications.listing(OPERATOR, user_id)

    rows = [endpoint_to_dict(endpoint) for endpoint in run_with_service(work)]
    if output_format == "json":
        output.print_json({"items": rows, "total": len(rows)})
        return
    if not rows:
        output.line("No notification endpoints.")
    for row in rows:
        state = "enabled" if row["enabled"] else f"disabled: {row['disabled_reason']}"
        output.line(f"{row['id']}  {row['user_id'] or '-'}  {row['url']}  {state}")
        output.line(f"    {', '.join(row['events'])}")


@endpoints_group.command("update")
@click.argument("endpoint_id")
@click.option("--url", help="A new URL.")
@events_option
@click.option("--description", help="A new description.")
@click.option("--enable/--disable", "enabled", default=None, help="Turn deliveries on or off.")
@format_option
def update(
    endpoint_id: str,
    url: str | None,
    events: tuple[str, ...],
    description: str | None,
    enabled: bool | None,
    output_format: str,
) -> None:
    """Change an endpoint (enabling a disabled one clears why it was disabled)."""
    changes: dict[str, Any] = {}
    if url is not None:
        changes["url"] = url
    if events:
        changes["events"] = list(events)
    if description is not None:
        changes["description"] = description
    if enabled is not None:
        changes["enabled"] = enabled
    if not changes:
        raise click.UsageError("nothing to change: give --url, --event, --description or --enable")

    async def work(service: Service) -> Any:
        return await service.notifications.update(OPERATOR, endpoint_id, changes)

    row = endpoint_to_dict(run_with_service(work))
    if output_format == "json":
        output.print_json(row)
        return
    output.line(f"Updated endpoint {row['id']}.")


@endpoints_group.command("delete")
@click.argument("endpoint_id")
def delete(endpoint_id: str) -> None:
    """Delete an endpoint and its deliveries."""

    async def work(service: Service) -> None:
        await service.notifications.delete(OPERATOR, endpoint_id)

    run_with_service(work)
    output.line(f"Deleted endpoint {endpoint_id}.")


@endpoints_group.command("test")
@click.argument("endpoint_id")
def test(endpoint_id: str) -> None:
    """Send the endpoint a `ping` event (a running scheduler delivers it)."""

    async def work(service: Service) -> int:
        return await service.notifications.test(OPERATOR, endpoint_id)

    run_with_service(work)
    output.line(f"Queued a ping to endpoint {endpoint_id}; a running scheduler delivers it.")


@notify_group.command("worker")
def worker() -> None:
    """Deliver notifications until Ctrl-C or SIGTERM (beside schedulers started with
    APFLOW_NOTIFY_IN_SCHEDULER=off, or to add delivery capacity)."""
    settings = Settings.from_env()
    configure_logging(logging.INFO, settings.log_format)
    with database_errors():
        asyncio.run(_deliver_until_stopped(settings))


async def _deliver_until_stopped(settings: Settings) -> None:
    database = Database.from_settings(settings)
    try:
        await database.ensure_schema()
        output.line("Delivering notifications; Ctrl-C to stop.")
        await deliver_until_stopped(Dispatcher(database, settings), asyncio.Event())
    finally:
        await database.dispose()


@notify_group.command("deliveries")
@click.option("--endpoint", "endpoint_id", help="Only this endpoint's deliveries.")
@click.option("--status", type=click.Choice(DELIVERY_STATUSES), help="Only these.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@format_option
def deliveries(
    endpoint_id: str | None, status: str | None, limit: int, offset: int, output_format: str
) -> None:
    """What was sent, newest first: status, attempts and the receiver's last answer."""

    async def work(service: Service) -> Page:
        return await service.notifications.deliveries(
            OPERATOR, endpoint_id=endpoint_id, status=status, limit=limit, offset=offset
        )

    page = run_with_service(work)
    rows = [delivery_to_dict(delivery) for delivery in page.items]
    if output_format == "json":
        output.print_json({"items": rows, "total": page.total, "limit": limit, "offset": offset})
        return
    if not rows:
        output.line("No deliveries.")
    for row in rows:
        answer = row["last_error"] or (row["last_status_code"] or "")
        output.line(
            f"{row['created_at']}  {row['event_type']:<18} {row['status']:<9} "
            f"attempts {row['attempts']}  {row['id']}  {answer}"
        )
    footer = output.page_footer(len(rows), page.total, offset)
    if footer:
        output.line(footer)
