"""The web dashboard at /ui/: server-rendered pages over the service layer (views.py), signed
in with the same tokens as JSON-RPC and protected against forged forms (session.py)."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def routes() -> list[BaseRoute]:
    from apflow_server.ui import views

    return [
        Route("/ui", views.schedules, methods=["GET"]),
        Route("/ui/", views.schedules, methods=["GET"]),
        Route("/ui/login", views.login, methods=["GET", "POST"]),
        Route("/ui/logout", views.logout, methods=["POST"]),
        Route("/ui/upcoming", views.upcoming, methods=["GET"]),
        Route("/ui/runs", views.runs, methods=["GET"]),
        Route("/ui/schedulers", views.schedulers, methods=["GET"]),
        Route("/ui/audit", views.audit, methods=["GET"]),
        Route("/ui/notifications", views.notifications, methods=["GET"]),
        Route("/ui/tasks/{task_id}", views.task_page, methods=["GET"]),
        Route("/ui/tasks/{task_id}/pause", views.pause, methods=["POST"]),
        Route("/ui/tasks/{task_id}/resume", views.resume, methods=["POST"]),
        Route("/ui/tasks/{task_id}/run", views.run_now, methods=["POST"]),
        Route("/ui/tasks/{task_id}/skip", views.skip, methods=["POST"]),
        Route("/ui/tasks/{task_id}/backfill", views.backfill, methods=["POST"]),
        Mount("/ui/static", app=StaticFiles(directory=STATIC), name="ui-static"),
    ]
