"""Table-driven cases for the schedule engine.

Every expected instant below was worked out by hand from the tz rules of the zone, never copied
from engine output. Offsets used:

* Europe/Berlin: CET +01:00, CEST +02:00; 2024-03-31 01:00Z (02:00 -> 03:00),
  2024-10-27 01:00Z (03:00 -> 02:00).
* America/New_York: EST -05:00, EDT -04:00; 2024-03-10 07:00Z (02:00 -> 03:00),
  2024-11-03 06:00Z (02:00 -> 01:00).
* Australia/Lord_Howe: +10:30 / +11:00; 2024-04-06 15:00Z (02:00 +11 -> 01:30 +10:30),
  2024-10-05 15:30Z (02:00 +10:30 -> 02:30 +11).
* Antarctica/Troll: +00:00 / +02:00; 2024-03-31 01:00Z (01:00 -> 03:00),
  2024-10-27 01:00Z (03:00 -> 01:00).
* Asia/Kolkata: +05:30 all year.

A case is (type, expression, zone, after, expected UTC instants, options). Options: start_at,
end_at, anchor_at (ISO strings), count (how many to ask preview for; default len(expected)),
remaining_runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apflow_server.schedules import Schedule

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"
KOLKATA = "Asia/Kolkata"


def utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.utcoffset() == timedelta(0), text
    return value.astimezone(UTC)


def case(
    schedule_type: str,
    expression: str,
    zone: str,
    after: str,
    expected: list[str],
    *,
    id: str,
    marks: Any = (),
    **options: Any,
) -> Any:
    return pytest.param(
        schedule_type, expression, zone, after, expected, options, id=id, marks=marks
    )


DAILY = [
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T09:00:00Z", "2024-01-02T09:00:00Z", "2024-01-03T09:00:00Z"],
        id="daily-single-utc",
    ),
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T09:00:00Z",
        ["2024-01-02T09:00:00Z", "2024-01-03T09:00:00Z"],
        id="daily-strictly-after",
    ),
    case(
        "daily",
        "09:00,17:30",
        BERLIN,
        "2024-01-15T08:00:00Z",
        ["2024-01-15T16:30:00Z", "2024-01-16T08:00:00Z", "2024-01-16T16:30:00Z"],
        id="daily-several-times-berlin-winter",
    ),
    case(
        "daily",
        "17:30, 09:00",
        "UTC",
        "2024-01-01T12:00:00Z",
        ["2024-01-01T17:30:00Z", "2024-01-02T09:00:00Z"],
        id="daily-several-times-unsorted",
    ),
    case(
        "daily",
        "09:00",
        KOLKATA,
        "2024-06-01T00:00:00Z",
        ["2024-06-01T03:30:00Z", "2024-06-02T03:30:00Z"],
        id="daily-kolkata-half-hour-offset",
    ),
    case(
        "daily",
        "09:00",
        BERLIN,
        "2024-03-29T12:00:00Z",
        ["2024-03-30T08:00:00Z", "2024-03-31T07:00:00Z", "2024-04-01T07:00:00Z"],
        id="daily-berlin-keeps-wall-time-across-spring-forward",
    ),
    case(
        "daily",
        "02:30",
        BERLIN,
        "2024-03-30T00:00:00Z",
        ["2024-03-30T01:30:00Z", "2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z"],
        id="daily-berlin-time-in-gap-fires-at-0330-new-time",
    ),
    case(
        "daily",
        "02:30,03:30",
        BERLIN,
        "2024-03-30T12:00:00Z",
        ["2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z", "2024-04-01T01:30:00Z"],
        id="daily-berlin-two-times-same-instant-on-gap-day-fire-once",
    ),
    case(
        "daily",
        "02:30",
        BERLIN,
        "2024-10-26T12:00:00Z",
        ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"],
        id="daily-berlin-repeated-hour-first-occurrence",
    ),
    case(
        "daily",
        "02:30",
        BERLIN,
        "2024-10-27T00:30:00Z",
        ["2024-10-28T01:30:00Z"],
        id="daily-berlin-repeated-hour-not-again-in-second-pass",
    ),
    case(
        "daily",
        "02:30",
        NEW_YORK,
        "2024-03-09T12:00:00Z",
        ["2024-03-10T07:30:00Z", "2024-03-11T06:30:00Z"],
        id="daily-new-york-time-in-gap",
    ),
    case(
        "daily",
        "02:30,03:30",
        NEW_YORK,
        "2024-03-09T12:00:00Z",
        ["2024-03-10T07:30:00Z", "2024-03-11T06:30:00Z", "2024-03-11T07:30:00Z"],
        id="daily-new-york-two-times-same-instant-on-gap-day-fire-once",
    ),
    case(
        "daily",
        "01:30",
        NEW_YORK,
        "2024-11-02T12:00:00Z",
        ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"],
        id="daily-new-york-repeated-hour-first-occurrence",
    ),
    case(
        "daily",
        "01:30",
        NEW_YORK,
        "2024-11-03T05:30:00Z",
        ["2024-11-04T06:30:00Z"],
        id="daily-new-york-repeated-hour-once-from-the-fire",
    ),
    case(
        "daily",
        "01:30",
        NEW_YORK,
        "2024-11-03T06:10:00Z",
        ["2024-11-04T06:30:00Z"],
        id="daily-new-york-repeated-hour-once-from-second-pass",
    ),
    case(
        "daily",
        "02:15",
        LORD_HOWE,
        "2024-10-05T00:00:00Z",
        ["2024-10-05T15:45:00Z", "2024-10-06T15:15:00Z"],
        id="daily-lord-howe-time-in-30-minute-gap",
    ),
    case(
        "daily",
        "02:00,02:30",
        LORD_HOWE,
        "2024-10-05T00:00:00Z",
        ["2024-10-05T15:30:00Z", "2024-10-06T15:00:00Z", "2024-10-06T15:30:00Z"],
        id="daily-lord-howe-gap-time-and-gap-end-fire-once",
    ),
    case(
        "daily",
        "01:45",
        LORD_HOWE,
        "2024-04-06T00:00:00Z",
        ["2024-04-06T14:45:00Z", "2024-04-07T15:15:00Z"],
        id="daily-lord-howe-repeated-half-hour-first-occurrence",
    ),
]

WEEKLY = [
    case(
        "weekly",
        "1,3,5 09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        [
            "2024-01-01T09:00:00Z",
            "2024-01-03T09:00:00Z",
            "2024-01-05T09:00:00Z",
            "2024-01-08T09:00:00Z",
        ],
        id="weekly-list",
    ),
    case(
        "weekly",
        "1-5 09:00",
        BERLIN,
        "2024-01-05T12:00:00Z",
        [
            "2024-01-08T08:00:00Z",
            "2024-01-09T08:00:00Z",
            "2024-01-10T08:00:00Z",
            "2024-01-11T08:00:00Z",
            "2024-01-12T08:00:00Z",
            "2024-01-15T08:00:00Z",
        ],
        id="weekly-range-skips-weekend",
    ),
    case(
        "weekly",
        "7 10:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-07T10:00:00Z", "2024-01-14T10:00:00Z"],
        id="weekly-7-is-sunday",
    ),
    case(
        "weekly",
        "1-2,7 12:00",
        NEW_YORK,
        "2024-01-06T00:00:00Z",
        [
            "2024-01-07T17:00:00Z",
            "2024-01-08T17:00:00Z",
            "2024-01-09T17:00:00Z",
            "2024-01-14T17:00:00Z",
        ],
        id="weekly-range-and-list",
    ),
    case(
        "weekly",
        "7 02:30",
        NEW_YORK,
        "2024-03-09T00:00:00Z",
        ["2024-03-10T07:30:00Z", "2024-03-17T06:30:00Z"],
        id="weekly-sunday-time-in-gap",
    ),
]

MONTHLY = [
    case(
        "monthly",
        "1,15 09:00",
        "UTC",
        "2024-01-01T09:00:00Z",
        ["2024-01-15T09:00:00Z", "2024-02-01T09:00:00Z", "2024-02-15T09:00:00Z"],
        id="monthly-1-and-15",
    ),
    case(
        "monthly",
        "31 09:00",
        "UTC",
        "2024-01-31T09:00:00Z",
        [
            "2024-03-31T09:00:00Z",
            "2024-05-31T09:00:00Z",
            "2024-07-31T09:00:00Z",
            "2024-08-31T09:00:00Z",
            "2024-10-31T09:00:00Z",
        ],
        id="monthly-31-skips-short-months",
    ),
    case(
        "monthly",
        "L 18:00",
        BERLIN,
        "2024-01-01T00:00:00Z",
        [
            "2024-01-31T17:00:00Z",
            "2024-02-29T17:00:00Z",
            "2024-03-31T16:00:00Z",
            "2024-04-30T16:00:00Z",
        ],
        id="monthly-last-day",
    ),
    case(
        "monthly",
        "L 09:00",
        "UTC",
        "2025-01-31T09:00:00Z",
        ["2025-02-28T09:00:00Z", "2025-03-31T09:00:00Z"],
        id="monthly-last-day-non-leap-february",
    ),
    case(
        "monthly",
        "31,L 12:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        [
            "2024-01-31T12:00:00Z",
            "2024-02-29T12:00:00Z",
            "2024-03-31T12:00:00Z",
            "2024-04-30T12:00:00Z",
            "2024-05-31T12:00:00Z",
        ],
        id="monthly-31-and-L-fire-once-on-31-day-month",
    ),
    case(
        "monthly",
        "29 09:00",
        "UTC",
        "2024-02-01T00:00:00Z",
        ["2024-02-29T09:00:00Z", "2024-03-29T09:00:00Z"],
        id="monthly-29-leap-year",
    ),
    case(
        "monthly",
        "29 09:00",
        "UTC",
        "2025-02-01T00:00:00Z",
        ["2025-03-29T09:00:00Z", "2025-04-29T09:00:00Z"],
        id="monthly-29-skips-february-2025",
    ),
    case(
        "monthly",
        "1 00:00",
        KOLKATA,
        "2024-01-01T00:00:00Z",
        ["2024-01-31T18:30:00Z", "2024-02-29T18:30:00Z"],
        id="monthly-kolkata-midnight-is-previous-utc-day",
    ),
]

CRON = [
    case(
        "cron",
        "30 9 * * *",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T09:30:00Z", "2024-01-02T09:30:00Z"],
        id="cron-five-fields",
    ),
    case(
        "cron",
        "0 9 * * * 30",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T09:00:30Z", "2024-01-02T09:00:30Z"],
        id="cron-sixth-field-is-seconds",
    ),
    case(
        "cron",
        "0 9 * * * 0,30",
        "UTC",
        "2024-01-01T09:00:00Z",
        ["2024-01-01T09:00:30Z", "2024-01-02T09:00:00Z", "2024-01-02T09:00:30Z"],
        id="cron-seconds-list",
    ),
    case(
        "cron",
        "@hourly",
        "UTC",
        "2024-01-01T00:30:00Z",
        ["2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z", "2024-01-01T03:00:00Z"],
        id="cron-at-hourly",
    ),
    case(
        "cron",
        "@daily",
        BERLIN,
        "2024-01-01T00:00:00Z",
        ["2024-01-01T23:00:00Z", "2024-01-02T23:00:00Z"],
        id="cron-at-daily-local-midnight",
    ),
    case(
        "cron",
        "@weekly",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-07T00:00:00Z", "2024-01-14T00:00:00Z"],
        id="cron-at-weekly-sunday-midnight",
    ),
    case(
        "cron",
        "@monthly",
        "UTC",
        "2024-01-15T00:00:00Z",
        ["2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"],
        id="cron-at-monthly",
    ),
    case(
        "cron",
        "@yearly",
        "UTC",
        "2024-06-01T00:00:00Z",
        ["2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"],
        id="cron-at-yearly",
    ),
    case(
        "cron",
        "0 9 * * mon-fri",
        "UTC",
        "2024-01-05T12:00:00Z",
        ["2024-01-08T09:00:00Z", "2024-01-09T09:00:00Z"],
        id="cron-day-names",
    ),
    case(
        "cron",
        "0 9 1 jan *",
        "UTC",
        "2024-06-01T00:00:00Z",
        ["2025-01-01T09:00:00Z", "2026-01-01T09:00:00Z"],
        id="cron-month-names",
    ),
    case(
        "cron",
        "0 9 L * *",
        "UTC",
        "2024-01-31T09:00:00Z",
        ["2024-02-29T09:00:00Z", "2024-03-31T09:00:00Z", "2024-04-30T09:00:00Z"],
        id="cron-L-last-day-of-month",
    ),
    case(
        "cron",
        "0 9 * * 5#2",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-12T09:00:00Z", "2024-02-09T09:00:00Z", "2024-03-08T09:00:00Z"],
        id="cron-hash-second-friday",
    ),
    case(
        "cron",
        "0 9 13 * 5",
        "UTC",
        "2024-10-01T00:00:00Z",
        [
            "2024-10-04T09:00:00Z",
            "2024-10-11T09:00:00Z",
            "2024-10-13T09:00:00Z",
            "2024-10-18T09:00:00Z",
            "2024-10-25T09:00:00Z",
            "2024-11-01T09:00:00Z",
        ],
        id="cron-vixie-or-when-dom-and-dow-restricted",
    ),
    case(
        "cron",
        "0 9 13 * *",
        "UTC",
        "2024-10-01T00:00:00Z",
        ["2024-10-13T09:00:00Z", "2024-11-13T09:00:00Z"],
        id="cron-dom-only",
    ),
    case(
        "cron",
        "0 9 * * 7",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-07T09:00:00Z", "2024-01-14T09:00:00Z"],
        id="cron-dow-7-is-sunday",
    ),
    case(
        "cron",
        "0 0 29 2 *",
        "UTC",
        "2024-03-01T00:00:00Z",
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
        id="cron-leap-day",
    ),
    case(
        "cron",
        "0 9 * * *",
        KOLKATA,
        "2024-06-01T00:00:00Z",
        ["2024-06-01T03:30:00Z", "2024-06-02T03:30:00Z"],
        id="cron-kolkata",
    ),
    # fixed-hour crons follow the wall-clock rules
    case(
        "cron",
        "30 2 * * *",
        BERLIN,
        "2024-03-30T12:00:00Z",
        ["2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z"],
        id="cron-fixed-hour-in-gap-berlin",
    ),
    case(
        "cron",
        "30 1 * * *",
        NEW_YORK,
        "2024-11-02T12:00:00Z",
        ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"],
        id="cron-fixed-hour-fall-back-new-york-fires-once",
    ),
    case(
        "cron",
        "30 1 * * *",
        NEW_YORK,
        "2024-11-03T05:30:00Z",
        ["2024-11-04T06:30:00Z"],
        id="cron-fixed-hour-fall-back-new-york-not-again",
    ),
    case(
        "cron",
        "0 1-3 * * *",
        NEW_YORK,
        "2024-03-10T05:00:00Z",
        ["2024-03-10T06:00:00Z", "2024-03-10T07:00:00Z", "2024-03-11T05:00:00Z"],
        id="cron-hour-range-spring-forward-gap-and-next-hour-fire-once",
    ),
    case(
        "cron",
        "0 1-3 * * *",
        NEW_YORK,
        "2024-11-03T04:00:00Z",
        [
            "2024-11-03T05:00:00Z",
            "2024-11-03T07:00:00Z",
            "2024-11-03T08:00:00Z",
            "2024-11-04T06:00:00Z",
        ],
        id="cron-hour-range-fall-back-fires-once",
    ),
    case(
        "cron",
        "30 1 * * *",
        LORD_HOWE,
        "2024-04-06T00:00:00Z",
        ["2024-04-06T14:30:00Z", "2024-04-07T15:00:00Z"],
        id="cron-fixed-hour-lord-howe-repeated-half-hour",
    ),
    # every-hour crons run on elapsed time
    case(
        "cron",
        "0 * * * *",
        NEW_YORK,
        "2024-11-03T03:30:00Z",
        [
            "2024-11-03T04:00:00Z",
            "2024-11-03T05:00:00Z",
            "2024-11-03T06:00:00Z",
            "2024-11-03T07:00:00Z",
            "2024-11-03T08:00:00Z",
        ],
        id="cron-hourly-new-york-fall-back-both-0100s",
    ),
    case(
        "cron",
        "0 * * * *",
        NEW_YORK,
        "2024-03-10T05:30:00Z",
        ["2024-03-10T06:00:00Z", "2024-03-10T07:00:00Z", "2024-03-10T08:00:00Z"],
        id="cron-hourly-new-york-spring-forward",
    ),
    case(
        "cron",
        "0 * * * *",
        BERLIN,
        "2024-03-30T23:30:00Z",
        ["2024-03-31T00:00:00Z", "2024-03-31T01:00:00Z", "2024-03-31T02:00:00Z"],
        id="cron-hourly-berlin-spring-forward",
    ),
    case(
        "cron",
        "0 * * * *",
        BERLIN,
        "2024-10-26T23:30:00Z",
        ["2024-10-27T00:00:00Z", "2024-10-27T01:00:00Z", "2024-10-27T02:00:00Z"],
        id="cron-hourly-berlin-fall-back",
    ),
    case(
        "cron",
        "0 0-23 * * *",
        NEW_YORK,
        "2024-11-03T04:30:00Z",
        ["2024-11-03T05:00:00Z", "2024-11-03T06:00:00Z", "2024-11-03T07:00:00Z"],
        id="cron-hour-range-0-23-is-every-hour",
    ),
    case(
        "cron",
        "0 * * * * 30",
        NEW_YORK,
        "2024-11-03T05:00:30Z",
        ["2024-11-03T06:00:30Z", "2024-11-03T07:00:30Z"],
        id="cron-hourly-with-seconds-fall-back",
    ),
    case(
        "cron",
        "*/15 * * * *",
        NEW_YORK,
        "2024-03-10T06:30:00Z",
        ["2024-03-10T06:45:00Z", "2024-03-10T07:00:00Z", "2024-03-10T07:15:00Z"],
        id="cron-15m-new-york-spring-forward",
    ),
    case(
        "cron",
        "*/15 * * * *",
        BERLIN,
        "2024-03-31T00:30:00Z",
        ["2024-03-31T00:45:00Z", "2024-03-31T01:00:00Z", "2024-03-31T01:15:00Z"],
        id="cron-15m-berlin-spring-forward",
    ),
    case(
        "cron",
        "*/15 * * * *",
        NEW_YORK,
        "2024-11-03T05:30:00Z",
        [
            "2024-11-03T05:45:00Z",
            "2024-11-03T06:00:00Z",
            "2024-11-03T06:15:00Z",
            "2024-11-03T06:30:00Z",
            "2024-11-03T06:45:00Z",
            "2024-11-03T07:00:00Z",
        ],
        id="cron-15m-new-york-fall-back",
    ),
    case(
        "cron",
        "*/15 * * * *",
        BERLIN,
        "2024-10-27T00:30:00Z",
        [
            "2024-10-27T00:45:00Z",
            "2024-10-27T01:00:00Z",
            "2024-10-27T01:15:00Z",
            "2024-10-27T01:30:00Z",
            "2024-10-27T01:45:00Z",
            "2024-10-27T02:00:00Z",
        ],
        id="cron-15m-berlin-fall-back",
    ),
    case(
        "cron",
        "0 * * * *",
        NEW_YORK,
        "2024-11-03T05:30:00Z",
        ["2024-11-03T06:00:00Z", "2024-11-03T07:00:00Z"],
        id="cron-hourly-new-york-from-inside-first-pass",
    ),
    case(
        "cron",
        "0 * * * *",
        BERLIN,
        "2024-10-27T00:30:00Z",
        ["2024-10-27T01:00:00Z", "2024-10-27T02:00:00Z"],
        id="cron-hourly-berlin-from-inside-first-pass",
    ),
    case(
        "cron",
        "0 * * * *",
        "Antarctica/Troll",
        "2024-10-26T22:30:00Z",
        [
            "2024-10-26T23:00:00Z",
            "2024-10-27T00:00:00Z",
            "2024-10-27T01:00:00Z",
            "2024-10-27T02:00:00Z",
            "2024-10-27T03:00:00Z",
        ],
        id="cron-hourly-troll-two-hour-fall-back",
    ),
    case(
        "cron",
        "0 * * * *",
        "Antarctica/Troll",
        "2024-03-30T23:30:00Z",
        ["2024-03-31T00:00:00Z", "2024-03-31T01:00:00Z", "2024-03-31T02:00:00Z"],
        id="cron-hourly-troll-two-hour-spring-forward",
    ),
    # Lord Howe: the clock reads hh:00 at these instants (02:00 never shows at spring-forward;
    # at fall-back only 01:30-01:59 repeats, which holds no hh:00).
    case(
        "cron",
        "0 * * * *",
        LORD_HOWE,
        "2024-04-06T12:30:00Z",
        [
            "2024-04-06T13:00:00Z",
            "2024-04-06T14:00:00Z",
            "2024-04-06T15:30:00Z",
            "2024-04-06T16:30:00Z",
        ],
        id="cron-hourly-lord-howe-fall-back",
    ),
    case(
        "cron",
        "0 * * * *",
        LORD_HOWE,
        "2024-10-05T13:00:00Z",
        [
            "2024-10-05T13:30:00Z",
            "2024-10-05T14:30:00Z",
            "2024-10-05T16:00:00Z",
            "2024-10-05T17:00:00Z",
        ],
        id="cron-hourly-lord-howe-spring-forward",
    ),
    case(
        "cron",
        "*/30 * * * *",
        LORD_HOWE,
        "2024-04-06T13:45:00Z",
        [
            "2024-04-06T14:00:00Z",
            "2024-04-06T14:30:00Z",
            "2024-04-06T15:00:00Z",
            "2024-04-06T15:30:00Z",
            "2024-04-06T16:00:00Z",
        ],
        id="cron-30m-lord-howe-fall-back-both-0130s",
    ),
]

INTERVAL = [
    case(
        "interval",
        "3600",
        "UTC",
        "2023-12-31T00:00:00Z",
        ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"],
        id="interval-seconds-starts-exactly-at-start",
        start_at="2024-01-01T00:00:00Z",
    ),
    case(
        "interval",
        "90s",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T00:01:30Z", "2024-01-01T00:03:00Z", "2024-01-01T00:04:30Z"],
        id="interval-90s",
        start_at="2024-01-01T00:00:00Z",
    ),
    case(
        "interval",
        "15m",
        "UTC",
        "2024-01-01T10:00:05Z",
        ["2024-01-01T10:07:00Z", "2024-01-01T10:22:00Z", "2024-01-01T10:37:00Z"],
        id="interval-15m-drift-free-grid",
        start_at="2024-01-01T00:07:00Z",
    ),
    case(
        "interval",
        "2h",
        "UTC",
        "2024-01-01T04:30:00Z",
        ["2024-01-01T05:00:00Z", "2024-01-01T07:00:00Z", "2024-01-01T09:00:00Z"],
        id="interval-2h-from-anchor",
        anchor_at="2024-01-01T01:00:00Z",
    ),
    case(
        "interval",
        "2h",
        "UTC",
        "2023-12-31T00:00:00Z",
        ["2024-01-01T01:00:00Z", "2024-01-01T03:00:00Z"],
        id="interval-anchor-is-first-instant",
        anchor_at="2024-01-01T01:00:00Z",
    ),
    case(
        "interval",
        "1d",
        "UTC",
        "2024-01-03T06:00:00Z",
        ["2024-01-04T06:00:00Z"],
        id="interval-1d-strictly-after-grid-point",
        start_at="2024-01-01T06:00:00Z",
    ),
    case(
        "interval",
        "1d",
        BERLIN,
        "2024-03-30T08:00:00Z",
        ["2024-03-31T08:00:00Z", "2024-04-01T08:00:00Z"],
        id="interval-1d-across-spring-forward-stays-on-utc-grid",
        start_at="2024-03-30T08:00:00Z",
    ),
    case(
        "interval",
        "2h",
        NEW_YORK,
        "2024-11-03T03:00:00Z",
        ["2024-11-03T05:00:00Z", "2024-11-03T07:00:00Z", "2024-11-03T09:00:00Z"],
        id="interval-2h-across-fall-back-counts-elapsed-time",
        start_at="2024-11-03T03:00:00Z",
    ),
]

ONCE = [
    case(
        "once",
        "2024-06-01T12:00:00Z",
        BERLIN,
        "2024-01-01T00:00:00Z",
        ["2024-06-01T12:00:00Z"],
        id="once-with-z",
        count=3,
    ),
    case(
        "once",
        "2024-06-01T12:00:00+02:00",
        NEW_YORK,
        "2024-01-01T00:00:00Z",
        ["2024-06-01T10:00:00Z"],
        id="once-with-offset-ignores-zone",
        count=3,
    ),
    case(
        "once",
        "2024-06-01T12:00:00",
        BERLIN,
        "2024-01-01T00:00:00Z",
        ["2024-06-01T10:00:00Z"],
        id="once-without-offset-is-local",
    ),
    case(
        "once",
        "2024-06-01T12:00:00",
        KOLKATA,
        "2024-01-01T00:00:00Z",
        ["2024-06-01T06:30:00Z"],
        id="once-without-offset-kolkata",
    ),
    case(
        "once",
        "2024-03-31T02:30:00",
        BERLIN,
        "2024-01-01T00:00:00Z",
        ["2024-03-31T01:30:00Z"],
        id="once-local-time-in-gap",
    ),
    case(
        "once",
        "2024-11-03T01:30:00",
        NEW_YORK,
        "2024-01-01T00:00:00Z",
        ["2024-11-03T05:30:00Z"],
        id="once-local-time-repeated-first-occurrence",
    ),
    case(
        "once",
        "2024-10-06T02:15:00",
        LORD_HOWE,
        "2024-01-01T00:00:00Z",
        ["2024-10-05T15:45:00Z"],
        id="once-local-time-in-lord-howe-gap",
    ),
    case(
        "once",
        "2024-06-01T12:00:00Z",
        "UTC",
        "2024-06-01T12:00:00Z",
        [],
        id="once-nothing-after-its-instant",
        count=3,
    ),
]

BOUNDS = [
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-10T09:00:00Z", "2024-01-11T09:00:00Z"],
        id="bounds-start-at-nothing-before",
        start_at="2024-01-10T00:00:00Z",
    ),
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-10T09:00:00Z", "2024-01-11T09:00:00Z"],
        id="bounds-start-at-on-an-occurrence-fires-it",
        start_at="2024-01-10T09:00:00Z",
    ),
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T09:00:00Z", "2024-01-02T09:00:00Z", "2024-01-03T09:00:00Z"],
        id="bounds-end-at-on-an-occurrence-fires-it",
        end_at="2024-01-03T09:00:00Z",
        count=5,
    ),
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T09:00:00Z", "2024-01-02T09:00:00Z"],
        id="bounds-end-at-stops",
        end_at="2024-01-03T08:59:00Z",
        count=5,
    ),
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-04T00:00:00Z",
        [],
        id="bounds-nothing-after-end",
        end_at="2024-01-03T09:00:00Z",
        count=5,
    ),
    case(
        "cron",
        "0 9 * * *",
        BERLIN,
        "2024-01-01T00:00:00Z",
        ["2024-03-31T07:00:00Z", "2024-04-01T07:00:00Z", "2024-04-02T07:00:00Z"],
        id="bounds-start-and-end-window",
        start_at="2024-03-30T10:00:00Z",
        end_at="2024-04-02T07:00:00Z",
        count=5,
    ),
    case(
        "interval",
        "1h",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-05-01T12:00:00Z", "2024-05-01T13:00:00Z"],
        id="bounds-interval-future-start",
        start_at="2024-05-01T12:00:00Z",
    ),
    case(
        "interval",
        "3600",
        "UTC",
        "2023-12-31T00:00:00Z",
        ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"],
        id="bounds-interval-end-at",
        start_at="2024-01-01T00:00:00Z",
        end_at="2024-01-01T02:00:00Z",
        count=5,
    ),
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T09:00:00Z", "2024-01-02T09:00:00Z"],
        id="bounds-remaining-runs-limits-preview",
        count=5,
        remaining_runs=2,
    ),
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        [],
        id="bounds-no-remaining-runs",
        count=5,
        remaining_runs=0,
    ),
    case(
        "daily",
        "09:00",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T09:00:00Z", "2024-01-02T09:00:00Z"],
        id="bounds-count-below-remaining-runs",
        count=2,
        remaining_runs=10,
    ),
]

ALL_CASES = DAILY + WEEKLY + MONTHLY + CRON + INTERVAL + ONCE + BOUNDS


def _build(schedule_type: str, expression: str, zone: str, options: dict[str, Any]) -> Schedule:
    bounds = {
        key: utc(options[key]) for key in ("start_at", "end_at", "anchor_at") if key in options
    }
    return Schedule.parse(schedule_type, expression, zone, **bounds)


@pytest.mark.parametrize(
    ("schedule_type", "expression", "zone", "after", "expected", "options"), ALL_CASES
)
def test_preview(
    schedule_type: str,
    expression: str,
    zone: str,
    after: str,
    expected: list[str],
    options: dict[str, Any],
) -> None:
    schedule = _build(schedule_type, expression, zone, options)
    count = options.get("count", len(expected))
    got = schedule.preview(count, utc(after), remaining_runs=options.get("remaining_runs"))
    assert [g.isoformat() for g in got] == [utc(e).isoformat() for e in expected]
    assert all(g.utcoffset() == timedelta(0) for g in got)


@pytest.mark.parametrize(
    ("schedule_type", "expression", "zone", "after", "expected", "options"), ALL_CASES
)
def test_next_after_chain(
    schedule_type: str,
    expression: str,
    zone: str,
    after: str,
    expected: list[str],
    options: dict[str, Any],
) -> None:
    """Walking next_after one step at a time gives the same instants as the table."""
    schedule = _build(schedule_type, expression, zone, options)
    count = options.get("count", len(expected))
    limit = min(count, options.get("remaining_runs", count))
    got: list[datetime] = []
    current = utc(after)
    while len(got) < limit:
        nxt = schedule.next_after(current)
        if nxt is None:
            break
        got.append(nxt)
        current = nxt
    assert got == [utc(e) for e in expected]


# ---------------------------------------------------------------------- once / first_fire


@pytest.mark.parametrize(
    ("expression", "zone", "instant"),
    [
        pytest.param("2024-06-01T12:00:00Z", BERLIN, "2024-06-01T12:00:00Z", id="z"),
        pytest.param("2024-06-01T12:00:00+02:00", NEW_YORK, "2024-06-01T10:00:00Z", id="offset"),
        pytest.param("2024-06-01T12:00:00-05:30", "UTC", "2024-06-01T17:30:00Z", id="neg-offset"),
        pytest.param("2024-01-15T12:00:00", BERLIN, "2024-01-15T11:00:00Z", id="local-winter"),
        pytest.param("2024-07-15T12:00:00", NEW_YORK, "2024-07-15T16:00:00Z", id="local-summer"),
        pytest.param("2024-03-10T02:30:00", NEW_YORK, "2024-03-10T07:30:00Z", id="local-gap"),
        pytest.param("2024-10-27T02:30:00", BERLIN, "2024-10-27T00:30:00Z", id="local-repeated"),
        pytest.param("2024-04-07T01:45:00", LORD_HOWE, "2024-04-06T14:45:00Z", id="lh-repeated"),
    ],
)
def test_once_instant(expression: str, zone: str, instant: str) -> None:
    assert Schedule.parse("once", expression, zone).once_instant() == utc(instant)


def test_first_fire_once_in_the_past_is_still_due() -> None:
    schedule = Schedule.parse("once", "2024-06-01T12:00:00Z")
    assert schedule.first_fire(utc("2024-07-01T00:00:00Z")) == utc("2024-06-01T12:00:00Z")
    assert schedule.next_after(utc("2024-07-01T00:00:00Z")) is None


def test_first_fire_once_after_end_is_none() -> None:
    schedule = Schedule.parse("once", "2024-06-01T12:00:00Z", end_at=utc("2024-05-01T00:00:00Z"))
    assert schedule.first_fire(utc("2024-01-01T00:00:00Z")) is None


@pytest.mark.parametrize(
    ("schedule_type", "expression", "zone", "options", "now", "expected"),
    [
        pytest.param("daily", "09:00", BERLIN, {}, "2024-01-01T08:00:00Z", "2024-01-02T08:00:00Z"),
        pytest.param(
            "cron", "*/5 * * * *", "UTC", {}, "2024-01-01T08:01:00Z", "2024-01-01T08:05:00Z"
        ),
        pytest.param(
            "interval",
            "10m",
            "UTC",
            {"anchor_at": "2024-01-01T08:03:00Z"},
            "2024-01-01T08:00:00Z",
            "2024-01-01T08:03:00Z",
        ),
        pytest.param(
            "interval",
            "10m",
            "UTC",
            {"start_at": "2024-01-01T08:03:00Z"},
            "2024-01-01T09:00:00Z",
            "2024-01-01T09:03:00Z",
        ),
    ],
)
def test_first_fire_recurring_is_next_after_now(
    schedule_type: str,
    expression: str,
    zone: str,
    options: dict[str, Any],
    now: str,
    expected: str,
) -> None:
    schedule = _build(schedule_type, expression, zone, options)
    assert schedule.first_fire(utc(now)) == utc(expected)


def test_next_after_accepts_any_offset_for_after() -> None:
    schedule = Schedule.parse("daily", "09:00", "UTC")
    after = datetime.fromisoformat("2024-01-01T10:00:00+02:00")  # 08:00Z
    assert schedule.next_after(after) == utc("2024-01-01T09:00:00Z")
