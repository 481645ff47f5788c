"""The webhook signature: the guide's exact text for ids without a dot, and no signature valid
for two different (task id, body) pairs."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apflow_server.scheduler.gateway.signatures import (
    SignatureError,
    sign,
    signed_task_id,
    verify,
)

SECRET = "s3cret-for-tests"
# The alphabet of task ids: letters, digits and _ . : -
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)


def reference(timestamp: int, text_id: str, body: bytes) -> str:
    message = f"{timestamp}.{text_id}.".encode() + body
    return hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


def test_an_id_without_a_dot_keeps_the_guide_format() -> None:
    task_id = "5b0f6c1e-8d8a-4c1e-9a57-3b1d2f0c9e11"
    assert sign(SECRET, 1700000000, task_id, b"{}") == reference(1700000000, task_id, b"{}")


def test_a_dotted_id_is_written_with_percent_2e() -> None:
    assert signed_task_id("x.y") == "x%2Ey"
    assert sign(SECRET, 1, "x.y", b"") == reference(1, "x%2Ey", b"")


def test_the_ambiguous_pair_signs_differently() -> None:
    assert sign(SECRET, 1, "x.y", b"") != sign(SECRET, 1, "x", b"y.")
    with pytest.raises(SignatureError):
        verify(
            SECRET,
            timestamp="1",
            signature=sign(SECRET, 1, "x.y", b""),
            task_id="x",
            body=b"y.",
            now=1,
            tolerance_seconds=60,
        )


@given(IDS, st.binary(max_size=8), IDS, st.binary(max_size=8))
def test_no_signature_is_valid_for_two_pairs(
    first_id: str, first_body: bytes, second_id: str, second_body: bytes
) -> None:
    if (first_id, first_body) == (second_id, second_body):
        return
    # Signatures differ exactly when the signed texts differ (HMAC-SHA256 collisions aside):
    # compare the texts, which is what ambiguity is about.
    first = f"1.{signed_task_id(first_id)}.".encode() + first_body
    second = f"1.{signed_task_id(second_id)}.".encode() + second_body
    assert first != second
