"""The dashboard's pages and actions: each reads or acts through the service layer, with the
viewer's principal, so it sees and may do exactly what JSON-RPC lets the same token see and do.

Every page is rendered on the server; `static/app.js` only makes countdowns tick, shows
instants in the viewer's own zone and refreshes the parts marked `data-live` in place. Every
POST is checked for its form token (session.py) before anything else happens; a successful
action redirects (303) back to the page it came from, so a reload never repeats it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import yaml
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from apflow_server.api.rpc import database_unavailable, read_body
from apflow_server.api.services import Services
from apflow_server.core.clock import iso_utc, utcnow
from apflow_server.core.compute import Budget
from apflow_server.core.errors import ApflowError, ForbiddenError, NotFoundError
from apflow_server.core.types import RunStatus, RunTrigger
from apflow_server.service.notifications import delivery_to_dict, endpoint_to_dict
from apflow_server.service.schedules import MAX_UPCOMING_TASKS
from apflow_server.storage.models import Task
from apflow_server.ui import session
from apflow_server.ui.session import SignInRequired, Viewer

logger = logging.getLogger(__name__)

PAGE = 50  # rows per page of every list
TASK_RUNS = 25  # runs on a task's page
MAX_OFFSET = 1_000_000
MAX_FIELD_CHARS = 2000  # of any one form field
MAX_FORM_BYTES = 64 * 1024  # of a whole form: the largest is a note and a few instants
# Sent with every page: no framing (clickjacking), no script or style but our own (inline
# styles only for the timeline's positions), forms only to this app, and nothing of ours
# readable by another origin's page.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NOTICES = {  # what a successful action says (fixed texts: nothing from the URL is echoed)
    "paused": "Paused. Occurrences that fall due are recorded skipped until you resume.",
    "resumed": "Resumed. The next occurrence runs.",
    "run": "Started a run now.",
    "skipped": "The next occurrence will be skipped.",
    "backfill": "Backfill queued: the schedulers run its occurrences oldest first.",
}
SIGN_IN_REASONS = {
    "required": "Sign in with a token to see your schedules.",
    "expired": "Your token has expired: sign in with a new one.",
    "invalid": "Your session is no longer valid: sign in again.",
    "signed-out": "Signed out.",
}

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every value is text unless a template says otherwise (none does)
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

Handler = Callable[[Request, "Page"], Awaitable[Response]]


class Page:
    """What every page handler gets: the services, the viewer and the form token."""

    def __init__(self, request: Request, services: Services, viewer: Viewer, csrf: str) -> None:
        self.request = request
        self.services = services
        self.service = services.service
        self.viewer = viewer
        self.csrf = csrf

    @property
    def caller(self) -> Any:
        return self.viewer.principal

    def budget(self) -> Budget:
        """The compute time a page may spend on schedule math, as a JSON-RPC request may."""
        return Budget(self.services.settings.max_compute_seconds)

    def render(self, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        html = templates.get_template(template).render(
            viewer=self.viewer,
            csrf=self.csrf,
            path=self.request.url.path,
            now=utcnow(),
            # A page answering a POST (an error) must not refresh itself from that URL.
            refreshes=self.request.method == "GET",
            **values,
        )
        return HTMLResponse(html, status_code=status_code)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Resolve the viewer (or send them to sign in), check a POST's size and form token, and
    turn the service's refusals into pages: 404 for what does not exist or is not theirs, 403
    for what they may not do, 400 for what they asked wrongly."""

    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        settings = services.settings
        refused = await _refuse_cross_site_or_oversized(request)
        if refused is not None:
            return refused
        browser = session.browser_secret(request) or session.new_browser_secret()
        try:
            viewer = session.viewer_of(request, settings)
        except SignInRequired as why:
            response: Response = RedirectResponse(_sign_in_url(why.reason), status_code=303)
            if request.cookies.get(session.SESSION_COOKIE):
                session.sign_out(response)
            return _hardened(response)
        session_cookie = request.cookies.get(session.SESSION_COOKIE)
        token = session.csrf_token(settings, browser, session_cookie)
        current = Page(request, services, viewer, token)
        if request.method == "POST":
            form = await request.form(max_files=0, max_fields=20)
            if not session.csrf_valid(request, settings, form.get(session.CSRF_FIELD)):
                response = current.render(
                    "error.html",
                    status_code=403,
                    title="Form expired",
                    message="This form could not be verified (its token is missing or "
                    "forged). Reload the page and try again.",
                )
                return _hardened(response)
        try:
            response = await handler(request, current)
        except NotFoundError:
            response = current.render(
                "error.html",
                status_code=404,
                title="Not found",
                message="Nothing here: it does not exist, or it is not yours to see.",
            )
        except ForbiddenError as error:
            response = current.render(
                "error.html", status_code=403, title="Not allowed", message=error.message
            )
        except ApflowError as error:  # a bad parameter, or a page that would compute too long
            response = current.render(
                "error.html", status_code=400, title="Cannot show this", message=error.message
            )
        except Exception as error:
            if not database_unavailable(error):
                raise
            # An outage (a restart, a failover), not a bug: say so, without a traceback.
            logger.warning("dashboard %s: database unavailable (%s)", request.url.path, error)
            response = current.render(
                "error.html",
                status_code=503,
                title="Database unavailable",
                message="The database cannot be reached right now; this page works again "
                "once it is back.",
            )
            response.headers["Retry-After"] = "5"
        session.ensure_browser_secret(request, response, browser)
        return _hardened(response)

    return endpoint


