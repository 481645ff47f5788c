"""`apflow calendars ...`: named business calendars (weekends, public holidays, closed dates)
that schedules follow."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import click

from apflow_server.service import Service
from apflow_server.service.calendars import calendar_to_dict

from . import output
from .options import format_option
from .runtime import OPERATOR, run_with_service

MAX_ICS_BYTES = 1024 * 1024


@click.group("calendars")
def calendars_group() -> None:
    """Business calendars: which days schedules run on.

    Weekend days, a country's public holidays (the `holidays` package: --country DE
    --subdivision BY), explicit closed dates and the all-day events of an iCalendar file.
    A schedule follows one with `apflow tasks update ID --schedule-calendar NAME`, and
    --schedule-calendar-rule says what an occurrence on a closed day does: skip (recorded
    skipped, the day's name the reason), next_business_day or previous_business_day.
    Monthly schedules may count business days: BD1 09:00, BD3 09:00, BDL 17:00."""


def _definition_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--weekend",
                help="Closed weekdays, 1=Monday..7=Sunday, comma-separated (default 6,7).",
            ),
            click.option("--country", help="Public holidays of this country (e.g. DE, US)."),
            click.option("--subdivision", help="... and of this subdivision (e.g. BY)."),
            click.option(
                "--date",
                "dates",
                multiple=True,
                help="A closed date, YYYY-MM-DD or YYYY-MM-DD=reason (repeat the option).",
            ),
            click.option(
                "--ics",
                "ics_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="Closed days from the all-day events of an iCalendar file.",
            ),
            click.option(
                "--timezone", help="The zone whose dates decide (default: each schedule's)."
            ),
        ]
    ):
        command = option(command)
    return command


def _fields(
    weekend: str | None,
    country: str | None,
    subdivision: str | None,
    dates: tuple[str, ...],
    ics_file: Path | None,
    timezone: str | None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if weekend is not None:
        try:
            fields["weekend"] = [int(day) for day in weekend.split(",") if day.strip()]
        except ValueError:
            raise click.BadParameter(
                "weekdays as numbers 1-7, e.g. 6,7", param_hint="--weekend"
            ) from None
    if country is not None or subdivision is not None:
        fields["holidays"] = {
            key: value
            for key, value in (("country", country), ("subdivision", subdivision))
            if value is not None
        }
    if dates:
        fields["dates"] = [
            {"date": day, "reason": reason} if reason else day
            for day, _, reason in (item.partition("=") for item in dates)
        ]
    if ics_file is not None:
        if ics_file.stat().st_size > MAX_ICS_BYTES:
            raise click.BadParameter("larger than 1 MB", param_hint="--ics")
        fields["ics"] = ics_file.read_text(encoding="utf-8", errors="replace")
    if timezone is not None:
        fields["timezone"] = timezone
    return fields


def _show(calendar: Any, output_format: str, headline: str) -> None:
    shown = calendar_to_dict(calendar)
    if output_format == "json":
        output.print_json(shown)
        return
    output.line(headline)
    holidays = shown["holidays"]
    parts = [
        f"weekend {','.join(str(day) for day in shown['weekend']) or 'none'}",
        f"holidays {holidays['country']}"
        + (f"-{holidays['subdivision']}" if holidays and holidays.get("subdivision") else "")
        if holidays
        else "no public holidays",
        f"{len(shown['dates'])} closed date(s)",
    ]
    if shown["ics"]:
        parts.append("days from an ICS file")
    output.line("  " + "; ".join(parts))


@calendars_group.command("create")
@click.argument("name")
@_definition_options
@click.option("--user-id", help="Whose calendar (default: the local operator's).")
@format_option
def create(name: str, user_id: str | None, output_format: str, **options: Any) -> None:
    """A calendar NAME, e.g.: apflow calendars create munich --country DE --subdivision BY"""
    fields = _fields(**options)

    async def work(service: Service) -> Any:
        return await service.calendars.create(OPERATOR, name=name, user_id=user_id, **fields)

    _show(run_with_service(work), output_format, f"Created calendar {name}.")


@calendars_group.command("update")
@click.argument("name")
@_definition_options
@click.option("--user-id", help="Whose calendar.")
@format_option
def update(name: str, user_id: str | None, output_format: str, **options: Any) -> None:
    """Change what calendar NAME closes (the options given replace the stored ones)."""
    fields = _fields(**options)
    if not fields:
        raise click.UsageError("nothing to change: give --weekend, --country, --date, --ics ...")

    async def work(service: Service) -> Any:
        return await service.calendars.update(OPERATOR, name, fields, user_id)

    _show(run_with_service(work), output_format, f"Updated calendar {name}.")


@calendars_group.command("list")
@click.option("--user-id", help="Only this user's calendars.")
@format_option
def list_calendars(user_id: str | None, output_format: str) -> None:
    """The calendars."""

    async def work(service: Service) -> list[Any]:
        return await service.calendars.listing(OPERATOR, user_id)

    found = run_with_service(work)
    if output_format == "json":
        rows = [calendar_to_dict(calendar) for calendar in found]
        output.print_json({"items": rows, "total": len(rows)})
        return
    if not found:
        output.line("No calendars yet: apflow calendars create NAME --country DE")
    for calendar in found:
        owner = f" (user {calendar.user_id})" if calendar.user_id else ""
        _show(calendar, "table", f"{calendar.name}{owner}")


@calendars_group.command("show")
@click.argument("name")
@click.option("--user-id", help="Whose calendar.")
@format_option
def show(name: str, user_id: str | None, output_format: str) -> None:
    """One calendar."""

    async def work(service: Service) -> Any:
        return await service.calendars.get(OPERATOR, name, user_id)

    _show(run_with_service(work), output_format, name)


@calendars_group.command("delete")
@click.argument("name")
@click.option("--user-id", help="Whose calendar.")
def delete(name: str, user_id: str | None) -> None:
    """Delete a calendar no schedule names."""

    async def work(service: Service) -> None:
        await service.calendars.delete(OPERATOR, name, user_id)

    run_with_service(work)
    output.line(f"Deleted calendar {name}.")


@calendars_group.command("days")
@click.argument("name")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First day (today).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="Day after the last.")
@click.option("--closed", is_flag=True, help="Only the closed days.")
@click.option("--user-id", help="Whose calendar.")
@format_option
def days(
    name: str,
    start: Any,
    end: Any,
    closed: bool,
    user_id: str | None,
    output_format: str,
) -> None:
    """Business days and closed days (with the reason) from --from to --to (a month)."""
    first = start.date() if start else date.today()
    last = end.date() if end else date.fromordinal(first.toordinal() + 31)

    async def work(service: Service) -> list[dict[str, Any]]:
        return await service.calendars.days(
            OPERATOR, name, first.isoformat(), last.isoformat(), user_id
        )

    found = run_with_service(work)
    if closed:
        found = [day for day in found if not day["business_day"]]
    if output_format == "json":
        output.print_json({"days": found})
        return
    for day in found:
        weekday = date.fromisoformat(day["date"]).strftime("%a")
        state = "open" if day["business_day"] else f"closed: {day['reason']}"
        output.line(f"{day['date']} {weekday}  {state}")
