"""JSON-RPC 2.0 over HTTP at /tasks/: dispatch with jsonrpcserver, and rpc.discover.

We parse the body once and own batches (their limits and per-member answers); jsonrpcserver
checks each request object, finds its method (-32601), skips notifications and shapes the
answer. Our adapter turns every method call into either a Success or an Error
with the codes README.md lists; no exception escapes to the library (which would show its
text to the client), and an unexpected one is logged with its traceback and reported as a
bare -32603.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jsonrpcserver import Error, Result, Success, async_dispatch_to_serializable
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apflow_server.api import admission
from apflow_server.api.auth import client_address, principal_of, require_user
from apflow_server.api.methods import METHODS, CallContext, RpcMethod
from apflow_server.api.services import Services
from apflow_server.core.compute import Budget
from apflow_server.core.errors import (
    TRANSPORT_CODES,
    ApflowError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    UnauthenticatedError,
    ValidationError,
    http_status,
)
from apflow_server.core.task_fields import FIELD_SCHEMAS, find_invalid_text
from apflow_server.core.version import __version__
from apflow_server.storage.database import failure_reason

logger = logging.getLogger(__name__)

INTERNAL_ERROR = -32603
ENVELOPE_KEYS = frozenset({"jsonrpc", "method", "params", "id"})
INVALID_REQUEST = -32600
INVALID_TEXT = "must be valid Unicode text (a lone UTF-16 surrogate such as \\ud800 is not)"


def _adapter(spec: RpcMethod) -> Callable[..., Awaitable[Result]]:
    async def call(context: CallContext, /, *args: Any, **kwargs: Any) -> Result:
        try:
            invalid = (
                find_invalid_text(list(args), spec.array_param or "params")
                if args
                else find_invalid_text(kwargs, "")
            )
            if invalid is not None:
                raise ValidationError(invalid, INVALID_TEXT)
            params = spec.bind(args, kwargs)
            return Success(await spec.handler(context, params))
        except ApflowError as error:
            return Error(error.code, error.message, error.data)
        except Exception as error:
            if database_unavailable(error):  # an outage, not a bug: no traceback
                reason = failure_reason(error)
                logger.warning("JSON-RPC method %s: database unavailable (%s)", spec.name, reason)
                return Error(INTERNAL_ERROR, "Internal error", {"reason": "database unavailable"})
            logger.exception("JSON-RPC method %s failed", spec.name)
            return Error(INTERNAL_ERROR, "Internal error")

    return call


def database_unavailable(error: Exception) -> bool:
    """The database could not be reached or dropped the connection (a restart, a failover)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError | InterfaceError | OSError)


# What every method may answer, beside the protocol's own -32700/-32600/-32601.
COMMON_ERRORS = {
    ValidationError.code: "Invalid params (data.field names the field)",
    UnauthenticatedError.code: "Unauthenticated (HTTP 401)",
    ForbiddenError.code: "Forbidden",
    NotFoundError.code: "Not found",
    ConflictError.code: "Conflict (task busy)",
    INTERNAL_ERROR: "Internal error (a bug, or the database is unavailable)",
}
EXTRA_ERRORS = {RateLimitedError.code: "Rate limited (HTTP 429; data.retry_after)"}


def _params_of(spec: RpcMethod) -> list[dict[str, Any]]:
    """The declared params, then the task fields the method takes (one param each)."""
    params = [
        {
            "name": param.name,
            "required": param.required,
            "schema": dict(param.schema),
            **({"description": param.description} if param.description else {}),
        }
        for param in spec.params
    ]
    for name in sorted(spec.task_fields):
        schema = dict(FIELD_SCHEMAS[name])
        description = schema.pop("description", "")
        params.append(
            {
                "name": name,
                "required": name == "name" and spec.array_param is not None,
                "schema": schema,
                **({"description": description} if description else {}),
            }
        )
    return params


