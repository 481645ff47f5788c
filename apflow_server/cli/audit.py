"""`apflow audit`: who changed what, and when."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from apflow_server.service import Service
from apflow_server.service.audit import entry_to_dict
from apflow_server.storage.pages import Page

from . import output
from .options import format_option
from .runtime import OPERATOR, run_with_service


@click.command("audit")
@click.option("--task", "target_id", help="Only changes to this task (or endpoint, key, backfill).")
@click.option("--actor", help="Only changes by this actor (a user, or cli:<os user>).")
@click.option("--since", type=click.DateTime(), help="From this UTC time on.")
@click.option("--until", type=click.DateTime(), help="Before this UTC time.")
@click.option("--user-id", help="Only changes to this user's objects.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@format_option
def audit(
    target_id: str | None,
    actor: str | None,
    since: datetime | None,
    until: datetime | None,
    user_id: str | None,
    limit: int,
    offset: int,
    output_format: str,
) -> None:
    """Who changed what, and when (the audit log).

    Newest first: actor, action, target and the names of the fields changed (never their
    values)."""

    async def work(service: Service) -> Page:
        return await service.audit.listing(
            OPERATOR,
            task_id=target_id,
            actor=actor,
            since=_utc(since),
            until=_utc(until),
            user_id=user_id,
            limit=limit,
            offset=offset,
        )

    page = run_with_service(work)
    rows = [entry_to_dict(entry) for entry in page.items]
    if output_format == "json":
        output.print_json({"items": rows, "total": page.total, "limit": limit, "offset": offset})
        return
    if not rows:
        output.line("No changes recorded.")
    for row in rows:
        fields = f"  [{', '.join(row['fields'])}]" if row["fields"] else ""
        output.line(
            f"{row['at']}  {row['actor']:<16} {row['action']:<20} "
            f"{row['target_type']} {row['target_id']}{fields}"
        )
    footer = output.page_footer(len(rows), page.total, offset)
    if footer:
        output.line(footer)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)
