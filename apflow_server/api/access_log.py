"""The HTTP access log, without credentials.

A calendar app subscribes to `/scheduler/ical?api_key=...`, so feed keys (and JWTs given as
`api_key`) travel in query strings, which access logs keep verbatim. The filter here rewrites
the values of credential-bearing parameters before a line is written.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

CREDENTIAL_PARAMETERS = frozenset(
    {"api_key", "apikey", "token", "access_token", "key", "secret", "jwt"}
)


def redact(target: str) -> str:
    """`target` (a path with its query) with the values of credential parameters replaced by
    `[redacted]`. Names are compared as the application reads them (percent-decoded, any
    case), so `api%5Fkey=...` is redacted as `api_key=...` is."""
    path, separator, query = target.partition("?")
    if not separator or "=" not in query:
        return target
    pairs = re.split(r"([&;])", query)
    for index in range(0, len(pairs), 2):
        name, equals, _value = pairs[index].partition("=")
        if equals and unquote_plus(name).strip().lower() in CREDENTIAL_PARAMETERS:
            pairs[index] = f"{name}=[redacted]"
    return f"{path}?{''.join(pairs)}"


class RedactCredentials(logging.Filter):
    """Redacts uvicorn's access lines: `args` = (client, method, target, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactCredentials) for existing in logger.filters):
        logger.addFilter(RedactCredentials())
