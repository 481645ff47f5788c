"""Credentials out of logged text: query parameters and URL user:password."""

from __future__ import annotations

import pytest

from apflow_server.core.redaction import redact_urls


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no url here", "no url here"),
        ("GET https://h/x?a=1", "GET https://h/x?a=1"),
        ("see https://u:p@h:8443/x ok", "see https://[redacted]@h:8443/x ok"),
        (
            "'http://h/x?api_key=k&password=p'",
            "'http://h/x?api_key=[redacted]&password=[redacted]'",
        ),
        (
            "two: http://a/?token=1 http://b@c/",
            "two: http://a/?token=[redacted] http://[redacted]@c/",
        ),
    ],
)
def test_urls_in_text_lose_their_credentials(text: str, expected: str) -> None:
    assert redact_urls(text) == expected
