"""Settings read from the environment (and APFLOW_HOME), validated once, at use time.

Everything is read when `Settings.from_env()` is called, never at import, so tests and
embedding applications can change the environment before they build a service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from apflow_server.core.errors import ApflowError


class ConfigError(ApflowError):
    """A setting has a value the service cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    return (env.get(name) or "").strip().lower() in {"1", "true", "yes", "on"}


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in (env.get(name) or "").split(",") if item.strip())


def normalise_database_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean asyncpg; `sqlite://` means aiosqlite."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    default_timezone: str = "UTC"
    misfire_grace_seconds: int = 60
    max_catchup_runs: int = 100
    lease_seconds: int = 30
    run_history_keep: int = 1000
    rest_allow_private_urls: bool = False
    allow_command_executor: bool = False
    command_allowlist: tuple[str, ...] = ()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("APFLOW_HOME") or Path.home() / ".apflow").expanduser()
        url = env.get("APFLOW_DATABASE_URL") or f"sqlite+aiosqlite:///{home / 'apflow.db'}"
        from apflow_server.schedules.timezones import get_zone

        zone_name = env.get("APFLOW_DEFAULT_TIMEZONE") or "UTC"
        try:
            get_zone(zone_name, "APFLOW_DEFAULT_TIMEZONE")
        except ApflowError as exc:
            raise ConfigError(exc.message) from None
        return cls(
            home=home,
            database_url=normalise_database_url(url),
            default_timezone=zone_name,
            misfire_grace_seconds=_int(env, "APFLOW_MISFIRE_GRACE_SECONDS", 60),
            max_catchup_runs=_int(env, "APFLOW_MAX_CATCHUP_RUNS", 100, minimum=1),
            lease_seconds=_int(env, "APFLOW_LEASE_SECONDS", 30, minimum=2),
            run_history_keep=_int(env, "APFLOW_RUN_HISTORY_KEEP", 1000, minimum=1),
            rest_allow_private_urls=_flag(env, "APFLOW_REST_ALLOW_PRIVATE_URLS"),
            allow_command_executor=_flag(env, "APFLOW_ALLOW_COMMAND_EXECUTOR"),
            command_allowlist=_list(env, "APFLOW_COMMAND_ALLOWLIST"),
        )
