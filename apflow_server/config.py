"""Settings read from the environment (and APFLOW_HOME), validated once, at use time.

Everything is read when `Settings.from_env()` is called, never at import, so tests and
embedding applications can change the environment before they build a service.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

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


def _text(env: Mapping[str, str], file: Mapping[str, str], name: str, key: str) -> str | None:
    """A free-text setting from the environment, else the config file; blank means unset."""
    value = env.get(name)
    if value is None:
        value = file.get(key)
    return value.strip() or None if value is not None else None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in (env.get(name) or "").split(",") if item.strip())


def _argv_prefixes(env: Mapping[str, str], name: str) -> tuple[tuple[str, ...], ...]:
    """Comma-separated argv prefixes, each read as argv (shell quoting, never a shell).

    The program token is a bare name or an absolute path: a relative path would depend on
    the directory the service happens to run in.
    """
    entries = []
    for item in _list(env, name):
        try:
            argv = tuple(shlex.split(item))
        except ValueError as exc:
            raise ConfigError(f"{name}: {item!r} cannot be read as argv: {exc}") from None
        if not argv or not argv[0]:
            raise ConfigError(f"{name}: {item!r} names no program")
        if "/" in argv[0] and not os.path.isabs(argv[0]):
            raise ConfigError(
                f"{name}: {item!r}: a program is a bare name or an absolute path, not {argv[0]!r}"
            )
        entries.append(argv)
    return tuple(entries)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    names = _list(env, name)
    for item in names:
        if not _ENV_NAME.fullmatch(item):
            raise ConfigError(f"{name}: {item!r} is not an environment variable name")
    return names


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CONFIG_FILE = "config.cli.yaml"
# Room for rest_executor's 1 MiB response body and its headers.
DEFAULT_MAX_RESULT_BYTES = 2 * 1024 * 1024
# Pinned: an HMAC family only, never "none" nor whatever a token header asks for.
JWT_ALGORITHMS = ("HS256", "HS384", "HS512")
CONFIG_KEYS = (
    "jwt_secret",
    "jwt_algorithm",
    "jwt_audience",
    "jwt_issuer",
    "admin_auth_token",
    "api_server_url",
)
# HS256's key is as strong as its entropy: 32 bytes is the hash's own size (RFC 7518 asks HMAC
# keys to be at least that long), and a short one can be brute-forced from any token.
MIN_JWT_SECRET_BYTES = 32


# Rate-limit storages by URL scheme: memory (this process only) and the Redis family (shared by
# replicas), which needs the `redis` extra. limits knows more (memcached, MongoDB, ...), but
# these are the ones this package declares and tests.
MEMORY_SCHEME = "memory"
REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
REDIS_EXTRA_HINT = "pip install 'apflow-server[redis]'"


def _rate_limit_storage(env: Mapping[str, str]) -> str:
    """APFLOW_RATE_LIMIT_STORAGE, refused now rather than when the first request needs it (the
    message names the scheme only: the URL may hold a Redis password)."""
    name = "APFLOW_RATE_LIMIT_STORAGE"
    value = (env.get(name) or "").strip() or f"{MEMORY_SCHEME}://"
    scheme, separator, _rest = value.partition("://")
    if not separator or scheme not in (MEMORY_SCHEME, *REDIS_SCHEMES):
        shown = f"{scheme}://" if separator else "a value without a scheme"
        raise ConfigError(
            f"{name}: unknown storage {shown}: use memory:// (one process) or "
            "redis://host:6379 (shared; also rediss://, redis+unix://, redis+sentinel://, "
            "redis+cluster://)"
        )
    if scheme in REDIS_SCHEMES and not _importable("redis"):
        raise ConfigError(f"{name}: {scheme}:// needs the redis extra: {REDIS_EXTRA_HINT}")
    return value


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _public_url(env: Mapping[str, str]) -> str | None:
    """APFLOW_PUBLIC_URL: where other machines reach this server (what generated CronJobs,
    crontab lines and webhook URLs call), without a trailing slash."""
    name = "APFLOW_PUBLIC_URL"
    value = (env.get(name) or "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL such as https://apflow.example.com")
    if parts.query or parts.fragment or any(ch.isspace() for ch in value):
        raise ConfigError(f"{name} must be a plain base URL, without query, fragment or spaces")
    return value.rstrip("/")


def _networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    networks = []
    for item in _list(env, name):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an address or CIDR range") from None
    return tuple(networks)


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    origins = _list(env, name)
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            raise ConfigError(f"{name}: {origin!r} is not an origin such as https://app.example")
    return origins


def load_config_file(home: Path) -> dict[str, Any]:
    """APFLOW_HOME/config.cli.yaml as a mapping (empty when the file does not exist)."""
    path = home / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}")
    return {key: str(value) for key, value in data.items() if value is not None}


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
    rest_max_connections: int = 100
    rest_max_keepalive: int = 100
    rest_max_response_bytes: int = 1024 * 1024
    allow_command_executor: bool = False
    # argv prefixes: ("git", "ls-remote") allows `git ls-remote ...`; ("git",) allows any git.
    command_allowlist: tuple[tuple[str, ...], ...] = ()
    # The only names a command task's `env` may set (none by default).
    command_env_allowlist: tuple[str, ...] = ()
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_algorithm: str = "HS256"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    admin_auth_token: str | None = field(default=None, repr=False)
    api_server_url: str | None = None
    public_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_tolerance_seconds: int = 300
    webhook_allowed_ips: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    webhook_rate_limit: int = 0
    rate_limit_storage: str = "memory://"
    max_body_bytes: int = 1024 * 1024
    # Bounds on one JSON-RPC request: members of a batch, bytes of the reply, compute seconds.
    max_batch: int = 100
    max_response_bytes: int = 16 * 1024 * 1024
    max_compute_seconds: int = 2
    # The largest result a task may store (JSON bytes); results flow into dependents.
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    # Host names the HTTP service answers to (None: the loopback names; see api/browsers.py)
    # and the web origins allowed to call it from a browser (CORS; none by default).
    allowed_hosts: tuple[str, ...] | None = None
    cors_origins: tuple[str, ...] = ()

    @property
    def auth_enabled(self) -> bool:
        """Authentication is on when any secret is configured."""
        return bool(self.jwt_secret or self.webhook_secret)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("APFLOW_HOME") or Path.home() / ".apflow").expanduser()
        url = env.get("APFLOW_DATABASE_URL") or f"sqlite+aiosqlite:///{home / 'apflow.db'}"
        from apflow_server.core.zones import get_zone

        file = load_config_file(home)
        zone_name = env.get("APFLOW_DEFAULT_TIMEZONE") or "UTC"
        try:
            get_zone(zone_name, "APFLOW_DEFAULT_TIMEZONE")
        except ApflowError as exc:
            raise ConfigError(exc.message) from None
        algorithm = env.get("APFLOW_JWT_ALGORITHM") or file.get("jwt_algorithm") or "HS256"
        if algorithm not in JWT_ALGORITHMS:
            raise ConfigError(f"jwt_algorithm must be one of {', '.join(JWT_ALGORITHMS)}")
        rest_max_connections = _int(env, "APFLOW_REST_MAX_CONNECTIONS", 100, minimum=1)
        rest_max_keepalive = _int(env, "APFLOW_REST_MAX_KEEPALIVE", 100)
        if rest_max_keepalive > rest_max_connections:
            raise ConfigError(
                f"APFLOW_REST_MAX_KEEPALIVE ({rest_max_keepalive}) must not exceed "
                f"APFLOW_REST_MAX_CONNECTIONS ({rest_max_connections})"
            )
        return cls(
            home=home,
            database_url=normalise_database_url(url),
            default_timezone=zone_name,
            misfire_grace_seconds=_int(env, "APFLOW_MISFIRE_GRACE_SECONDS", 60),
            max_catchup_runs=_int(env, "APFLOW_MAX_CATCHUP_RUNS", 100, minimum=1),
            lease_seconds=_int(env, "APFLOW_LEASE_SECONDS", 30, minimum=2),
            run_history_keep=_int(env, "APFLOW_RUN_HISTORY_KEEP", 1000, minimum=1),
            rest_allow_private_urls=_flag(env, "APFLOW_REST_ALLOW_PRIVATE_URLS"),
            rest_max_connections=rest_max_connections,
            rest_max_keepalive=rest_max_keepalive,
            rest_max_response_bytes=_int(env, "APFLOW_REST_MAX_RESPONSE_BYTES", 1024**2, minimum=1),
            allow_command_executor=_flag(env, "APFLOW_ALLOW_COMMAND_EXECUTOR"),
            command_allowlist=_argv_prefixes(env, "APFLOW_COMMAND_ALLOWLIST"),
            command_env_allowlist=_env_names(env, "APFLOW_COMMAND_ENV_ALLOWLIST"),
            jwt_secret=env.get("APFLOW_JWT_SECRET") or file.get("jwt_secret"),
            jwt_algorithm=algorithm,
            jwt_audience=_text(env, file, "APFLOW_JWT_AUDIENCE", "jwt_audience"),
            jwt_issuer=_text(env, file, "APFLOW_JWT_ISSUER", "jwt_issuer"),
            admin_auth_token=env.get("APFLOW_ADMIN_AUTH_TOKEN") or file.get("admin_auth_token"),
            api_server_url=env.get("APFLOW_API_SERVER_URL") or file.get("api_server_url"),
            public_url=_public_url(env),
            webhook_secret=env.get("APFLOW_WEBHOOK_SECRET") or None,
            webhook_tolerance_seconds=_int(env, "APFLOW_WEBHOOK_TOLERANCE_SECONDS", 300, 1),
            webhook_allowed_ips=_networks(env, "APFLOW_WEBHOOK_ALLOWED_IPS"),
            trusted_proxies=_networks(env, "APFLOW_TRUSTED_PROXIES"),
            webhook_rate_limit=_int(env, "APFLOW_WEBHOOK_RATE_LIMIT", 0),
            rate_limit_storage=_rate_limit_storage(env),
            max_batch=_int(env, "APFLOW_MAX_BATCH", 100, minimum=1),
            max_response_bytes=_int(env, "APFLOW_MAX_RESPONSE_BYTES", 16 * 1024 * 1024, 65536),
            max_compute_seconds=_int(env, "APFLOW_MAX_COMPUTE_SECONDS", 2, minimum=1),
            max_result_bytes=_int(env, "APFLOW_MAX_RESULT_BYTES", DEFAULT_MAX_RESULT_BYTES, 1024),
            allowed_hosts=_list(env, "APFLOW_ALLOWED_HOSTS") or None,
            cors_origins=_origins(env, "APFLOW_CORS_ORIGINS"),
        )
