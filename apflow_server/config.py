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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from apflow_server.core.errors import ApflowError


class ConfigError(ApflowError):
    """A setting has a value the service cannot use."""


def ensure_folder(folder: Path, what: str) -> None:
    """Create `folder` if it is missing, but only inside one that exists: a mistyped
    APFLOW_HOME (or SQLite path) is refused in one line rather than built, parents and all,
    with a fresh empty database in it."""
    folder = folder.expanduser()
    if folder.is_dir():
        return
    try:
        folder.mkdir()
    except FileExistsError:
        if not folder.is_dir():
            raise ConfigError(f"{what} {folder} is a file, not a folder") from None
    except FileNotFoundError:
        raise ConfigError(
            f"{what} {folder} cannot be created: {folder.parent} does not exist "
            "(a typo? create the folder first if it is meant)"
        ) from None
    except PermissionError:
        raise ConfigError(f"{what} {folder} cannot be created: permission denied") from None


# (raw value or None, variable name, the field's default) -> the setting's value
Reader = Callable[[str | None, str, Any], Any]


# Each reader turns one raw value (None when unset) into the setting, or refuses it with a
# message that names the variable. A blank value means unset.


def whole(minimum: int = 0) -> Reader:
    def read(raw: str | None, name: str, default: Any) -> int:
        if raw is None or not raw.strip():
            return int(default)
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        return value

    return read


def flag(raw: str | None, name: str, default: Any) -> bool:
    if raw is None or not raw.strip():
        return bool(default)
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def pooler_mode(raw: str | None, name: str, default: Any) -> str:
    value = (raw or "").strip().lower() or default
    if value == "statement":
        raise ConfigError(
            f"{name}=statement cannot work: apflow-server runs transactions of several "
            "statements (claiming a batch, recording a run), which statement pooling splits "
            "across server connections; use PgBouncer's transaction (or session) pooling"
        )
    if value not in {"none", "session", "transaction"}:
        raise ConfigError(f"{name} must be none, session or transaction, not {raw!r}")
    return str(value)


def postgres_url(raw: str | None, name: str, default: Any) -> str | None:
    if raw is None or not raw.strip():
        return default if default is None else str(default)
    value = normalise_database_url(raw.strip())
    if not value.startswith("postgresql+asyncpg://"):
        raise ConfigError(f"{name} must be a postgresql:// URL")
    return value


def notify_mode(raw: str | None, name: str, default: Any) -> str:
    value = (raw or "").strip().lower() or default
    value = {"1": "process", "true": "process", "on": "process", "yes": "process"}.get(value, value)
    value = {"0": "off", "false": "off", "no": "off"}.get(value, value)
    if value not in {"process", "thread", "off"}:
        raise ConfigError(f"{name} must be process, thread or off, not {raw!r}")
    return str(value)


def seconds_list(raw: str | None, name: str, default: Any) -> tuple[int, ...]:
    """Comma-separated whole seconds, e.g. 5,300,1800."""
    items = _items(raw)
    if not items:
        return tuple(default)
    try:
        values = tuple(int(item) for item in items)
    except ValueError:
        raise ConfigError(
            f"{name} must be whole seconds separated by commas, got {raw!r}"
        ) from None
    if any(value < 0 for value in values):
        raise ConfigError(f"{name} must not hold negative seconds, got {raw!r}")
    return values


def text(raw: str | None, name: str, default: Any) -> str | None:
    """Free text, stripped."""
    return raw.strip() or default if raw is not None else default


def secret(raw: str | None, name: str, default: Any) -> str | None:
    """Taken exactly as given (a secret is compared byte for byte); blank is unset."""
    return raw if raw is not None and raw.strip() else default


def _items(raw: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (raw or "").split(",") if item.strip())


def names(raw: str | None, name: str, default: Any) -> tuple[str, ...] | None:
    return _items(raw) or default


