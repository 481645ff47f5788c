"""`apflow calendars` on both databases: a Bavarian calendar made, shown, listed, its closed
days read, changed, refused with one line naming what is wrong, and deleted."""

from __future__ import annotations

from cli_support import Cli


def test_a_calendar_from_the_cli(cli: Cli) -> None:
    made = cli.json("calendars", "create", "munich", "--country", "DE", "--subdivision", "BY",
                    "--date", "2031-06-13=Team day", "-f", "json")  # fmt: skip
    assert (made["name"], made["holidays"], made["weekend"]) == (
        "munich",
        {"country": "DE", "subdivision": "BY"},
        [6, 7],
    )
    closed = cli.ok("calendars", "days", "munich", "--from", "2031-06-09", "--to", "2031-06-16",
                    "--closed")  # fmt: skip
    lines = closed.strip().splitlines()
    assert lines[0].startswith("2031-06-12 Thu  closed: ")  # Corpus Christi
    assert lines[1:] == [
        "2031-06-13 Fri  closed: Team day",
        "2031-06-14 Sat  closed: weekend",
        "2031-06-15 Sun  closed: weekend",
    ]
    assert "munich" in cli.ok("calendars", "list")
    changed = cli.json("calendars", "update", "munich", "--weekend", "7", "-f", "json")
    assert changed["weekend"] == [7] and changed["version"] == 2
    cli.ok("calendars", "delete", "munich")
    assert "No calendars yet" in cli.ok("calendars", "list")


def test_bad_calendars_are_one_line_and_nothing_is_written(cli: Cli) -> None:
    assert "No calendars yet" in cli.ok("calendars", "list")
    cli.fails(1, "calendars", "create", "x", "--country", "XX", names=("holidays.country",))
    cli.fails(1, "calendars", "create", "x", "--weekend", "1,2,3,4,5,6,7", names=("weekend",))
    cli.fails(2, "calendars", "create", "x", "--weekend", "sat")
    assert "No calendars yet" in cli.ok("calendars", "list")


def test_a_schedule_follows_a_calendar_and_cron_refuses_it(cli: Cli) -> None:
    cli.ok("calendars", "create", "munich", "--country", "DE", "--subdivision", "BY")
    task = cli.create("--name", "report", "--executor", "echo_executor")
    cli.ok("tasks", "update", task["id"], "--schedule-type", "daily", "--schedule-expression",
           "09:00", "--schedule-timezone", "Europe/Berlin", "--schedule-calendar", "munich",
           "--schedule-calendar-rule", "next_business_day", "--schedule-enabled")  # fmt: skip
    preview = cli.json("tasks", "scheduled", "preview", task["id"], "--after",
                       "2031-05-29T12:00:00Z", "--count", "3", "-f", "json")  # fmt: skip
    # Friday 30 May, then the weekend and Whit Monday moved to Tuesday 3 June (one fire).
    assert preview["fire_times"] == [
        "2031-05-30T07:00:00+00:00",
        "2031-06-03T07:00:00+00:00",
        "2031-06-04T07:00:00+00:00",
    ]
    message = cli.fails(1, "scheduler", "cron-line", task["id"])
    assert "business calendar 'munich'" in message
    cli.fails(1, "calendars", "delete", "munich", names=("name",))