async def _refuse_cross_site_or_oversized(request: Request) -> Response | None:
    """Another site's page may link to the dashboard (a top-level navigation), but not embed
    it, fetch it or post to it: browsers say where a request comes from in Sec-Fetch-Site
    (older ones send nothing, and the Origin check and SameSite cookies still hold). A form
    larger than any of ours is refused before it is parsed."""
    site = request.headers.get("sec-fetch-site")
    if site not in {None, "same-origin", "none"} and (
        request.method != "GET" or request.headers.get("sec-fetch-dest") != "document"
    ):
        return _hardened(Response("not from this site", status_code=403))
    if request.method == "POST":
        body = await read_body(request, MAX_FORM_BYTES)
        if body is None:
            return _hardened(Response("form too large", status_code=413))
        request._body = body  # what request.form() parses (Starlette reads a cached body)
    return None


def _hardened(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _sign_in_url(reason: str) -> str:
    code = next((key for key, text in SIGN_IN_REASONS.items() if text == reason), "required")
    return f"/ui/login?why={code}"


# ---------------------------------------------------------------------- signing in


async def login(request: Request) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    if not settings.jwt_secret:
        return RedirectResponse("/ui/", status_code=303)
    refused = await _refuse_cross_site_or_oversized(request)
    if refused is not None:
        return refused
    browser = session.browser_secret(request) or session.new_browser_secret()
    error = None
    status = 200
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=5)
        # The sign-in form's token is bound to the browser only: whoever is signed in (or
        # was, with a token now refused) can sign in afresh.
        submitted = form.get(session.CSRF_FIELD)
        if not session.csrf_valid(request, settings, submitted, with_session=False):
            error, status = "This form could not be verified. Try again.", 403
        else:
            token = str(form.get("token") or "").strip()
            try:
                principal = session.check_token(token, settings)
            except ApflowError as not_accepted:
                error, status = f"Not signed in: {not_accepted.message}.", 401
            else:
                response = RedirectResponse("/ui/", status_code=303)
                secure = session.secure_cookies(request, settings)
                session.sign_in(response, token, _seconds_left(token), secure=secure)
                logger.info("dashboard sign-in by %s", principal.subject)
                return _hardened(response)
    why = request.query_params.get("why")
    notice = SIGN_IN_REASONS.get(why or "") if error is None else None
    html = templates.get_template("login.html").render(
        viewer=Viewer(None, auth_on=True),
        csrf=session.csrf_token(settings, browser, None),
        path="/ui/login",
        now=utcnow(),
        error=error,
        notice=notice,
        signed_out=True,
        title="Sign in",
    )
    page_response = HTMLResponse(html, status_code=status)
    session.ensure_browser_secret(request, page_response, browser)
    return _hardened(page_response)


