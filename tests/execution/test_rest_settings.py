"""The settings of rest_executor: defaults, values, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from apflow_server.config import ConfigError, Settings


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"APFLOW_HOME": str(tmp_path), **env})


def test_defaults(tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    assert (
        chosen.rest_allow_private_urls,
        chosen.rest_max_connections,
        chosen.rest_max_keepalive,
        chosen.rest_max_response_bytes,
    ) == (False, 100, 100, 1048576)


def test_values(tmp_path: Path) -> None:
    chosen = settings(
        tmp_path,
        APFLOW_REST_ALLOW_PRIVATE_URLS="1",
        APFLOW_REST_MAX_CONNECTIONS="7",
        APFLOW_REST_MAX_KEEPALIVE="0",
        APFLOW_REST_MAX_RESPONSE_BYTES="10",
    )
    assert (
        chosen.rest_allow_private_urls,
        chosen.rest_max_connections,
        chosen.rest_max_keepalive,
        chosen.rest_max_response_bytes,
    ) == (True, 7, 0, 10)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"APFLOW_REST_MAX_CONNECTIONS": "many"},
            "APFLOW_REST_MAX_CONNECTIONS must be a whole number, got 'many'",
        ),
        (
            {"APFLOW_REST_MAX_CONNECTIONS": "0"},
            "APFLOW_REST_MAX_CONNECTIONS must be at least 1, got 0",
        ),
        (
            {"APFLOW_REST_MAX_KEEPALIVE": "-1"},
            "APFLOW_REST_MAX_KEEPALIVE must be at least 0, got -1",
        ),
        (
            {"APFLOW_REST_MAX_CONNECTIONS": "10", "APFLOW_REST_MAX_KEEPALIVE": "11"},
            "APFLOW_REST_MAX_KEEPALIVE (11) must not exceed APFLOW_REST_MAX_CONNECTIONS (10)",
        ),
        (
            {"APFLOW_REST_MAX_KEEPALIVE": "101", "APFLOW_REST_MAX_CONNECTIONS": ""},
            "APFLOW_REST_MAX_KEEPALIVE (101) must not exceed APFLOW_REST_MAX_CONNECTIONS (100)",
        ),
        (
            {"APFLOW_REST_MAX_RESPONSE_BYTES": "0"},
            "APFLOW_REST_MAX_RESPONSE_BYTES must be at least 1, got 0",
        ),
        (
            {"APFLOW_REST_MAX_RESPONSE_BYTES": "1MiB"},
            "APFLOW_REST_MAX_RESPONSE_BYTES must be a whole number, got '1MiB'",
        ),
    ],
)
def test_bad_values_are_one_clear_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(tmp_path, **env)
    assert str(refused.value) == message
