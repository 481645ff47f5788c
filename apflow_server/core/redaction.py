"""Credentials out of what is logged: the values of credential-bearing query parameters, and
the user:password part of URLs.

A calendar app sends its feed key as `?api_key=...`, and a run's error may quote the URL it
called (`GET https://user:pass@host/x?token=...`); access logs and run lines keep such text
verbatim unless it passes through here first.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

CREDENTIAL_PARAMETERS = frozenset(
    {"api_key", "apikey", "token", "access_token", "key", "secret", "jwt", "password"}
)
REDACTED = "[redacted]"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]*@")


def redact(target: str) -> str:
    """`target` (a path or URL with its query) with the values of credential parameters
    replaced by `[redacted]`. Names are compared as the application reads them
    (percent-decoded, any case), so `api%5Fkey=...` is redacted as `api_key=...` is."""
    path, separator, query = target.partition("?")
    if not separator or "=" not in query:
        return target
    pairs = re.split(r"([&;])", query)
    for index in range(0, len(pairs), 2):
        name, equals, _value = pairs[index].partition("=")
        if equals and unquote_plus(name).strip().lower() in CREDENTIAL_PARAMETERS:
            pairs[index] = f"{name}={REDACTED}"
    return f"{path}?{''.join(pairs)}"


def redact_urls(text: str) -> str:
    """Every URL in free text with its user:password and credential parameters redacted."""

    def one(match: re.Match[str]) -> str:
        return redact(_USERINFO.sub(rf"\g<1>{REDACTED}@", match.group(0)))

    return _URL.sub(one, text)