def _seconds_left(token: str) -> int:
    """The cookie outlives the token (whose exp the sign-in just verified) by a day, so that a
    viewer whose token ran out is told so, rather than just asked to sign in."""
    import jwt

    expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
    left = int(expires - utcnow().timestamp()) if isinstance(expires, int | float) else 3600
    return max(1, min(left, 366 * 86400)) + 86400


@page
async def logout(request: Request, current: Page) -> Response:
    response = RedirectResponse(
        "/ui/login?why=signed-out" if current.viewer.auth_on else "/ui/", status_code=303
    )
    session.sign_out(response)
    return response


# ---------------------------------------------------------------------- pages


@page
async def schedules(request: Request, current: Page) -> Response:
    offset = _offset(request)
    listing = await current.service.schedules.list_scheduled(
        current.caller, enabled_only=False, limit=PAGE, offset=offset
    )
    return current.render(
        "schedules.html",
        title="Schedules",
        tasks=[_task_view(task) for task in listing.items],
        total=listing.total,
        offset=offset,
        page_size=PAGE,
    )


@page
async def task_page(request: Request, current: Page) -> Response:
    return await _task_response(request, current)


async def _task_response(
    request: Request,
    current: Page,
    *,
    error: str | None = None,
    status_code: int = 200,
    backfill_plan: dict[str, Any] | None = None,
    backfill_form: dict[str, str] | None = None,
) -> Response:
    task_id = request.path_params["task_id"]
    try:
        task, ahead = await current.service.schedules.fires_ahead(
            current.caller, task_id, count=10, budget=current.budget()
        )
    except ForbiddenError:  # as _visible_task: another user's task is not found
        raise NotFoundError(f"task {task_id!r} not found") from None
    except NotFoundError:
        raise
    except ApflowError:  # fire times beyond the page's compute budget: none shown
        task, ahead = await _visible_task(current, task_id), []
    fires = [{**_instant(fire, task.schedule_timezone), "hold": hold} for fire, hold in ahead]
    runs = await current.service.runs.list_runs(current.caller, task_id=task.id, limit=TASK_RUNS)
    notice = NOTICES.get(request.query_params.get("done") or "")
    return current.render(
        "task.html",
        status_code=status_code,
        title=task.name,
        task=_task_view(task),
        fires=fires,
        runs=[_run_view(run) for run in runs.items],
        runs_total=runs.total,
        external=_external_snippets(current, task),
        notice=notice,
        error=error,
        backfill_plan=backfill_plan,
        backfill_form=backfill_form or {},
    )


@page
async def upcoming(request: Request, current: Page) -> Response:
    now = utcnow()
    window = timedelta(hours=24)
    offset = _offset(request)
    found, total = await current.service.schedules.upcoming(
        current.caller, offset=offset, budget=current.budget()
    )

    def left(fire: datetime) -> float:
        return max(0.0, min(100.0, (fire - now) / window * 100))

    rows = [
        {
            "task": _task_view(row.task),
            "dots": [] if row.dense else [round(left(fire), 2) for fire in row.fires],
            "first": _instant(row.fires[0], row.task.schedule_timezone),
            "first_left": round(left(row.fires[0]), 2),
            "count": len(row.fires),
            "dense": row.dense,
            "every": _seconds(row.every.total_seconds()) if row.every is not None else None,
        }
        for row in found
    ]
    hours = [{"left": hour / 24 * 100, "label": f"+{hour}h"} for hour in range(0, 24, 3)]
    return current.render(
        "upcoming.html",
        title="Next 24 hours",
        rows=rows,
        hours=hours,
        total=total,
        offset=offset,
        page_size=MAX_UPCOMING_TASKS,
    )


