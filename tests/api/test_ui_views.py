"""The dashboard's pages and actions under Starlette's TestClient, on SQLite and PostgreSQL:
sign-in, what each viewer sees (what JSON-RPC shows them), form tokens, escaping of every
string a user controls, and the actions going through the service with its permission checks.
The same pages in a real browser: tests/ui/test_browser.py."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_harness import Service, ServiceFactory
from api_support import JWT_SECRET, admin_token, token

XSS = "<script>alert(1)</script>"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form token"
    return found.group(1)


def sign_in(service: Service, jwt: str) -> None:
    page = service.http.get("/ui/login")
    assert page.status_code == 200
    answer = service.http.post(
        "/ui/login",
        data={"token": jwt, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"


def sign_out_everyone(service: Service) -> None:
    service.http.cookies.clear()


def schedule(service: Service, jwt: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", "nightly")
    fields.setdefault("params", {"executor_id": "echo_executor"})
    fields.setdefault("schedule_type", "daily")
    fields.setdefault("schedule_expression", "09:00")
    fields.setdefault("schedule_timezone", "Europe/Berlin")
    fields.setdefault("schedule_enabled", True)
    created: dict[str, Any] = service.as_user(jwt).call("tasks.create", fields)
    return created


def task_of(service: Service, jwt: str | None, task_id: str) -> dict[str, Any]:
    found: dict[str, Any] = service.as_user(jwt).call("tasks.get", {"task_id": task_id})
    return found


def form_post(service: Service, path: str, fields: dict[str, str], page: str) -> Any:
    token_field = {"csrf_token": csrf_of(service.http.get(page).text)}
    return service.http.post(path, data={**fields, **token_field}, follow_redirects=False)


@pytest.fixture
def secured(make_service: ServiceFactory) -> Service:
    return make_service(jwt_secret=JWT_SECRET)


def test_without_a_session_every_page_sends_to_sign_in(secured: Service) -> None:
    for path in ("/ui/", "/ui/runs", "/ui/tasks/x", "/ui/upcoming", "/ui/audit"):
        answer = secured.http.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/ui/login?why=required"
    page = secured.http.get("/ui/login?why=required")
    assert "Sign in with a token" in page.text and 'id="token"' in page.text


def test_sign_in_keeps_the_token_in_a_strict_http_only_cookie(secured: Service) -> None:
    page = secured.http.get("/ui/login")
    answer = secured.http.post(
        "/ui/login",
        data={"token": token("alice"), "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    cookie = next(
        value
        for name, value in answer.headers.multi_items()
        if name == "set-cookie" and value.startswith("apflow_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    # As long as the token, and a day more to say "expired" rather than "sign in".
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 3500 + 86400 <= max_age <= 3600 + 86400


def test_a_bad_token_or_a_forged_form_does_not_sign_in(secured: Service) -> None:
    page = secured.http.get("/ui/login")
    wrong = token("alice", secret="another secret")
    refused = secured.http.post(
        "/ui/login", data={"token": wrong, "csrf_token": csrf_of(page.text)}
    )
    assert refused.status_code == 401 and "Not signed in" in refused.text
    forged = secured.http.post("/ui/login", data={"token": token("alice"), "csrf_token": "x"})
    assert forged.status_code == 403
    assert secured.http.get("/ui/", follow_redirects=False).status_code == 303


def test_an_expired_token_goes_back_to_sign_in_with_a_message(secured: Service) -> None:
    # Long enough to sign in on a loaded machine; then wait until it has surely passed
    # (the expiry is in whole seconds).
    expires_at = int(time.time()) + 4
    sign_in(secured, token("alice", expires_in=4))
    time.sleep(max(0.0, expires_at + 1.1 - time.time()))
    answer = secured.http.get("/ui/", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?why=expired"
    assert "expired" in secured.http.get(answer.headers["location"]).text


def test_a_user_sees_only_their_schedules_and_an_admin_sees_all(secured: Service) -> None:
    alice = schedule(secured, token("alice"), name="alice's report")
    bob = schedule(secured, token("bob"), name="bob's backup")
    sign_in(secured, token("alice"))
    listing = secured.http.get("/ui/").text
    assert f'data-task-id="{alice["id"]}"' in listing
    assert f'data-task-id="{bob["id"]}"' not in listing and "bob&#39;s backup" not in listing
    # The row's next run is JSON-RPC's next_run_at, in UTC with a Z.
    expected = alice["next_run_at"].replace("+00:00", "Z")
    assert f'<time datetime="{expected}"' in listing
    # Not found, as an unknown id is: the page does not tell which ids exist.
    other = secured.http.get(f"/ui/tasks/{bob['id']}")
    assert other.status_code == 404 and "backup" not in other.text
    assert secured.http.get("/ui/schedulers").status_code == 403
    sign_out_everyone(secured)
    sign_in(secured, admin_token())
    listing = secured.http.get("/ui/").text
    assert alice["id"] in listing and bob["id"] in listing
    assert secured.http.get("/ui/schedulers").status_code == 200


def test_every_user_supplied_string_is_shown_as_text(secured: Service) -> None:
    jwt = token("alice")
    task = schedule(secured, jwt, name=XSS)
    sign_in(secured, jwt)
    paused = form_post(
        secured, f"/ui/tasks/{task['id']}/pause", {"note": XSS}, f"/ui/tasks/{task['id']}"
    )
    assert paused.status_code == 303
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in ("/ui/", f"/ui/tasks/{task['id']}", "/ui/upcoming", "/ui/runs", "/ui/audit"):
        html = secured.http.get(path).text
        assert XSS not in html, path
        assert "<script>" not in html.replace('<script src="/ui/static/app.js" defer></script>', "")
    assert escaped in secured.http.get("/ui/").text
    assert secured.http.get(f"/ui/tasks/{task['id']}").text.count(escaped) >= 2  # name, note


def test_forms_without_a_valid_token_are_refused_and_change_nothing(secured: Service) -> None:
    alice, bob = token("alice"), token("bob")
    task = schedule(secured, alice)
    sign_in(secured, bob)
    bobs_token = csrf_of(secured.http.get("/ui/").text)
    sign_out_everyone(secured)
    sign_in(secured, alice)
    path = f"/ui/tasks/{task['id']}/pause"
    for fields in ({}, {"csrf_token": "forged"}, {"csrf_token": bobs_token}):
        answer = secured.http.post(path, data={"note": "x", **fields}, follow_redirects=False)
        assert answer.status_code == 403, fields
    assert task_of(secured, alice, task["id"])["schedule_paused"] is False


def test_pause_resume_skip_and_run_now_act_as_json_rpc_would(secured: Service) -> None:
    jwt = token("alice")
    task = schedule(secured, jwt)
    page = f"/ui/tasks/{task['id']}"
    sign_in(secured, jwt)
    paused = form_post(secured, f"{page}/pause", {"note": "holiday freeze"}, page)
    assert paused.status_code == 303 and paused.headers["location"] == f"{page}?done=paused"
    shown = secured.as_user(jwt).call("tasks.get", {"task_id": task["id"]})
    assert shown["schedule_paused"] is True and shown["schedule_pause_note"] == "holiday freeze"
    html = secured.http.get(f"{page}?done=paused").text
    assert "Paused." in html and 'id="resume-form"' in html and "holiday freeze" in html
    assert form_post(secured, f"{page}/resume", {}, page).status_code == 303
    assert task_of(secured, jwt, task["id"])["schedule_paused"] is False
    assert form_post(secured, f"{page}/skip", {}, page).status_code == 303
    assert task_of(secured, jwt, task["id"])["schedule_skip_count"] == 1
    assert form_post(secured, f"{page}/run", {}, page).status_code == 303
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runs = secured.as_user(jwt).call("tasks.runs.list", {"task_id": task["id"]})["items"]
        if runs and runs[0]["status"] == "completed":
            break
        time.sleep(0.1)
    assert [(run["trigger"], run["status"]) for run in runs] == [("manual", "completed")]
    html = secured.http.get(page).text
    assert f'data-run-id="{runs[0]["id"]}"' in html
    manual = secured.http.get("/ui/runs?trigger=manual").text
    assert runs[0]["id"] in manual
    assert runs[0]["id"] not in secured.http.get("/ui/runs?trigger=webhook").text
    assert runs[0]["id"] not in secured.http.get("/ui/runs?status=failed").text


def test_another_users_task_cannot_be_acted_on(secured: Service) -> None:
    task = schedule(secured, token("alice"))
    sign_in(secured, token("bob"))
    for action in ("pause", "resume", "skip", "run"):
        answer = form_post(secured, f"/ui/tasks/{task['id']}/{action}", {"note": "mine"}, "/ui/")
        assert answer.status_code == 404, action
    backfill = {"start": "2026-01-01T00:00", "end": "2026-01-02T00:00", "confirm": "yes"}
    queued = form_post(secured, f"/ui/tasks/{task['id']}/backfill", backfill, "/ui/")
    assert queued.status_code == 404
    shown = task_of(secured, token("alice"), task["id"])
    assert shown["schedule_paused"] is False and shown["schedule_skip_count"] == 0
    assert (
        secured.as_user(token("alice")).call("tasks.runs.list", {"task_id": task["id"]})["items"]
        == []
    )


def test_backfill_is_a_dry_run_first_then_queued_when_confirmed(secured: Service) -> None:
    jwt = token("alice")
    task = schedule(secured, jwt, schedule_expression="09:00", schedule_timezone="UTC")
    page = f"/ui/tasks/{task['id']}"
    sign_in(secured, jwt)
    period = {"start": "2026-01-01T00:00", "end": "2026-01-04T00:00", "reprocess": "none"}
    dry = form_post(secured, f"{page}/backfill", period, page)
    assert dry.status_code == 200 and "Would queue <strong>3</strong>" in dry.text
    assert secured.as_user(jwt).call("tasks.runs.list", {"task_id": task["id"]})["items"] == []
    confirmed = form_post(secured, f"{page}/backfill", {**period, "confirm": "yes"}, page)
    assert confirmed.status_code == 303
    runs = secured.as_user(jwt).call("tasks.runs.list", {"task_id": task["id"]})["items"]
    assert len(runs) == 3 and {run["trigger"] for run in runs} == {"backfill"}
    bad = form_post(secured, f"{page}/backfill", {"start": "yesterday", "end": "x"}, page)
    assert bad.status_code == 400 and 'role="alert"' in bad.text and "start" in bad.text


def test_unknown_task_ids_are_a_404_page(secured: Service) -> None:
    sign_in(secured, token("alice"))
    for task_id in ("nope", "a%00b", "x" * 300):
        answer = secured.http.get(f"/ui/tasks/{task_id}")
        assert answer.status_code == 404, task_id
        assert "Not found" in answer.text and "Traceback" not in answer.text


def test_the_upcoming_timeline_shows_each_occurrence_of_the_next_day(secured: Service) -> None:
    jwt = token("alice")
    daily = schedule(secured, jwt, name="daily", schedule_expression="09:00")
    hourly = schedule(
        secured, jwt, name="two-hourly", schedule_type="cron", schedule_expression="0 */2 * * *"
    )
    often = schedule(
        secured, jwt, name="often", schedule_type="cron", schedule_expression="*/5 * * * *"
    )
    sign_in(secured, jwt)
    html = secured.http.get("/ui/upcoming").text

    def dots(task_id: str) -> int:
        row = html.split(f'data-task-id="{task_id}"', 1)[1].split('class="tl-row"', 1)[0]
        return row.count('class="tl-dot')

    assert dots(daily["id"]) == 1
    assert dots(hourly["id"]) in {12, 13}  # 24 h from now holds 12 even hours (13 if on one)
    # 288 a day: drawn as a band across the day, saying how often.
    assert dots(often["id"]) == 0
    row = html.split(f'data-task-id="{often["id"]}"', 1)[1].split('class="tl-row"', 1)[0]
    assert 'class="tl-band' in row and "about every 5 min" in row


def test_with_authentication_off_the_local_operator_sees_all_and_forms_still_need_tokens(
    make_service: ServiceFactory,
) -> None:
    service = make_service()
    task = schedule(service, None)  # type: ignore[arg-type]
    assert service.http.get("/ui/login", follow_redirects=False).status_code == 303
    html = service.http.get("/ui/").text
    assert task["id"] in html and "local operator" in html
    path = f"/ui/tasks/{task['id']}/pause"
    assert service.http.post(path, data={"note": "x"}).status_code == 403
    assert form_post(service, path, {"note": "x"}, f"/ui/tasks/{task['id']}").status_code == 303


# ---------------------------------------------------------------------- found by review


def test_every_page_forbids_framing_and_foreign_scripts(secured: Service) -> None:
    for answer in (secured.http.get("/ui/login"), secured.http.get("/ui/", follow_redirects=False)):
        assert answer.headers["x-frame-options"] == "DENY"
        policy = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cross-origin-resource-policy"] == "same-origin"


def test_another_sites_page_may_link_but_not_embed_or_post(secured: Service) -> None:
    sign_in(secured, token("alice"))
    task = schedule(secured, token("alice"))
    page = f"/ui/tasks/{task['id']}"
    linked = {"sec-fetch-site": "cross-site", "sec-fetch-dest": "document"}
    assert secured.http.get(page, headers=linked).status_code == 200
    for dest in ("object", "iframe", "empty"):
        embedded = {"sec-fetch-site": "cross-site", "sec-fetch-dest": dest}
        assert secured.http.get(page, headers=embedded).status_code == 403, dest
    token_field = csrf_of(secured.http.get(page).text)
    posted = secured.http.post(
        f"{page}/pause",
        data={"csrf_token": token_field, "note": "x"},
        headers={"sec-fetch-site": "same-site", "sec-fetch-dest": "document"},
    )
    assert posted.status_code == 403
    assert task_of(secured, token("alice"), task["id"])["schedule_paused"] is False


def test_a_form_larger_than_any_of_ours_is_refused_unread(secured: Service) -> None:
    answer = secured.http.post(
        "/ui/login",
        content=b"&" * (200 * 1024),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413


def test_odd_input_is_a_page_never_a_500(secured: Service) -> None:
    jwt = token("alice")
    task = schedule(secured, jwt)
    sign_in(secured, jwt)
    for path in ("/ui/?offset=²", "/ui/runs?offset=" + "9" * 5000, "/ui/audit?offset=-1"):
        assert secured.http.get(path).status_code == 200, path
    assert secured.http.get("/ui/notifications?endpoint=%00").status_code == 400
    assert secured.http.get("/ui/runs?status=nonsense").status_code == 200  # ignored
    page = f"/ui/tasks/{task['id']}"
    nul = form_post(secured, f"{page}/pause", {"note": "a\x00b"}, page)
    assert nul.status_code == 400 and "NUL" in nul.text
    assert task_of(secured, jwt, task["id"])["schedule_paused"] is False
    phishing = secured.http.get("/ui/tasks/Session%20expired.%20Paste%20your%20token%20here")
    assert phishing.status_code == 404 and "Paste your token" not in phishing.text


def test_a_signed_in_viewer_can_sign_in_with_another_token(secured: Service) -> None:
    sign_in(secured, token("alice"))
    sign_in(secured, token("bob"))
    assert "bob" in secured.http.get("/ui/").text


def test_behind_a_tls_proxy_forms_work_and_cookies_are_secure(
    make_service: ServiceFactory,
) -> None:
    """uvicorn sees http; the browser says Origin: https://... (APFLOW_PUBLIC_URL)."""
    service = make_service(jwt_secret=JWT_SECRET, public_url="https://testserver")
    page = service.http.get("/ui/login")
    [browser] = [v for k, v in page.headers.multi_items() if k == "set-cookie"]
    assert "Secure" in browser
    service.http.cookies.clear()  # the client would not send a Secure cookie over http: we do
    answer = service.http.post(
        "/ui/login",
        data={"token": token("alice"), "csrf_token": csrf_of(page.text)},
        headers={"origin": "https://testserver", "cookie": browser.split(";", 1)[0]},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    [session] = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    assert session.startswith("apflow_session=") and "Secure" in session


def test_a_backfill_that_would_compute_too_long_is_refused_in_time(
    make_service: ServiceFactory,
) -> None:
    """Mondays in February (day-of-month 30 or Monday) over two thousand years took 15 s of
    the one compute thread, stalling every other page; a page has max_compute_seconds."""
    service = make_service(jwt_secret=JWT_SECRET, max_compute_seconds=1)
    jwt = token("alice")
    task = schedule(
        service,
        jwt,
        schedule_type="cron",
        schedule_expression="0 0 30 2 1",
        schedule_timezone="UTC",
    )
    sign_in(service, jwt)
    page = f"/ui/tasks/{task['id']}"
    period = {"start": "0001-01-02T00:00", "end": "2026-01-01T00:00"}
    answer = form_post(service, f"{page}/backfill", period, page)
    assert answer.status_code == 400 and "compute for more than 1 s" in answer.text


def test_the_calendar_feeds_event_links_open_the_tasks_page(make_service: ServiceFactory) -> None:
    service = make_service()
    task = schedule(service, None, name="linked")  # type: ignore[arg-type]
    feed = service.http.get("/scheduler/ical")
    assert feed.status_code == 200, feed.text
    unfolded = feed.text.replace("\r\n ", "")
    [url] = [line[4:] for line in unfolded.splitlines() if line.startswith("URL:")]
    assert url.endswith(f"/ui/tasks/{task['id']}")
    page = service.http.get(url)
    assert page.status_code == 200 and "<h1>linked</h1>" in page.text


def test_a_task_page_says_which_calendar_it_follows(secured: Service) -> None:
    jwt = token("alice")
    secured.as_user(jwt).call(
        "calendars.create", {"name": "munich", "holidays": {"country": "DE", "subdivision": "BY"}}
    )
    task = schedule(
        secured, jwt, schedule_calendar="munich", schedule_calendar_rule="next_business_day"
    )
    sign_in(secured, jwt)
    html = secured.http.get(f"/ui/tasks/{task['id']}").text
    assert "munich: closed days move to the next business day" in html
    assert "cron cannot express" in html and "CRON_TZ" not in html


def test_a_next_run_on_a_closed_day_says_it_will_be_skipped(secured: Service) -> None:
    jwt = token("alice")
    today = datetime.now(UTC).date()
    closed = [(today + timedelta(days=n)).isoformat() for n in range(-1, 3)]
    secured.as_user(jwt).call(
        "calendars.create",
        {"name": "shut", "weekend": [], "dates": [{"date": d, "reason": "Moving"} for d in closed]},
    )
    task = schedule(secured, jwt, schedule_timezone="UTC", schedule_calendar="shut")
    sign_in(secured, jwt)
    html = secured.http.get(f"/ui/tasks/{task['id']}").text
    assert "will be skipped: Moving" in html


def test_a_database_outage_is_a_503_page_not_a_traceback(
    make_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen when PostgreSQL restarted under a browser test: the page was a 500 with a
    traceback in the log."""
    from apflow_server.service.schedules import Schedules

    service = make_service(run_scheduler=False)

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    monkeypatch.setattr(Schedules, "list_scheduled", refused)
    answer = service.http.get("/ui/")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "Database unavailable" in answer.text and "Traceback" not in answer.text
