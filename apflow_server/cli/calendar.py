"""`apflow scheduler export-ical|feed-key`: the schedule as a calendar file, and the keys
that open a user's live calendar feed (GET /scheduler/ical)."""

from __future__ import annotations

from pathlib import Path

import click

from apflow_server.config import Settings
from apflow_server.exports.ical import DEFAULT_CALENDAR_NAME, generate_ical_feed_url
from apflow_server.service import Service
from apflow_server.storage.feed_keys import IssuedKey
from apflow_server.storage.models import FeedKey

from . import output
from .gateway import base_url_of, base_url_option
from .options import format_option
from .runtime import OPERATOR, run_with_service
from .scheduler import scheduler_group


@scheduler_group.command("export-ical")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--user-id", help="Only this user's tasks.")
@click.option("--name", default=DEFAULT_CALENDAR_NAME, show_default=True, help="Calendar name.")
@click.option("--all", "include_disabled", is_flag=True, help="Include disabled schedules.")
@click.option("--base-url", help="Link each event to this server (URL property).")
def export_ical(
    path: Path | None,
    user_id: str | None,
    name: str,
    include_disabled: bool,
    base_url: str | None,
) -> None:
    """Write the scheduled tasks as an iCalendar file (stdout without -o)."""

    async def work(service: Service) -> tuple[str, int]:
        with output.console(stderr=True).status("Exporting the schedule ..."):
            return await service.schedules.export_ical(
                OPERATOR,
                calendar_name=name,
                enabled_only=not include_disabled,
                user_id=user_id,
                base_url=base_url,
            )

    content, count = run_with_service(work)
    if path is None:
        click.echo(content, nl=False)
        return
    try:
        path.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(path), exc.strerror or str(exc)) from None
    output.line(f"Wrote {count} scheduled task(s) to {path}.")


@scheduler_group.command("feed-key")
@click.option("--user-id", help="The user whose calendar the key opens.")
@click.option("--label", help="A note to recognise the key by (e.g. 'phone').")
@click.option("--list", "listing", is_flag=True, help="List the keys (never their secrets).")
@click.option("--revoke", "revoke_id", metavar="KEY_ID", help="Revoke a key by its id.")
@base_url_option
@format_option
def feed_key(
    user_id: str | None,
    label: str | None,
    listing: bool,
    revoke_id: str | None,
    base_url: str | None,
    output_format: str,
) -> None:
    """Issue a calendar feed key for a user (shown once; only its hash is stored), list the
    keys, or revoke one. Subscribe a calendar app to the printed URL."""
    if listing and revoke_id:
        raise click.UsageError("--list and --revoke do not go together")
    if listing:
        _list_keys(user_id, output_format)
    elif revoke_id:
        _revoke_key(revoke_id)
    elif user_id is None:
        raise click.UsageError("--user-id is required to issue a key")
    else:
        _issue_key(user_id, label, base_url_of(base_url, Settings.from_env()), output_format)


def _list_keys(user_id: str | None, output_format: str) -> None:
    async def work(service: Service) -> list[FeedKey]:
        return await service.feeds.listing(OPERATOR, user_id)

    rows = [
        {
            "key_id": key.id,
            "user_id": key.user_id,
            "label": key.label,
            "created_at": key.created_at.isoformat(),
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        }
        for key in run_with_service(work)
    ]
    if output_format == "json":
        output.print_json({"items": rows, "total": len(rows)})
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        output.line(f"{row['key_id']}  {row['user_id']}  {row['label'] or ''}  {state}")


def _revoke_key(key_id: str) -> None:
    async def work(service: Service) -> FeedKey:
        return await service.feeds.revoke(OPERATOR, key_id)

    run_with_service(work)
    output.line(f"Revoked feed key {key_id}.")


def _issue_key(user_id: str, label: str | None, base_url: str, output_format: str) -> None:
    async def work(service: Service) -> IssuedKey:
        return await service.feeds.issue(OPERATOR, user_id, label)

    issued = run_with_service(work)
    url = generate_ical_feed_url(base_url, user_id=user_id, api_key=issued.key)
    if output_format == "json":
        output.print_json(
            {"key_id": issued.record.id, "user_id": user_id, "api_key": issued.key, "url": url}
        )
        return
    output.line(f"Feed key {issued.record.id} for user {user_id} (shown once; keep it secret):")
    output.line(issued.key)
    output.line(f"Subscribe your calendar to: {url}")
