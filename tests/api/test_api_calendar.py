"""The live calendar feed (GET /scheduler/ical) and tasks.scheduled.export-ical: feed keys
scoped to one user, revocation, JWTs, and cheap refreshes (ETag, 304)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import icalendar
import pytest
from api_harness import Service, ServiceFactory
from api_support import JWT_SECRET, admin_token, token

from apflow_server.storage import feed_keys
from apflow_server.storage.database import Database


def issue_key(service: Service, user_id: str) -> tuple[str, str]:
    async def work() -> tuple[str, str]:
        database = Database(service.settings.database_url)
        try:
            issued = await feed_keys.issue(database, user_id, datetime.now(UTC))
            return issued.key, issued.record.id
        finally:
            await database.dispose()

    return asyncio.run(work())


def revoke(service: Service, key_id: str) -> None:
    async def work() -> None:
        database = Database(service.settings.database_url)
        try:
            await feed_keys.revoke(database, key_id, datetime.now(UTC))
        finally:
            await database.dispose()

    asyncio.run(work())


def scheduled(service: Service, name: str, user_id: str, auth: str) -> dict[str, Any]:
    return service.api.call(
        "tasks.create",
        {
            "name": name,
            "user_id": user_id,
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "schedule_timezone": "Europe/Berlin",
            "schedule_enabled": True,
        },
        auth=auth,
    )


def summaries(body: bytes) -> set[str]:
    calendar = icalendar.Calendar.from_ical(body)
    return {str(event["SUMMARY"]) for event in calendar.walk("VEVENT")}


def feed(service: Service, **params: str) -> Any:
    return service.http.get("/scheduler/ical", params=params)


def test_a_feed_key_opens_only_its_users_calendar(make_service: ServiceFactory) -> None:
    service = make_service(jwt_secret=JWT_SECRET, run_scheduler=False)
    admin = admin_token()
    scheduled(service, "Alice report", "alice", admin)
    scheduled(service, "Bob report", "bob", admin)
    alice_key, _ = issue_key(service, "alice")

    response = feed(service, api_key=alice_key)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/calendar")
    assert summaries(response.content) == {"Alice report"}
    assert feed(service, user_id="alice", api_key=alice_key).status_code == 200
    assert feed(service, user_id="bob", api_key=alice_key).status_code == 403


def test_wrong_and_revoked_keys_and_no_key_are_refused(make_service: ServiceFactory) -> None:
    service = make_service(jwt_secret=JWT_SECRET, run_scheduler=False)
    key, key_id = issue_key(service, "alice")
    assert feed(service, api_key=key).status_code == 200
    assert feed(service, api_key="afk_" + "x" * 43).status_code == 401
    assert feed(service, api_key=key[:-1] + ("A" if key[-1] != "A" else "B")).status_code == 401
    assert feed(service).status_code == 401
    revoke(service, key_id)
    assert feed(service, api_key=key).status_code == 401


def test_with_authentication_off_a_bogus_key_is_called_unknown(
    make_service: ServiceFactory,
) -> None:
    """It said "bearer tokens are not accepted: no JWT secret is configured", which sent
    people looking for a JWT setting; the key is simply not one of ours."""
    service = make_service(run_scheduler=False)
    response = feed(service, user_id="alice", api_key="bogus")
    assert response.status_code == 401
    assert "unknown api_key" in response.text and "JWT" not in response.text
    assert feed(service, user_id="alice").status_code == 200  # no key needed when off


def test_a_jwt_opens_its_own_calendar(make_service: ServiceFactory) -> None:
    service = make_service(jwt_secret=JWT_SECRET, run_scheduler=False)
    admin = admin_token()
    scheduled(service, "Alice report", "alice", admin)
    scheduled(service, "Bob report", "bob", admin)
    alice = token("alice")
    assert summaries(feed(service, api_key=alice).content) == {"Alice report"}
    by_header = service.http.get("/scheduler/ical", headers={"Authorization": f"Bearer {alice}"})
    assert summaries(by_header.content) == {"Alice report"}
    assert feed(service, user_id="bob", api_key=alice).status_code == 403
    assert summaries(feed(service, api_key=admin).content) == {"Alice report", "Bob report"}
    assert feed(service, api_key=token("alice", secret="wrong" * 8)).status_code == 401


def test_an_unchanged_feed_answers_304(make_service: ServiceFactory) -> None:
    service = make_service(jwt_secret=JWT_SECRET, run_scheduler=False)
    task = scheduled(service, "Alice report", "alice", admin_token())
    key, _ = issue_key(service, "alice")
    first = feed(service, api_key=key)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = feed(service, api_key=key)
    assert again.content == first.content and again.headers["etag"] == etag
    cached = service.http.get(
        "/scheduler/ical", params={"api_key": key}, headers={"If-None-Match": etag}
    )
    assert cached.status_code == 304 and cached.content == b""
    since = service.http.get(
        "/scheduler/ical", params={"api_key": key}, headers={"If-Modified-Since": modified}
    )
    assert since.status_code == 304
    service.api.call("tasks.update", {"task_id": task["id"], "name": "Renamed"}, auth=admin_token())
    changed = service.http.get(
        "/scheduler/ical", params={"api_key": key}, headers={"If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert summaries(changed.content) == {"Renamed"}


def test_export_ical_method(make_service: ServiceFactory) -> None:
    service = make_service(jwt_secret=JWT_SECRET, run_scheduler=False)
    admin = admin_token()
    scheduled(service, "Alice report", "alice", admin)
    scheduled(service, "Bob report", "bob", admin)
    mine = service.api.call(
        "tasks.scheduled.export-ical", {"calendar_name": "Mine"}, auth=token("alice")
    )
    assert mine["task_count"] == 1
    calendar = icalendar.Calendar.from_ical(mine["ical_content"])
    assert str(calendar["X-WR-CALNAME"]) == "Mine"
    assert summaries(mine["ical_content"].encode()) == {"Alice report"}
    everyone = service.api.call("tasks.scheduled.export-ical", {}, auth=admin)
    assert everyone["task_count"] == 2
    error = service.api.fail("tasks.scheduled.export-ical", {"user_id": "bob"}, auth=token("alice"))
    assert error["code"] == -32003
    error = service.api.fail("tasks.scheduled.export-ical", {"limit": 0}, auth=admin)
    assert error["code"] == -32602 and error["data"]["field"] == "limit"


@pytest.mark.parametrize("user_id", ["a\x00b", "x" * 256, " "])
def test_a_bad_user_id_is_400_not_500(make_service: ServiceFactory, user_id: str) -> None:
    service = make_service()
    response = service.http.get("/scheduler/ical", params={"user_id": user_id})
    assert response.status_code == 400, response.text
    assert "user_id" in response.json()["error"]
