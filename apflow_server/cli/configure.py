"""`apflow config ...`: the CLI configuration file APFLOW_HOME/config.cli.yaml."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import click
import yaml

from apflow_server.config import CONFIG_FILE, ConfigError, Settings, load_config_file

from . import output
from .options import format_option


def config_path(settings: Settings) -> Path:
    return settings.home / CONFIG_FILE


def write_config(path: Path, values: dict[str, Any]) -> None:
    """Write the file readable by its owner only: it holds secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        yaml.safe_dump(values, handle, sort_keys=True)
    os.chmod(path, 0o600)


def ensure_jwt_secret(settings: Settings) -> str:
    """The configured JWT secret, creating one in the config file when there is none."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = config_path(settings)
    values = load_config_file(settings.home)
    values["jwt_secret"] = secrets.token_urlsafe(48)
    write_config(path, values)
    return str(values["jwt_secret"])


@click.group("config")
def config_group() -> None:
    """The configuration file (APFLOW_HOME/config.cli.yaml) and tokens."""


@config_group.command("init")
@click.option("--api-server-url", help="Make `apflow scheduler start` use this server.")
def init(api_server_url: str | None) -> None:
    """Create the configuration file with a fresh JWT secret (kept if one exists).

    With a JWT secret, `apflow serve` requires tokens: make one with `apflow config gen-token`.
    """
    settings = Settings.from_env()
    path = config_path(settings)
    values = load_config_file(settings.home)
    created = "jwt_secret" not in values
    values.setdefault("jwt_secret", secrets.token_urlsafe(48))
    if api_server_url:
        values["api_server_url"] = api_server_url
    write_config(path, values)
    state = "with a new JWT secret" if created else "keeping its JWT secret"
    output.line(f"Wrote {path} ({state}).")


@config_group.command("show")
@format_option
def show(output_format: str) -> None:
    """The effective configuration (environment over file); secrets are never printed."""
    settings = Settings.from_env()

    def secret(value: str | None) -> str:
        return "(set)" if value else "(not set)"

    values = {
        "home": str(settings.home),
        "config_file": str(config_path(settings)),
        "database_url": settings.database_url.split("@")[-1]
        if "@" in settings.database_url
        else settings.database_url,
        "default_timezone": settings.default_timezone,
        "jwt_secret": secret(settings.jwt_secret),
        "jwt_algorithm": settings.jwt_algorithm,
        "jwt_audience": settings.jwt_audience or "(not set)",
        "jwt_issuer": settings.jwt_issuer or "(not set)",
        "admin_auth_token": secret(settings.admin_auth_token),
        "api_server_url": settings.api_server_url or "(not set)",
        "public_url": settings.public_url or "(not set)",
        "webhook_secret": secret(settings.webhook_secret),
        "webhook_allowed_ips": ",".join(map(str, settings.webhook_allowed_ips)) or "(any)",
        "trusted_proxies": ",".join(map(str, settings.trusted_proxies)) or "(none)",
        "webhook_rate_limit": settings.webhook_rate_limit,
        # the scheme only: a Redis URL may hold its password
        "rate_limit_storage": settings.rate_limit_storage.partition("://")[0] + "://",
        "allowed_hosts": ",".join(settings.allowed_hosts or ()) or "(loopback names)",
        "cors_origins": ",".join(settings.cors_origins) or "(none)",
        "auth": "on" if settings.auth_enabled else "off",
    }
    if output_format == "json":
        output.print_json(values)
    else:
        for key, value in values.items():
            output.line(f"{key:22} {value}")


# Tokens always expire (the server refuses one without `exp`); ten years is the longest
# lifetime offered, for machine tokens that are rotated by hand.
MAX_TOKEN_SECONDS = 10 * 365 * 86400


def _lifetime(_ctx: click.Context, _param: click.Parameter, seconds: int) -> int:
    if not 1 <= seconds <= MAX_TOKEN_SECONDS:
        raise click.BadParameter(
            f"{seconds} is not a lifetime: tokens must expire, give 1 to {MAX_TOKEN_SECONDS} "
            "seconds (10 years)"
        )
    return seconds


@config_group.command("gen-token")
@click.option("--subject", default="admin", show_default=True, help="The token's user (sub).")
@click.option("--role", "roles", multiple=True, help="A role to grant, e.g. admin (repeatable).")
@click.option(
    "--expires-in",
    type=int,
    default=86400,
    show_default=True,
    callback=_lifetime,
    help=f"Seconds until it expires: 1 to {MAX_TOKEN_SECONDS} (10 years).",
)
def gen_token(subject: str, roles: tuple[str, ...], expires_in: int) -> None:
    """Print a JWT signed with the configured secret (run `apflow config init` first). It
    carries `exp`, and `aud`/`iss` when APFLOW_JWT_AUDIENCE / APFLOW_JWT_ISSUER are set."""
    settings = Settings.from_env()
    if not settings.jwt_secret:
        raise ConfigError("no JWT secret: run `apflow config init` or set APFLOW_JWT_SECRET")
    if not subject.strip():
        raise click.BadParameter("must not be empty", param_hint="--subject")
    from apflow_server.core.tokens import issue_token

    token = issue_token(
        settings.jwt_secret,
        subject,
        roles=roles,
        expires_in=expires_in,
        algorithm=settings.jwt_algorithm,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    output.line(token)