def argv_prefixes(raw: str | None, name: str, default: Any) -> tuple[tuple[str, ...], ...]:
    """Comma-separated argv prefixes, each read as argv (shell quoting, never a shell).

    The program token is a bare name or an absolute path: a relative path would depend on
    the directory the service happens to run in.
    """
    entries = []
    for item in _items(raw):
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


def env_names(raw: str | None, name: str, default: Any) -> tuple[str, ...]:
    items = _items(raw)
    for item in items:
        if not _ENV_NAME.fullmatch(item):
            raise ConfigError(f"{name}: {item!r} is not an environment variable name")
    return items


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


def limiter_storage(raw: str | None, name: str, default: Any) -> str:
    """Refused now rather than when the first request needs it (the message names the scheme
    only: the URL may hold a Redis password)."""
    value = (raw or "").strip() or default
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


def base_url(raw: str | None, name: str, default: Any) -> str | None:
    """A base URL, without a trailing slash."""
    value = (raw or "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL such as https://apflow.example.com")
    if parts.query or parts.fragment or any(ch.isspace() for ch in value):
        raise ConfigError(f"{name} must be a plain base URL, without query, fragment or spaces")
    return value.rstrip("/")


def networks(raw: str | None, name: str, default: Any) -> tuple[Network, ...]:
    found = []
    for item in _items(raw):
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an address or CIDR range") from None
    return tuple(found)


def origins(raw: str | None, name: str, default: Any) -> tuple[str, ...]:
    found = _items(raw)
    for origin in found:
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            raise ConfigError(f"{name}: {origin!r} is not an origin such as https://app.example")
    return found


def time_zone(raw: str | None, name: str, default: Any) -> str:
    from apflow_server.core.zones import get_zone

    value = (raw or "").strip() or default
    try:
        get_zone(value, name)
    except ApflowError as exc:
        raise ConfigError(exc.message) from None
    return str(value)


def hmac_algorithm(raw: str | None, name: str, default: Any) -> str:
    value = (raw or "").strip() or default
    if value not in JWT_ALGORITHMS:
        raise ConfigError(f"jwt_algorithm must be one of {', '.join(JWT_ALGORITHMS)}")
    return str(value)


def log_format(raw: str | None, name: str, default: Any) -> str:
    value = (raw or "").strip().lower() or default
    if value not in {"text", "json"}:
        raise ConfigError(f"{name} must be text or json, not {raw!r}")
    return str(value)


