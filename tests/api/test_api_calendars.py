"""calendars.* over JSON-RPC on both databases: each user's own, bad definitions refused with
-32602 naming the field, the closed days of a period."""

from __future__ import annotations

from api_harness import ServiceFactory
from api_support import JWT_SECRET, admin_token, token


def test_calendars_over_json_rpc(make_service: ServiceFactory) -> None:
    service = make_service(run_scheduler=False, jwt_secret=JWT_SECRET)
    alice, bob = service.as_user(token("alice")), service.as_user(token("bob"))
    made = alice.call(
        "calendars.create",
        {"name": "munich", "holidays": {"country": "DE", "subdivision": "BY"}},
    )
    assert (made["user_id"], made["version"]) == ("alice", 1)
    days = alice.call(
        "calendars.days", {"name": "munich", "start": "2031-06-12", "end": "2031-06-14"}
    )["days"]
    assert [(d["date"], d["business_day"]) for d in days] == [
        ("2031-06-12", False),  # Corpus Christi in Bavaria
        ("2031-06-13", True),
    ]
    assert bob.call("calendars.list")["items"] == []
    assert bob.fail("calendars.get", {"name": "munich"})["code"] == -32004
    assert bob.fail("calendars.get", {"name": "munich", "user_id": "alice"})["code"] == -32004
    everyone = service.as_user(admin_token()).call("calendars.list")["items"]
    assert [c["name"] for c in everyone] == ["munich"]
    changed = alice.call("calendars.update", {"name": "munich", "weekend": [7]})
    assert (changed["weekend"], changed["version"]) == ([7], 2)
    assert alice.call("calendars.delete", {"name": "munich"})["deleted"] is True


def test_bad_calendars_are_invalid_params_naming_the_field(make_service: ServiceFactory) -> None:
    service = make_service(run_scheduler=False, jwt_secret=JWT_SECRET)
    alice = service.as_user(token("alice"))
    for params, field in (
        ({"name": "x", "holidays": {"country": "XX"}}, "holidays.country"),
        ({"name": "x", "ics": "not ics at all"}, "ics"),
        ({"name": "x", "weekend": [1, 2, 3, 4, 5, 6, 7]}, "weekend"),
        ({"name": "x", "weekend": "sat"}, "weekend"),
        ({"name": ""}, "name"),
        ({"name": "x", "colour": "red"}, "colour"),
    ):
        error = alice.fail("calendars.create", params)
        assert (error["code"], error["data"]["field"]) == (-32602, field), params
    assert alice.call("calendars.list")["total"] == 0
    error = alice.fail(
        "calendars.days", {"name": "nope", "start": "2031-01-01", "end": "2031-02-01"}
    )
    assert error["code"] == -32004
