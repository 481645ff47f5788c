"""Settings: declared once (default and environment variable side by side), read from the
environment and APFLOW_HOME/config.cli.yaml."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from apflow_server.config import ConfigError, Settings, environment_variables

README = Path(__file__).resolve().parents[1] / "README.md"


def test_unset_variables_give_the_declared_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"APFLOW_HOME": str(tmp_path)})
    for declared in fields(Settings):
        if "env" in declared.metadata:
            assert getattr(settings, declared.name) == declared.default, declared.name


def test_a_blank_variable_means_unset(tmp_path: Path) -> None:
    blank = {name: "  " for name in environment_variables().values()}
    settings = Settings.from_env({"APFLOW_HOME": str(tmp_path), **blank})
    assert settings == Settings.from_env({"APFLOW_HOME": str(tmp_path)})


def test_every_variable_is_read_and_documented() -> None:
    documented = set(re.findall(r"^\| `(APFLOW_[A-Z_]+)` \|", README.read_text(), re.MULTILINE))
    variables = set(environment_variables().values())
    assert len(variables) == len(environment_variables())  # one variable per setting
    assert variables - documented == set()


def test_variables_set_their_fields(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "APFLOW_HOME": str(tmp_path),
            "APFLOW_LEASE_SECONDS": "12",
            "APFLOW_REST_ALLOW_PRIVATE_URLS": "yes",
            "APFLOW_COMMAND_ALLOWLIST": "git ls-remote, /usr/bin/true",
            "APFLOW_TRUSTED_PROXIES": "10.0.0.0/8",
            "APFLOW_PUBLIC_URL": "https://apflow.example.com/",
            "APFLOW_ALLOWED_HOSTS": "apflow.example.com",
        }
    )
    assert settings.lease_seconds == 12
    assert settings.rest_allow_private_urls is True
    assert settings.command_allowlist == (("git", "ls-remote"), ("/usr/bin/true",))
    assert [str(network) for network in settings.trusted_proxies] == ["10.0.0.0/8"]
    assert settings.public_url == "https://apflow.example.com"
    assert settings.allowed_hosts == ("apflow.example.com",)


@pytest.mark.parametrize(
    ("value", "mode"),
    [("", "process"), ("thread", "thread"), ("OFF", "off"), ("0", "off"), ("1", "process")],
)
def test_notification_delivery_modes(tmp_path: Path, value: str, mode: str) -> None:
    """process, thread and off; the flag values of earlier releases still mean on and off."""
    environment = {"APFLOW_HOME": str(tmp_path), "APFLOW_NOTIFY_IN_SCHEDULER": value}
    assert Settings.from_env(environment).notify_in_scheduler == mode


def test_the_config_file_fills_what_the_environment_leaves_unset(tmp_path: Path) -> None:
    (tmp_path / "config.cli.yaml").write_text("jwt_secret: from-file\njwt_issuer: file-issuer\n")
    settings = Settings.from_env(
        {"APFLOW_HOME": str(tmp_path), "APFLOW_JWT_ISSUER": "env-issuer", "APFLOW_JWT_SECRET": ""}
    )
    assert settings.jwt_secret == "from-file"
    assert settings.jwt_issuer == "env-issuer"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("APFLOW_LEASE_SECONDS", "1", "APFLOW_LEASE_SECONDS must be at least 2, got 1"),
        ("APFLOW_MAX_BATCH", "ten", "APFLOW_MAX_BATCH must be a whole number, got 'ten'"),
        ("APFLOW_DEFAULT_TIMEZONE", "Mars/Olympus", "Mars/Olympus"),
        ("APFLOW_JWT_ALGORITHM", "none", "jwt_algorithm must be one of HS256, HS384, HS512"),
        ("APFLOW_TRUSTED_PROXIES", "10.0.0.300", "APFLOW_TRUSTED_PROXIES: '10.0.0.300'"),
        ("APFLOW_REST_MAX_KEEPALIVE", "101", "must not exceed APFLOW_REST_MAX_CONNECTIONS"),
        (
            "APFLOW_NOTIFY_IN_SCHEDULER",
            "child",
            "APFLOW_NOTIFY_IN_SCHEDULER must be process, thread or off, not 'child'",
        ),
    ],
)
def test_a_bad_value_is_one_message_naming_the_variable(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env({"APFLOW_HOME": str(tmp_path), variable: value})


def test_secrets_stay_out_of_the_repr(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "APFLOW_HOME": str(tmp_path),
            "APFLOW_JWT_SECRET": "jwt-secret-value",
            "APFLOW_ADMIN_AUTH_TOKEN": "admin-token-value",
            "APFLOW_WEBHOOK_SECRET": "webhook-secret-value",
        }
    )
    shown = repr(settings)
    for value in ("jwt-secret-value", "admin-token-value", "webhook-secret-value"):
        assert value not in shown