def openrpc_document() -> dict[str, Any]:
    """An OpenRPC description generated from the method declarations."""
    methods = [
        {
            "name": spec.name,
            "summary": spec.summary,
            "paramStructure": "either" if spec.array_param else "by-name",
            "params": _params_of(spec),
            "result": {"name": "result", "schema": dict(spec.result)},
            "errors": [
                {"code": code, "message": message}
                for code, message in (
                    *COMMON_ERRORS.items(),
                    *((code, EXTRA_ERRORS[code]) for code in spec.errors),
                )
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
            "errors": [{"code": ValidationError.code, "message": COMMON_ERRORS[-32602]}],
        }
    )
    return {
        "openrpc": "1.2.6",
        "info": {
            "title": "apflow-server",
            "version": __version__,
            "description": "Protocol errors for every request: -32700 parse error, -32600 "
            "invalid request (also: a body that is not application/json, HTTP 415; over the "
            "size or batch limits), -32601 method not found.",
        },
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


def is_json(content_type: str | None) -> bool:
    """`application/json`, with or without parameters (charset)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"


async def rpc_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    # Only JSON: a web page can send text/plain or a form to any address without asking
    # (no CORS preflight), but not application/json.
    if not is_json(request.headers.get("content-type")):
        return rpc_error(
            INVALID_REQUEST, "send the request as Content-Type: application/json", status=415
        )
    body = await read_body(request, settings.max_body_bytes)
    if body is None:
        limit = settings.max_body_bytes
        return rpc_error(INVALID_REQUEST, f"request body exceeds {limit} bytes", status=413)
    try:
        principal = require_user(principal_of(request), settings)
    except UnauthenticatedError as error:
        return rpc_error(error.code, error.message, status=401)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return rpc_error(-32700, "Parse error", "the body is not UTF-8")
    client_ip = client_address(request, settings.trusted_proxies)
    context = CallContext(
        services,
        principal,
        budget=Budget(settings.max_compute_seconds),
        admit_webhook=lambda: admission.refusal(
            request.app.state.webhook_rate_limit, settings, client_ip
        ),
    )
    reply, status = await dispatch(text, context)
    if not reply:  # only notifications
        return Response(status_code=204)
    return Response(reply, media_type="application/json", status_code=status)


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


async def dispatch(text: str, context: CallContext) -> tuple[str, int]:
    """The reply to a request or a batch, and its HTTP status (the reply is empty when all
    were notifications).

    The body is parsed once, here. jsonrpcserver then does what it is for, member by member:
    check the envelope (with `validate_envelope`), find the method (-32601), skip
    notifications and shape each answer. Batches are ours, because one invalid member must
    get its own -32600 answer instead of refusing the whole batch (JSON-RPC 2.0 §6;
    jsonrpcserver validates a batch as one), and because of the limits: a batch holds at
    most `max_batch` members, and replies stop growing at `max_response_bytes`."""
    settings = context.services.settings
    limit = settings.max_response_bytes
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as error:
        return json.dumps(_error_answer(-32700, "Parse error", str(error))), 200
    if not isinstance(parsed, list):
        answer = await _dispatch_one(parsed, context)
        if answer is None:
            return "", 200
        reply = json.dumps(answer)
        if len(reply) > limit:
            return _too_large(parsed, limit), 200
        return reply, _status_of(answer)
    if not parsed:
        return json.dumps(_error_answer(INVALID_REQUEST, "Invalid request", "empty batch")), 200
    if len(parsed) > settings.max_batch:
        message = f"a batch may hold at most {settings.max_batch} requests"
        refusal = _error_answer(INVALID_REQUEST, message, {"max_batch": settings.max_batch})
        return json.dumps(refusal), 200
    answers = await asyncio.gather(*(_dispatch_one(member, context) for member in parsed))
    replies: list[str] = []
    size = 0
    for member, answer in zip(parsed, answers, strict=True):
        if answer is None:  # a notification
            continue
        reply = json.dumps(answer)
        if size + len(reply) > limit:
            reply = _too_large(member, limit)
        size += len(reply)
        replies.append(reply)
    return ("[" + ",".join(replies) + "]" if replies else ""), 200


Answer = dict[str, Any]


async def _dispatch_one(request: Any, context: CallContext) -> Answer | None:
    if isinstance(request, list):  # a batch holds request objects, not batches
        return _error_answer(INVALID_REQUEST, "Invalid request")
    answer = await async_dispatch_to_serializable(
        "",  # already parsed: the deserializer hands jsonrpcserver the value itself
        methods=DISPATCH_TABLE,
        context=context,
        deserializer=lambda _text: request,
        validator=validate_envelope,
    )
    return answer if isinstance(answer, dict) else None


def _error_answer(code: int, message: str, data: Any = None) -> Answer:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": None}


def _too_large(request: Any, limit: int) -> str:
    """The answer to a request whose reply would pass the size limit (of the whole batch)."""
    identifier = request.get("id") if isinstance(request, dict) else None
    params = request.get("params") if isinstance(request, dict) else None
    field = "limit" if isinstance(params, dict) and "limit" in params else "params"
    message = f"the reply would exceed {limit} bytes; ask for less"
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "error": {"code": -32602, "message": message, "data": {"field": field}},
            "id": identifier if isinstance(identifier, str | int | float) else None,
        }
    )


def _status_of(answer: Answer) -> int:
    """A single error answer with an HTTP meaning (401, 429) keeps that status."""
    error = answer.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return http_status(code) if code in TRANSPORT_CODES else 200
