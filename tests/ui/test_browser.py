"""The dashboard (/ui/) in a real browser: Debian's Chromium driven by Playwright against a real
`apflow serve` (scheduler on, JWT on) on a free port and a PostgreSQL database of its own.
Users sign in through the login form; what they do in the pages is checked over JSON-RPC, and
what JSON-RPC changes is checked in the pages. Every test also fails on a script error, a
console error or an unexpected 4xx/5xx in any page it opened, and on a traceback in the
server's log.

Screenshots (desktop 1280x800 and phone 375x812, of /ui/ and of a task page) go to
docs/screenshots/ when APFLOW_SCREENSHOTS=1, else to the test's tmp_path.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from api_support import ServerProcess, create_pg_database, drop_pg_database, server_env
from browser_support import SCREENSHOTS, PageProblems, Rpc, chromium_path, gen_token
from playwright.sync_api import Browser, Page, expect, sync_playwright

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
RUNNING = re.compile(r"^\s*running\s*$")
PAGES = ("/ui/", "/ui/upcoming", "/ui/runs", "/ui/schedulers", "/ui/audit", "/ui/notifications")


@dataclass
class Live:
    alice: Rpc
    bob: Rpc
    admin: Rpc
    carol: Rpc  # the screenshots' user: nothing but the tasks made for them
    server: ServerProcess


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    chromium_path()  # skips (or fails under CI=true) without Chromium, before any work
    home = tmp_path_factory.mktemp("ui-home")
    url = create_pg_database()
    env = server_env(
        home,
        APFLOW_DATABASE_URL=url,
        APFLOW_JWT_SECRET=secrets.token_urlsafe(48),
        # Runs that take a while (sleep) and runs that fail (false), for the runs tables.
        APFLOW_ALLOW_COMMAND_EXECUTOR="1",
        APFLOW_COMMAND_ALLOWLIST="sleep,false",
    )
    server = ServerProcess(env)
    try:
        server.wait_ready()
        alice, bob = gen_token(env, "alice"), gen_token(env, "bob")
        admin, carol = gen_token(env, "root", "admin"), gen_token(env, "carol")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield Live(*(Rpc(http, token) for token in (alice, bob, admin, carol)), server=server)
    finally:
        code = server.stop()
        drop_pg_database(url)
    assert code in {0, -signal.SIGTERM}, (code, server.output[-4000:])


@pytest.fixture(scope="module")
def browser(live: Live) -> Iterator[Browser]:
    # Started after (and stopped before) the server and its database: Playwright's sync API
    # keeps an event loop running in this thread, where asyncio.run() (the database helpers)
    # then refuses to run.
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@pytest.fixture
def problems(live: Live) -> Iterator[PageProblems]:
    """The test's page problems, and the server log lines written during the test (printed,
    so a failing test shows them); both must be clean."""
    start = len(live.server.output)
    found = PageProblems()
    yield found
    written = live.server.output[start:]
    print(f"--- server log during the test ---\n{written}")
    assert "Traceback" not in written, written
    assert not found.errors, found.errors


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, live: Live, problems: PageProblems) -> Iterator[OpenPage]:
    """open_page(token=None, viewport=DESKTOP): a page in a browser context of its own,
    signed in through the login form when given a token."""
    contexts: list[Any] = []

    def opener(token: str | None = None, viewport: dict[str, int] = DESKTOP) -> Page:
        context = browser.new_context(base_url=live.server.url, viewport=viewport)
        context.set_default_timeout(10_000)  # a broken page fails in seconds, not minutes
        contexts.append(context)
        page = context.new_page()
        problems.watch(page)
        if token is not None:
            sign_in(page, token)
        return page

    yield opener
    for context in contexts:
        context.close()


def sign_in(page: Page, token: str) -> None:
    page.goto("/ui/login")
    page.locator("#token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/$"))


def unique(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:6]}"


def daily(
    rpc: Rpc,
    name: str,
    at: str = "09:00",
    zone: str = "Europe/Berlin",
    *,
    command: list[str] | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """A daily schedule, enabled, running echo_executor (or `command`: an admin's `rpc` makes
    it, for `user_id`)."""
    fields: dict[str, Any] = {
        "name": name,
        "schedule_type": "daily",
        "schedule_expression": at,
        "schedule_enabled": True,
        "schedule_timezone": zone,
        "params": {"executor_id": "echo_executor"},
    }
    if command is not None:
        fields["params"] = {"executor_id": "command_executor"}
        fields["inputs"] = {"command": command}
    if user_id is not None:
        fields["user_id"] = user_id
    task: dict[str, Any] = rpc.call("tasks.create", fields)
    assert task["next_run_at"], task
    return task


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def row(page: Page, task_id: str) -> Any:
    return page.locator(f'#schedules tr[data-task-id="{task_id}"]')


# ---------------------------------------------------------------------- the tests


def test_sign_in_and_a_new_schedule_is_listed_with_its_next_run(
    live: Live, open_page: OpenPage, problems: PageProblems
) -> None:
    # Signed out, /ui/ leads to the login page; a wrong token is refused there, in an alert.
    page = open_page()
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login(\?.*)?$"))
    for status in (400, 401, 403, 422):
        problems.allow("/ui/login", status)
    page.locator("#token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "apflow_session"]

    sign_in(page, live.alice.token)
    session = [c for c in page.context.cookies() if c["name"] == "apflow_session"]
    assert len(session) == 1, page.context.cookies()
    assert session[0]["httpOnly"] is True and session[0]["sameSite"] == "Strict", session

    name = unique("nightly report")
    task = daily(live.alice, name)
    fired = instant(task["next_run_at"])
    assert fired.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "09:00", task

    page.reload()
    listed = row(page, task["id"])
    expect(listed).to_have_count(1)
    link = listed.locator("td.name a")
    expect(link).to_have_text(name)
    assert link.get_attribute("href", timeout=1000) == f"/ui/tasks/{task['id']}"
    shown = listed.locator("td.next-run time").get_attribute("datetime", timeout=1000)
    assert shown is not None and shown.endswith("Z"), shown
    assert instant(shown) == fired, (shown, task["next_run_at"])
    expect(listed.locator("td.state")).to_have_text(re.compile(r"^\s*active\s*$"))
    # The countdown ticks by itself, each second when the run is less than an hour away.
    in_half_an_hour = (datetime.now(UTC) + timedelta(minutes=30)).strftime("%H:%M")
    soon = daily(live.alice, unique("soon"), in_half_an_hour, "UTC")
    page.reload()
    countdown = row(page, soon["id"]).locator(".countdown")
    before = countdown.inner_text()
    assert re.fullmatch(r"in \d+m \d\ds", before), before
    expect(countdown).not_to_have_text(before, timeout=2500)

    # The link leads to the task's page.
    link.click()
    expect(page).to_have_url(re.compile(rf"/ui/tasks/{task['id']}$"))
    expect(page.locator("h1")).to_have_text(name)


def test_pause_with_a_note_resume_and_skip_from_the_task_page(
    live: Live, open_page: OpenPage
) -> None:
    name = unique("weekly backup")
    task = daily(live.alice, name, "23:30", "UTC")
    page = open_page(live.alice.token)
    page.goto(f"/ui/tasks/{task['id']}")
    expect(page.locator("h1")).to_have_text(name)
    expect(page.locator("#state")).to_contain_text("active")

    note = "disk swap tonight <b>not bold</b>"
    page.locator("form#pause-form textarea#pause-note[name=note]").fill(note)
    page.locator("form#pause-form").get_by_role("button", name="Pause").click()
    expect(page.locator("#state")).to_contain_text("paused")
    paused = live.alice.task(task["id"])
    assert paused["schedule_paused"] is True, paused
    assert paused["schedule_pause_note"] == note, paused
    # The note is shown, as text, never as markup.
    expect(page.locator("#state")).to_contain_text(note)
    expect(page.locator("#state b")).to_have_count(0)
    page.goto("/ui/")
    expect(row(page, task["id"]).locator("td.state")).to_have_text(re.compile(r"^\s*paused\s*$"))

    page.goto(f"/ui/tasks/{task['id']}")
    page.locator("form#resume-form").get_by_role("button", name="Resume").click()
    expect(page.locator("#state")).to_contain_text("active")
    expect(page.locator("#state")).not_to_contain_text("paused")
    assert live.alice.task(task["id"])["schedule_paused"] is False

    before = live.alice.task(task["id"])
    page.locator("form#skip-form").get_by_role("button", name="Skip next").click()
    page.wait_for_load_state()
    after = live.alice.task(task["id"])
    assert after["schedule_skip_count"] == before["schedule_skip_count"] + 1, (before, after)


def test_run_now_shows_the_run_live_and_json_rpc_agrees(live: Live, open_page: OpenPage) -> None:
    name = unique("run me")
    # A run that takes 3 s, so the page shows it running, then finished without a reload.
    task = daily(live.admin, name, command=["sleep", "3"], user_id="alice")
    page = open_page(live.alice.token)
    page.goto(f"/ui/tasks/{task['id']}")
    runs = page.locator("#runs tr[data-run-id]")
    expect(runs).to_have_count(0)

    page.locator("form#run-now-form").get_by_role("button", name="Run now").click()
    expect(runs).to_have_count(1, timeout=15_000)
    status = runs.first.locator("td.status")
    expect(status).to_have_text(RUNNING)
    page.evaluate("window.__not_reloaded = true")
    [running] = live.alice.runs(task["id"])
    assert runs.first.get_attribute("data-run-id", timeout=1000) == running["id"]
    assert running["status"] == "running", running
    expect(status).to_have_text(re.compile(r"^\s*completed\s*$"), timeout=15_000)
    [run] = live.alice.runs(task["id"])
    assert (run["id"], run["status"]) == (running["id"], "completed"), run
    assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"

    # A run started elsewhere (JSON-RPC) shows up in the open page by itself too.
    started = live.alice.call("tasks.execute", {"task_id": task["id"], "wait": False})
    assert started["status"] == "triggered", started
    expect(runs).to_have_count(2, timeout=15_000)
    newest = live.alice.runs(task["id"])[0]
    assert newest["id"] != run["id"], newest
    expect(runs.first).to_have_attribute("data-run-id", newest["id"])
    assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"


def test_bob_sees_neither_alices_schedule_nor_her_task_page(
    live: Live, open_page: OpenPage, problems: PageProblems
) -> None:
    hers = daily(live.alice, unique("alice private"))
    his = daily(live.bob, unique("bob own"))
    page = open_page(live.bob.token)
    page.goto("/ui/")
    expect(row(page, his["id"])).to_have_count(1)
    expect(row(page, hers["id"])).to_have_count(0)
    assert hers["name"] not in page.content()

    for task_id in (hers["id"], "no-such-task-" + uuid.uuid4().hex[:8]):
        for status in (403, 404):  # asserted below, once
            problems.allow(f"/ui/tasks/{task_id}", status)
        response = page.goto(f"/ui/tasks/{task_id}")
        assert response is not None and response.status == 404, task_id
        assert hers["name"] not in page.content()


def test_every_page_needs_a_session_and_shows_only_what_the_viewer_may_see(
    live: Live, open_page: OpenPage, problems: PageProblems
) -> None:
    task = daily(live.alice, unique("listed everywhere"))
    hers = live.alice.call("tasks.execute", {"task_id": task["id"], "wait": True})
    other = daily(live.bob, unique("bob elsewhere"))
    his = live.bob.call("tasks.execute", {"task_id": other["id"], "wait": True})
    for path in (*PAGES, f"/ui/tasks/{task['id']}"):
        response = httpx.get(f"{live.server.url}{path}", follow_redirects=False)
        assert response.is_redirect, (path, response.status_code)
        assert httpx.URL(response.headers["location"]).path == "/ui/login", path

    page = open_page(live.alice.token)
    for path in PAGES:
        if path == "/ui/schedulers":
            continue
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        expect(page).to_have_url(re.compile(rf"{re.escape(path)}$"))
        expect(page.locator("h1")).to_be_visible()
        if path == "/ui/runs":
            expect(page.locator(f'#runs tr[data-run-id="{hers["run_id"]}"]')).to_have_count(1)
            expect(page.locator(f'#runs tr[data-run-id="{his["run_id"]}"]')).to_have_count(0)
        if path == "/ui/upcoming":  # a daily schedule always fires within 24 hours
            expect(page.locator(f'[data-task-id="{task["id"]}"]')).to_have_count(1)
            expect(page.locator(f'[data-task-id="{other["id"]}"]')).to_have_count(0)
    # The schedulers (hosts, users) are an admin's: not offered to alice, and refused.
    expect(page.locator('nav a[href="/ui/schedulers"]')).to_have_count(0)
    problems.allow("/ui/schedulers", 403)
    response = page.goto("/ui/schedulers")
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_be_visible()

    admin = open_page(live.admin.token)
    response = admin.goto("/ui/schedulers")
    assert response is not None and response.status == 200
    expect(admin.locator("[data-instance-id]")).not_to_have_count(0)  # apflow serve's own
    admin.goto("/ui/")
    expect(row(admin, task["id"])).to_have_count(1)
    expect(row(admin, other["id"])).to_have_count(1)


def test_screenshots_desktop_and_phone(live: Live, open_page: OpenPage, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("APFLOW_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    carol = live.carol
    report = daily(carol, "Nightly sales report for the EMEA region", "09:00")
    daily(carol, "Warehouse stock sync", "06:15", "America/New_York")
    daily(carol, "Invoice reminders", "17:45", "Asia/Tokyo")
    backup = daily(carol, "Database backup", "02:30", "UTC")
    carol.call("tasks.scheduled.pause", {"task_id": backup["id"], "note": "disk swap tonight"})
    flaky = daily(
        live.admin, "Partner feed import", "04:00", "UTC", command=["false"], user_id="carol"
    )
    for task_id in (report["id"], report["id"], flaky["id"]):
        carol.call("tasks.execute", {"task_id": task_id, "wait": True})

    overflowing = []
    for label, viewport in (("desktop", DESKTOP), ("mobile", PHONE)):
        page = open_page(carol.token, viewport)
        for shot, path in (("dashboard", "/ui/"), ("task", f"/ui/tasks/{report['id']}")):
            page.goto(path)
            expect(page.locator("h1")).to_be_visible()
            page.screenshot(path=str(folder / f"{shot}-{label}.png"), full_page=True)
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > viewport["width"]:
                overflowing.append(f"{path} is {width} px wide at {viewport['width']} px")
    for shot in ("dashboard", "task"):
        for label in ("desktop", "mobile"):
            assert (folder / f"{shot}-{label}.png").stat().st_size > 1000
    # Wide tables may scroll inside their own box, but the page itself never scrolls sideways.
    assert not overflowing, overflowing
