"""The ceiling for bench/api.py: the same database read as JSON-RPC `tasks.get`, with nothing
else. POST / with the same JSON-RPC body; the task row is selected by id (SQLAlchemy Core,
async engine on asyncpg, the pool size apflow uses: 10 + 10 overflow) and returned as JSON in a
JSON-RPC envelope. Served like `apflow serve`: one uvicorn worker, same uvicorn defaults.

    APFLOW_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/DB \\
        .venv/bin/python -m uvicorn api_ceiling:app --app-dir bench --port 8001 --log-level warning

CEILING_PRE_PING=1 turns on pool_pre_ping (a ping on every checkout; apflow pings only
connections idle for over a second) for diagnosis; off by default, since the ceiling does the
least work possible.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

URL = os.environ["APFLOW_DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
engine = create_async_engine(
    URL, pool_size=10, max_overflow=10, pool_pre_ping=os.environ.get("CEILING_PRE_PING") == "1"
)
SELECT = text("SELECT * FROM tasks WHERE id = :id")


def _value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def get_task(request: Request) -> Response:
    body = json.loads(await request.body())
    async with engine.connect() as connection:
        row = (await connection.execute(SELECT, {"id": body["params"]["task_id"]})).first()
    if row is None:
        answer = {"jsonrpc": "2.0", "id": body.get("id"), "error": {"code": -32004}}
    else:
        result = {key: _value(value) for key, value in row._mapping.items()}
        answer = {"jsonrpc": "2.0", "id": body.get("id"), "result": result}
    return Response(json.dumps(answer), media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response('{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[Route("/", get_task, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
)