def setting(
    default: Any,
    env: str,
    read: Reader,
    *,
    file_key: str | None = None,
    secret_value: bool = False,
) -> Any:
    """A field of Settings: its default, the environment variable that sets it, how that is
    read, and the key of config.cli.yaml that sets it when the variable is unset."""
    return field(
        default=default,
        repr=not secret_value,
        metadata={"env": env, "read": read, "file_key": file_key},
    )


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
    """Every setting, once: its default and the environment variable that sets it."""

    home: Path
    database_url: str
    # A connection pooler between this service and PostgreSQL: "transaction" (PgBouncer's
    # transaction pooling) turns off what needs one server connection for a whole session
    # (prepared statements kept across transactions, start-up parameters, LISTEN).
    database_pooler: str = setting("none", "APFLOW_DATABASE_POOLER", pooler_mode)
    # A direct connection (not through the pooler), used only to LISTEN for changes; without
    # it, behind a transaction pooler, schedulers notice other processes' changes by polling.
    database_listen_url: str | None = setting(
        None, "APFLOW_DATABASE_LISTEN_URL", postgres_url, secret_value=True
    )
    default_timezone: str = setting("UTC", "APFLOW_DEFAULT_TIMEZONE", time_zone)
    misfire_grace_seconds: int = setting(60, "APFLOW_MISFIRE_GRACE_SECONDS", whole())
    max_catchup_runs: int = setting(100, "APFLOW_MAX_CATCHUP_RUNS", whole(minimum=1))
    lease_seconds: int = setting(30, "APFLOW_LEASE_SECONDS", whole(minimum=2))
    # Modules imported at start-up (they register executors and verify hooks).
    plugins: tuple[str, ...] = setting((), "APFLOW_PLUGINS", names)
    # Accept executor ids no loaded plugin provides (an API tier without the workers' plugins).
    allow_unknown_executors: bool = setting(False, "APFLOW_ALLOW_UNKNOWN_EXECUTORS", flag)
    # text: one plain line per record; json: one JSON object per line.
    log_format: str = setting("text", "APFLOW_LOG_FORMAT", log_format)
    # At most this many occurrences per backfill (a bigger period is refused, naming `end`).
    max_backfill_occurrences: int = setting(
        10_000, "APFLOW_MAX_BACKFILL_OCCURRENCES", whole(minimum=1)
    )
    # How often every scheduler refreshes its instance row (three missed beats: not live).
    heartbeat_seconds: int = setting(10, "APFLOW_HEARTBEAT_SECONDS", whole(minimum=1))
    run_history_keep: int = setting(1000, "APFLOW_RUN_HISTORY_KEEP", whole(minimum=1))
    rest_allow_private_urls: bool = setting(False, "APFLOW_REST_ALLOW_PRIVATE_URLS", flag)
    rest_max_connections: int = setting(100, "APFLOW_REST_MAX_CONNECTIONS", whole(minimum=1))
    # At most rest_max_connections (checked in from_env).
    rest_max_keepalive: int = setting(100, "APFLOW_REST_MAX_KEEPALIVE", whole())
    rest_max_response_bytes: int = setting(
        1024 * 1024, "APFLOW_REST_MAX_RESPONSE_BYTES", whole(minimum=1)
    )
    # Notifications: an endpoint failing for this long (seconds; 5 days) is disabled.
    notify_disable_after: int = setting(5 * 86400, "APFLOW_NOTIFY_DISABLE_AFTER", whole(minimum=1))
    # Seconds one delivery attempt may take; an attempt is held for twice that, then another
    # instance may try again (its process died).
    notify_timeout_seconds: int = setting(15, "APFLOW_NOTIFY_TIMEOUT_SECONDS", whole(minimum=1))
    # Seconds to wait after each failed attempt before the next; after the last, give up.
    notify_retry_seconds: tuple[int, ...] = setting(
        (5, 300, 1800, 7200, 18000, 36000, 36000), "APFLOW_NOTIFY_RETRY_SECONDS", seconds_list
    )
    # How schedulers deliver notifications: "process" (a child process beside each claiming
    # scheduler), "thread" (a thread of its own in the scheduler's process) or "off" (only
    # `apflow notify worker` processes deliver them).
    notify_in_scheduler: str = setting("process", "APFLOW_NOTIFY_IN_SCHEDULER", notify_mode)
    # Endpoints on private and loopback addresses (refused by default, as for rest_executor).
    notify_allow_private_urls: bool = setting(False, "APFLOW_NOTIFY_ALLOW_PRIVATE_URLS", flag)
    # Encrypts notification endpoints' signing secrets in the database; every instance must
    # share it. Unset: a key generated in APFLOW_HOME/secret.key on first use.
    secret_key: str | None = setting(None, "APFLOW_SECRET_KEY", secret, secret_value=True)
    allow_command_executor: bool = setting(False, "APFLOW_ALLOW_COMMAND_EXECUTOR", flag)
    # argv prefixes: ("git", "ls-remote") allows `git ls-remote ...`; ("git",) allows any git.
    command_allowlist: tuple[tuple[str, ...], ...] = setting(
        (), "APFLOW_COMMAND_ALLOWLIST", argv_prefixes
    )
    # The only names a command task's `env` may set (none by default).
    command_env_allowlist: tuple[str, ...] = setting((), "APFLOW_COMMAND_ENV_ALLOWLIST", env_names)
    jwt_secret: str | None = setting(
        None, "APFLOW_JWT_SECRET", secret, file_key="jwt_secret", secret_value=True
    )
    jwt_algorithm: str = setting(
        "HS256", "APFLOW_JWT_ALGORITHM", hmac_algorithm, file_key="jwt_algorithm"
    )
    jwt_audience: str | None = setting(None, "APFLOW_JWT_AUDIENCE", text, file_key="jwt_audience")
    jwt_issuer: str | None = setting(None, "APFLOW_JWT_ISSUER", text, file_key="jwt_issuer")
    admin_auth_token: str | None = setting(
        None, "APFLOW_ADMIN_AUTH_TOKEN", secret, file_key="admin_auth_token", secret_value=True
    )
    api_server_url: str | None = setting(
        None, "APFLOW_API_SERVER_URL", text, file_key="api_server_url"
    )
    # Where other machines reach this server (what generated CronJobs, crontab lines and
    # webhook URLs call).
    public_url: str | None = setting(None, "APFLOW_PUBLIC_URL", base_url)
    webhook_secret: str | None = setting(None, "APFLOW_WEBHOOK_SECRET", secret, secret_value=True)
    webhook_tolerance_seconds: int = setting(
        300, "APFLOW_WEBHOOK_TOLERANCE_SECONDS", whole(minimum=1)
    )
    webhook_allowed_ips: tuple[Network, ...] = setting((), "APFLOW_WEBHOOK_ALLOWED_IPS", networks)
    trusted_proxies: tuple[Network, ...] = setting((), "APFLOW_TRUSTED_PROXIES", networks)
    webhook_rate_limit: int = setting(0, "APFLOW_WEBHOOK_RATE_LIMIT", whole())
    rate_limit_storage: str = setting(
        f"{MEMORY_SCHEME}://", "APFLOW_RATE_LIMIT_STORAGE", limiter_storage
    )
    max_body_bytes: int = 1024 * 1024  # of one request; not configurable
    # Bounds on one JSON-RPC request: members of a batch, bytes of the reply, compute seconds.
    max_batch: int = setting(100, "APFLOW_MAX_BATCH", whole(minimum=1))
    max_response_bytes: int = setting(
        16 * 1024 * 1024, "APFLOW_MAX_RESPONSE_BYTES", whole(minimum=65536)
    )
    max_compute_seconds: int = setting(2, "APFLOW_MAX_COMPUTE_SECONDS", whole(minimum=1))
    # The largest result a task may store (JSON bytes); results flow into dependents.
    max_result_bytes: int = setting(
        DEFAULT_MAX_RESULT_BYTES, "APFLOW_MAX_RESULT_BYTES", whole(minimum=1024)
    )
    # Host names the HTTP service answers to (None: the loopback names; see api/browsers.py)
    # and the web origins allowed to call it from a browser (CORS; none by default).
    allowed_hosts: tuple[str, ...] | None = setting(None, "APFLOW_ALLOWED_HOSTS", names)
    cors_origins: tuple[str, ...] = setting((), "APFLOW_CORS_ORIGINS", origins)

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
        file = load_config_file(home)
        values: dict[str, Any] = {}
        for declared in fields(cls):
            if "env" not in declared.metadata:
                continue
            name, file_key = declared.metadata["env"], declared.metadata["file_key"]
            raw = env.get(name)
            if (raw is None or not raw.strip()) and file_key is not None:
                raw = file.get(file_key)
            values[declared.name] = declared.metadata["read"](raw, name, declared.default)
        settings = cls(home=home, database_url=normalise_database_url(url), **values)
        if settings.rest_max_keepalive > settings.rest_max_connections:
            raise ConfigError(
                f"APFLOW_REST_MAX_KEEPALIVE ({settings.rest_max_keepalive}) must not exceed "
                f"APFLOW_REST_MAX_CONNECTIONS ({settings.rest_max_connections})"
            )
        return settings


def environment_variables() -> dict[str, str]:
    """Each setting's environment variable, by field name."""
    return {
        declared.name: declared.metadata["env"]
        for declared in fields(Settings)
        if "env" in declared.metadata
    }
