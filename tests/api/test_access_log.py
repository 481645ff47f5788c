"""The access log's redaction of credentials in query strings."""

from __future__ import annotations

import logging

import pytest

from apflow_server.api.access_log import RedactCredentials, redact


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/scheduler/ical?api_key=S&user_id=x", "/scheduler/ical?api_key=[redacted]&user_id=x"),
        ("/scheduler/ical?user_id=x&API_KEY=S", "/scheduler/ical?user_id=x&API_KEY=[redacted]"),
        ("/x?token=a.b.c", "/x?token=[redacted]"),
        ("/x?access_token=S;jwt=S", "/x?access_token=[redacted];jwt=[redacted]"),
        # the names the application decodes are the names redacted
        ("/s?api%5Fkey=S", "/s?api%5Fkey=[redacted]"),
        ("/s?%61pi_key=S", "/s?%61pi_key=[redacted]"),
        ("/s?api_ke%79=S&x=1", "/s?api_ke%79=[redacted]&x=1"),
        # nothing else changes
        ("/x?user_id=alice&monkey=1", "/x?user_id=alice&monkey=1"),
        ("/healthz", "/healthz"),
    ],
)
def test_credential_values_are_redacted(target: str, expected: str) -> None:
    assert redact(target) == expected


def test_the_filter_rewrites_uvicorns_access_record() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/scheduler/ical?api%5Fkey=S3CRET", "1.1", 200),
        None,
    )
    assert RedactCredentials().filter(record)
    assert "S3CRET" not in record.getMessage()
    assert "api%5Fkey=[redacted]" in record.getMessage()
