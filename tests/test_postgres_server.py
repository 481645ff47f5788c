"""How the test run picks its PostgreSQL server (tests/postgres_server.py), with the probes
replaced: a named server must answer, CI must have one, elsewhere its absence deselects."""

from __future__ import annotations

import re

import postgres_server
import pytest
from postgres_server import NoPostgres, decide


@pytest.fixture
def nothing_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_server, "answers", lambda url, timeout=3.0: False)
    monkeypatch.setattr(postgres_server, "program_folder", lambda: None)


def test_a_named_server_that_does_not_answer_is_an_error() -> None:
    url = "postgresql://postgres@127.0.0.1:1/postgres"
    with pytest.raises(NoPostgres, match=re.escape(f"does not answer: {url}")):
        decide({"APFLOW_TEST_POSTGRES_URL": url})


@pytest.mark.usefixtures("nothing_there")
def test_without_a_server_ci_fails_and_elsewhere_the_tests_are_deselected() -> None:
    with pytest.raises(NoPostgres, match=re.escape("CI=true needs PostgreSQL: nothing answers")):
        decide({"CI": "true"})
    decision = decide({})
    assert decision.url is None and decision.throwaway is None
    assert decision.description.startswith("PostgreSQL tests deselected: nothing answers")
    assert "apt install postgresql" in decision.description


def test_the_local_server_is_used_when_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_server, "answers", lambda url, timeout=3.0: True)
    decision = decide({})
    assert decision.url == postgres_server.DEFAULT_URL and decision.throwaway is None
