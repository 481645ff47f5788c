"""The inputs of rest_executor, checked before anything is sent: each mistake is one clear line
naming the input, never an exception from deep inside the HTTP client."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import httpx

from apflow_server.execution.errors import ExecutionError

METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 3600.0
# RFC 9110 token characters; a header value is visible ASCII, spaces and tabs (no line break,
# so no header can be smuggled in a value).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
# A host name as sent (IDN names arrive here as xn-- ASCII).
_HOST_NAME = re.compile(r"[A-Za-z0-9_\-.]+")
# Headers that frame the message or steer the connection are the executor's own: set by a
# task they could make one request read as two by a server behind a proxy (request
# smuggling), or desynchronise a connection that other users' requests reuse.
FRAMING_HEADERS = frozenset(
    {"connection", "content-length", "expect", "keep-alive", "te", "trailer",
     "transfer-encoding", "upgrade"}
)  # fmt: skip
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class RestRequest:
    url: str
    target: httpx.URL  # the url, parsed once
    method: str
    headers: dict[str, str]
    params: dict[str, Any] | None
    json: Any
    timeout: float

    @property
    def label(self) -> str:
        """How errors name the request."""
        return f"{self.method} {self.url}"


def parse_request(inputs: dict[str, Any]) -> RestRequest:
    """The request the inputs describe; an optional input that is absent or null takes its
    default."""

    def given(key: str, default: Any = None) -> Any:
        value = inputs.get(key)
        return default if value is None else value

    target = _url(inputs.get("url"))
    return RestRequest(
        url=str(inputs["url"]),
        target=target,
        method=_method(given("method", "GET")),
        headers=_headers(given("headers")),
        params=_params(given("params")),
        json=_json(given("json")),
        timeout=_timeout(given("timeout", DEFAULT_TIMEOUT_SECONDS)),
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _url(value: Any) -> httpx.URL:
    if not isinstance(value, str):
        raise ExecutionError("inputs.url is missing or of the wrong type")
    refused = ExecutionError(f"inputs.url must be an http(s) URL, got {_shown(value)}")
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        raise refused from None
    if url.scheme not in {"http", "https"} or not url.raw_host:
        raise refused
    host = url.raw_host.decode("ascii", errors="replace")
    if not _HOST_NAME.fullmatch(host) and not _is_ipv6_literal(host):
        raise refused
    return url


def _is_ipv6_literal(host: str) -> bool:
    try:
        return ip_address(host).version == 6
    except ValueError:
        return False


def _method(value: Any) -> str:
    method = value.upper() if isinstance(value, str) else None
    if method not in METHODS:
        raise ExecutionError(
            f"inputs.method must be one of {', '.join(METHODS)}; got {_shown(value)}"
        )
    return method


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ExecutionError("inputs.headers must be an object of strings")
    for name, text in value.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ExecutionError(f"inputs.headers: {_shown(name)} is not a header name")
        if not _HEADER_VALUE.fullmatch(text):  # the value itself is never shown: it may be a secret
            raise ExecutionError(f"inputs.headers[{name!r}] must be printable ASCII text")
        if name.lower() in FRAMING_HEADERS:
            raise ExecutionError(
                f"inputs.headers: {name} is set by the executor itself and cannot be given"
            )
    return dict(value)


def _params(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None

    def scalar_or_list(item: Any) -> bool:
        if isinstance(item, list):
            return all(isinstance(part, _SCALARS) for part in item)
        return isinstance(item, _SCALARS)

    if not isinstance(value, dict) or not all(
        isinstance(k, str) and scalar_or_list(v) for k, v in value.items()
    ):
        raise ExecutionError("inputs.params must be an object of strings, numbers or lists of them")
    return dict(value)


def _json(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise ExecutionError("inputs.json must be a JSON value") from None
    return value


def _timeout(value: Any) -> float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not 0 < number <= MAX_TIMEOUT_SECONDS:
        raise ExecutionError(
            f"inputs.timeout must be a number of seconds, more than 0 and at most "
            f"{MAX_TIMEOUT_SECONDS:g}; got {_shown(value)}"
        )
    return float(number)