@page
async def runs(request: Request, current: Page) -> Response:
    status = _choice(request, "status", [s.value for s in RunStatus])
    trigger = _choice(request, "trigger", [t.value for t in RunTrigger])
    offset = _offset(request)
    listing = await current.service.runs.list_runs(
        current.caller, status=status, trigger=trigger, limit=PAGE, offset=offset
    )
    names = await _task_names(current, {run.task_id for run in listing.items})
    return current.render(
        "runs.html",
        title="Runs",
        runs=[{**_run_view(run), "task_name": names.get(run.task_id)} for run in listing.items],
        total=listing.total,
        offset=offset,
        page_size=PAGE,
        status=status,
        trigger=trigger,
        statuses=[s.value for s in RunStatus],
        triggers=[t.value for t in RunTrigger],
    )


@page
async def schedulers(request: Request, current: Page) -> Response:
    instances = await current.service.runs.live_schedulers(current.caller)
    now = utcnow()
    return current.render(
        "schedulers.html",
        title="Schedulers",
        instances=[
            {
                "id": instance.id,
                "host": instance.host,
                "pid": instance.pid,
                "mode": instance.mode,
                "state": instance.state,
                "users": instance.user_filter or "all",
                "started": _instant(instance.started_at, "UTC"),
                "beat_ago": round((now - _aware(instance.heartbeat_at)).total_seconds(), 1),
                "stats": {
                    key: value
                    for key, value in sorted((instance.stats or {}).items())
                    if isinstance(value, int | float | str) and not isinstance(value, bool)
                },
            }
            for instance in instances
        ],
    )


@page
async def audit(request: Request, current: Page) -> Response:
    offset = _offset(request)
    listing = await current.service.audit.listing(current.caller, limit=PAGE, offset=offset)
    return current.render(
        "audit.html",
        title="Audit log",
        entries=[
            {
                "at": _instant(entry.at, "UTC"),
                "actor": entry.actor,
                "action": entry.action,
                "target_type": entry.target_type,
                "target_id": entry.target_id,
                "user_id": entry.user_id,
                "fields": ", ".join(entry.fields or []),
            }
            for entry in listing.items
        ],
        total=listing.total,
        offset=offset,
        page_size=PAGE,
    )


@page
async def notifications(request: Request, current: Page) -> Response:
    endpoint_id = request.query_params.get("endpoint") or None
    endpoints = await current.service.notifications.listing(current.caller)
    deliveries = await current.service.notifications.deliveries(
        current.caller, endpoint_id=endpoint_id, limit=PAGE
    )
    return current.render(
        "notifications.html",
        title="Notifications",
        endpoints=[endpoint_to_dict(endpoint) for endpoint in endpoints],
        deliveries=[_delivery_view(delivery) for delivery in deliveries.items],
        deliveries_total=deliveries.total,
        endpoint_id=endpoint_id,
    )


# ---------------------------------------------------------------------- actions


@page
async def pause(request: Request, current: Page) -> Response:
    form = await request.form()
    task_id = request.path_params["task_id"]
    return await _act(
        request,
        current,
        "paused",
        lambda: current.service.schedules.pause(current.caller, task_id, note=_field(form, "note")),
    )


@page
async def resume(request: Request, current: Page) -> Response:
    form = await request.form()
    task_id = request.path_params["task_id"]
    return await _act(
        request,
        current,
        "resumed",
        lambda: current.service.schedules.resume(
            current.caller, task_id, note=_field(form, "note")
        ),
    )


@page
async def run_now(request: Request, current: Page) -> Response:
    task_id = request.path_params["task_id"]
    return await _act(
        request,
        current,
        "run",
        lambda: current.service.runs.trigger(
            current.caller, task_id, wait=False, trigger=RunTrigger.MANUAL
        ),
    )


@page
async def skip(request: Request, current: Page) -> Response:
    task_id = request.path_params["task_id"]
    return await _act(
        request, current, "skipped", lambda: current.service.schedules.skip(current.caller, task_id)
    )


