"""The HTTP access log, without credentials.

A calendar app subscribes to `/scheduler/ical?api_key=...`, so feed keys (and JWTs given as
`api_key`) travel in query strings, which access logs keep verbatim. The filter here rewrites
the values of credential-bearing parameters before a line is written.
"""

from __future__ import annotations

import logging

from apflow_server.core.redaction import CREDENTIAL_PARAMETERS, redact

__all__ = ["CREDENTIAL_PARAMETERS", "RedactCredentials", "install", "redact"]


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
