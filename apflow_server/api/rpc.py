"""JSON-RPC 2.0 over HTTP at /tasks/: dispatch with jsonrpcserver, and rpc.discover.

jsonrpcserver parses, validates the envelope, handles batches and notifications, and answers
-32700/-32600/-32601. Our adapter turns every method call into either a Success or an Error
with SPEC §6's codes; no exception escapes to the library (which would show its text to the
client), and an unexpected one is logged with its traceback and reported as a bare -32603.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jsonrpcserver import Error, Result, Success, async_dispatch
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apflow_server import __version__
from apflow_server.api.auth import principal_of, require_user
from apflow_server.api.methods import METHODS, CallContext, RpcMethod
from apflow_server.api.services import Services
from apflow_server.core.errors import ApflowError, UnauthenticatedError
from apflow_server.storage.database import failure_reason

logger = logging.getLogger(__name__)

INTERNAL_ERROR = -32603
ENVELOPE_KEYS = frozenset({"jsonrpc", "method", "params", "id"})
INVALID_REQUEST = -32600
HTTP_STATUS = {UnauthenticatedError.code: 401, -32029: 429}


def _adapter(spec: RpcMethod) -> Callable[..., Awaitable[Result]]:
    async def call(context: CallContext, /, *args: Any, **kwargs: Any) -> Result:
        try:
            params = spec.bind(args, kwargs)
            return Success(await spec.handler(context, params))
        except ApflowError as error:
            return Error(error.code, error.message, error.data)
        except Exception as error:
            if _database_unavailable(error):  # an outage, not a bug: no traceback
                reason = failure_reason(error)
                logger.warning("JSON-RPC method %s: database unavailable (%s)", spec.name, reason)
                return Error(INTERNAL_ERROR, "Internal error", {"reason": "database unavailable"})
            logger.exception("JSON-RPC method %s failed", spec.name)
            return Error(INTERNAL_ERROR, "Internal error")

    return call


def _database_unavailable(error: Exception) -> bool:
    """The database could not be reached or dropped the connection (a restart, a failover)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError | InterfaceError | OSError)


def openrpc_document() -> dict[str, Any]:
    """An OpenRPC description generated from the method declarations."""
    methods = [
        {
            "name": spec.name,
            "summary": spec.summary,
            "paramStructure": "either" if spec.array_param else "by-name",
            "params": [
                {
                    "name": param.name,
                    "required": param.required,
                    "schema": dict(param.schema),
                    **({"description": param.description} if param.description else {}),
                }
                for param in spec.params
            ],
            "result": {"name": "result", "schema": dict(spec.result)},
            "errors": [
                {"code": -32602, "message": "Invalid params (data.field names the field)"},
                {"code": -32001, "message": "Unauthenticated"},
                {"code": -32003, "message": "Forbidden"},
                {"code": -32004, "message": "Not found"},
                {"code": -32009, "message": "Conflict (task busy)"},
            ],
        }
        for spec in METHODS
    ]
    methods.append(
        {
            "name": "rpc.discover",
            "summary": "This document.",
            "params": [],
            "result": {"name": "OpenRPC", "schema": {"type": "object"}},
        }
    )
    return {
        "openrpc": "1.2.6",
        "info": {"title": "apflow-server", "version": __version__},
        "servers": [{"name": "apflow-server", "url": "/tasks/"}],
        "methods": methods,
    }


async def _discover(context: CallContext, /, *args: Any, **kwargs: Any) -> Result:
    if args or kwargs:
        return Error(-32602, "rpc.discover takes no parameters", {"field": "params"})
    return Success(openrpc_document())


DISPATCH_TABLE: dict[str, Callable[..., Awaitable[Result]]] = {
    spec.name: _adapter(spec) for spec in METHODS
}
DISPATCH_TABLE["rpc.discover"] = _discover


def rpc_error(code: int, message: str, data: Any = None, status: int = 200) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return JSONResponse({"jsonrpc": "2.0", "error": error, "id": None}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` bytes (checked while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def rpc_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    body = await read_body(request, services.settings.max_body_bytes)
    if body is None:
        limit = services.settings.max_body_bytes
        return rpc_error(INVALID_REQUEST, f"request body exceeds {limit} bytes", status=413)
    try:
        principal = require_user(principal_of(request), services.settings)
    except UnauthenticatedError as error:
        return rpc_error(error.code, error.message, status=401)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return rpc_error(-32700, "Parse error", "the body is not UTF-8")
    context = CallContext(services, principal)
    answer = await dispatch(text, context)
    if not answer:  # only notifications
        return Response(status_code=204)
    return Response(answer, media_type="application/json", status_code=_status_of(answer))


def validate_envelope(request: Any) -> Any:
    """The JSON-RPC 2.0 request object, checked by hand: jsonrpcserver's JSON-schema
    validation cost 6% of a request. Raising makes jsonrpcserver answer -32600."""
    members = request if isinstance(request, list) else [request]
    if not members:
        raise ValueError("empty batch")
    for member in members:
        if not isinstance(member, dict) or member.get("jsonrpc") != "2.0":
            raise ValueError("not a JSON-RPC 2.0 request")
        if not isinstance(member.get("method"), str) or set(member) - ENVELOPE_KEYS:
            raise ValueError("bad method or members")
        if "params" in member and not isinstance(member["params"], dict | list):
            raise ValueError("params must be an object or an array")
        identifier = member.get("id")
        if identifier is not None and (
            isinstance(identifier, bool) or not isinstance(identifier, str | int | float)
        ):
            raise ValueError("id must be a string, a number or null")
    return request


async def dispatch(text: str, context: CallContext) -> str:
    """Dispatch a request or a batch. A batch is dispatched member by member, so one invalid
    member gets its own -32600 answer instead of refusing the whole batch (JSON-RPC 2.0 §6;
    jsonrpcserver would validate the batch as one)."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, list) or not parsed:
        return str(
            await async_dispatch(
                text, methods=DISPATCH_TABLE, context=context, validator=validate_envelope
            )
        )

    async def one(member: Any) -> str:
        if not isinstance(member, dict):  # a batch holds request objects, not batches
            return json.dumps(
                {
                    "jsonrpc": "2.0",
                    "error": {"code": -32600, "message": "Invalid request"},
                    "id": None,
                }
            )
        return str(
            await async_dispatch(
                json.dumps(member),
                methods=DISPATCH_TABLE,
                context=context,
                validator=validate_envelope,
            )
        )

    answers = await asyncio.gather(*(one(member) for member in parsed))
    replies = [answer for answer in answers if answer]
    return "[" + ",".join(replies) + "]" if replies else ""


def _status_of(answer: str) -> int:
    """A single error answer with an HTTP meaning (401, 429) keeps that status."""
    if '"error"' not in answer:
        return 200
    try:
        data = json.loads(answer)
    except ValueError:
        return 200
    if isinstance(data, dict):
        return HTTP_STATUS.get(data.get("error", {}).get("code"), 200)
    return 200