@page
async def backfill(request: Request, current: Page) -> Response:
    """Twice: first a dry run that shows what would be queued, then, confirmed, the queueing
    of exactly that period."""
    form = await request.form()
    task_id = request.path_params["task_id"]
    await _visible_task(current, task_id)
    values = {name: _field(form, name) or "" for name in ("start", "end", "reprocess")}
    confirmed = form.get("confirm") == "yes"
    try:
        plan = await current.service.schedules.backfill(
            current.caller,
            task_id,
            start=values["start"] or None,
            end=values["end"] or None,
            dry_run=not confirmed,
            reprocess=values["reprocess"] or "none",
            budget=current.budget(),
        )
    except (NotFoundError, ForbiddenError):
        raise
    except ApflowError as error:
        return await _task_response(
            request, current, error=error.message, status_code=400, backfill_form=values
        )
    if confirmed:
        return RedirectResponse(f"/ui/tasks/{task_id}?done=backfill", status_code=303)
    return await _task_response(request, current, backfill_plan=plan, backfill_form=values)


async def _visible_task(current: Page, task_id: str) -> Task:
    """The task, if the viewer may see it. Another user's task is "not found" here, as an
    unknown one is: the page tells nobody which ids exist."""
    try:
        return await current.service.tasks.get(current.caller, task_id)
    except ForbiddenError:
        raise NotFoundError(f"task {task_id!r} not found") from None


async def _act(
    request: Request, current: Page, done: str, action: Callable[[], Awaitable[Any]]
) -> Response:
    await _visible_task(current, request.path_params["task_id"])
    try:
        await action()
    except (NotFoundError, ForbiddenError):
        raise
    except ApflowError as error:
        return await _task_response(request, current, error=error.message, status_code=400)
    task_id = request.path_params["task_id"]
    return RedirectResponse(f"/ui/tasks/{task_id}?done={done}", status_code=303)


# ---------------------------------------------------------------------- helpers


def _field(form: Any, name: str) -> str | None:
    """A text field as typed (the service checks it), or None when blank."""
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:MAX_FIELD_CHARS]


def _offset(request: Request) -> int:
    raw = request.query_params.get("offset", "0")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7):
        return 0
    return min(int(raw), MAX_OFFSET)


def _choice(request: Request, name: str, allowed: list[str]) -> str | None:
    value = request.query_params.get(name) or None
    return value if value in allowed else None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _instant(value: datetime | None, zone: str) -> dict[str, Any]:
    """An instant for a template: ISO UTC (for the script's countdowns and the viewer's zone)
    and the wall-clock time in `zone`."""
    if value is None:
        return {"utc": None, "local": None, "zone": zone}
    aware = _aware(value)
    local = aware.astimezone(ZoneInfo(zone))
    return {
        "utc": iso_utc(aware),
        "local": f"{local:%a %Y-%m-%d %H:%M:%S} {local.tzname()}",
        "zone": zone,
    }


def _task_view(task: Task) -> dict[str, Any]:
    zone = task.schedule_timezone or "UTC"
    if not task.schedule_enabled:
        state = "disabled"
    elif task.schedule_paused:
        state = "paused"
    else:
        state = "active"
    return {
        "id": task.id,
        "name": task.name,
        "user_id": task.user_id,
        "schedule": f"{task.schedule_type or ''} {task.schedule_expression or ''}".strip(),
        "schedule_type": task.schedule_type,
        "zone": zone,
        "mode": task.schedule_mode,
        "calendar": task.schedule_calendar,
        "calendar_rule": task.schedule_calendar_rule or "skip",
        "state": state,
        "pause_note": task.schedule_pause_note,
        "paused_until": _instant(task.schedule_paused_until, zone),
        "skip_count": task.schedule_skip_count,
        "next": _instant(task.next_run_at, zone),
        "last": _instant(task.last_run_at, zone),
        "last_outcome": task.status if task.last_run_at is not None else None,
        "run_count": task.run_count,
        "max_runs": task.max_runs,
        "executor": (task.params or {}).get("executor_id")
        if isinstance(task.params, dict)
        else None,
    }


def _run_view(run: Any) -> dict[str, Any]:
    zone = "UTC"
    lateness = duration = None
    if run.started_at is not None and run.scheduled_for is not None:
        lateness = (_aware(run.started_at) - _aware(run.scheduled_for)).total_seconds()
    if run.started_at is not None and run.finished_at is not None:
        duration = (_aware(run.finished_at) - _aware(run.started_at)).total_seconds()
    return {
        "id": run.id,
        "task_id": run.task_id,
        "trigger": run.trigger,
        "status": run.status,
        "scheduled_for": _instant(run.scheduled_for, zone),
        "started": _instant(run.started_at or run.created_at, zone),
        "lateness": _seconds(lateness),
        "duration": _seconds(duration),
        "reason": run.reason or (run.error if run.status == RunStatus.FAILED.value else None),
        "attempt": run.attempt,
    }


def _delivery_view(delivery: Any) -> dict[str, Any]:
    shown = delivery_to_dict(delivery)
    payload = shown.pop("payload", {})
    data = payload.get("data") if isinstance(payload, dict) else None
    shown["task_id"] = data.get("task_id") if isinstance(data, dict) else None
    shown["created"] = _instant(delivery.created_at, "UTC")
    return shown


def _seconds(value: float | None) -> str | None:
    if value is None:
        return None
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    if abs(value) < 120:
        return f"{value:.1f} s"
    minutes = value / 60
    if abs(minutes) < 120:
        return f"{minutes:.0f} min" if minutes == int(minutes) else f"{minutes:.1f} min"
    return f"{minutes / 60:.1f} h"


async def _task_names(current: Page, task_ids: set[str]) -> dict[str, str]:
    if not task_ids:
        return {}
    found = await current.service.repository.task_names(sorted(task_ids))
    return found


def _external_snippets(current: Page, task: Task) -> dict[str, Any]:
    """The webhook URL, the iCal subscription and, where the schedule converts exactly, the
    crontab line and the Kubernetes CronJob that would trigger this task."""
    from apflow_server.exports.ical import generate_ical_feed_url
    from apflow_server.exports.kubernetes import generate_kubernetes_cronjob
    from apflow_server.exports.triggers import generate_cron_config, generate_webhook_url

    settings = current.services.settings
    base = settings.public_url or str(current.request.base_url).rstrip("/")
    webhook = generate_webhook_url(task.id, base)["url"]
    snippets: dict[str, Any] = {
        "webhook_url": webhook,
        "ical_url": generate_ical_feed_url(base, task.user_id),
        "crontab": None,
        "cronjob": None,
        "why_not": None,
    }
    if task.schedule_type is None or not task.schedule_expression:
        snippets["why_not"] = "This task has no schedule to convert."
        return snippets
    if task.schedule_calendar is not None:
        snippets["why_not"] = (
            f"It follows the business calendar {task.schedule_calendar}, which cron cannot "
            "express (it knows no holidays). For a bounded period: apflow scheduler cron-line "
            f"{task.id} --expand-until YYYY-MM-DD (or k8s-cronjob)."
        )
        return snippets
    anchor = task.schedule_start_at or task.schedule_anchor_at
    secret_env = "APFLOW_WEBHOOK_SECRET" if settings.webhook_secret else None
    try:
        snippets["crontab"] = generate_cron_config(
            task.id,
            task.schedule_expression,
            webhook,
            schedule_type=task.schedule_type,
            timezone=task.schedule_timezone,
            secret_env=secret_env,
            anchor_at=anchor,
        )
        manifest = generate_kubernetes_cronjob(
            task.id,
            task.name,
            task.schedule_expression,
            webhook,
            schedule_type=task.schedule_type,
            timezone=task.schedule_timezone,
            secret_name="apflow-webhook" if secret_env else None,
            anchor_at=anchor,
        )
        snippets["cronjob"] = yaml.safe_dump(manifest, sort_keys=False)
    except (ApflowError, ValueError) as error:
        snippets["why_not"] = f"No exact cron equivalent: {error}"
    return snippets
