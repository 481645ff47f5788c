"""APFLOW_RATE_LIMIT_STORAGE: checked before the server starts (one line, no traceback), and a
Redis storage shares the webhook rate limit between server processes.

The Redis tests use the server on 127.0.0.1:6379 and skip, saying why, when the redis package
or the server is missing. Each test limits a client address of its own (a random IPv6
documentation address sent through a trusted proxy), so parallel runs never share a count.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import ServiceFactory
from api_support import ServerProcess, client_for, server_env
from test_api_cli import one_error_line, run

from apflow_server.config import ConfigError, Settings

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 3


def redis_unavailable() -> str | None:
    """Why the shared-limit tests cannot run here, or None."""
    if importlib.util.find_spec("redis") is None:
        return "the redis package is not installed (pip install 'apflow-server[redis]')"
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"no Redis server at {REDIS_URL}: {exc}"
    return None


needs_redis = pytest.mark.skipif(redis_unavailable() is not None, reason=str(redis_unavailable()))


def fresh_address() -> str:
    """A client address no other test (or test run) limits."""
    return str(ipaddress.IPv6Address("2001:db8::") + secrets.randbits(64))


# ---------------------------------------------------------------------- checked at start


@pytest.mark.parametrize(
    "value", ["bogus://x", "memcached://127.0.0.1:11211", "127.0.0.1:6379", "redis"]
)
def test_an_unknown_storage_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"APFLOW_HOME": "/nonexistent", "APFLOW_RATE_LIMIT_STORAGE": value})
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith("APFLOW_RATE_LIMIT_STORAGE: ")
    assert "memory://" in message and "redis://" in message


def test_the_message_never_repeats_a_password_in_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"APFLOW_RATE_LIMIT_STORAGE": "bogus://user:hunter2@host:1"})
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize(
    "value", ["memory://", REDIS_URL, "rediss://cache:6380", "redis+unix:///run/redis.sock"]
)
def test_supported_storages_are_accepted(value: str) -> None:
    settings = Settings.from_env({"APFLOW_RATE_LIMIT_STORAGE": value})
    assert settings.rate_limit_storage == value


def test_serve_refuses_an_unknown_storage_in_one_line(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--port", "0", APFLOW_RATE_LIMIT_STORAGE="bogus://x")
    assert result.returncode == 1, result.stderr
    one_error_line(result.stderr, "APFLOW_RATE_LIMIT_STORAGE", "bogus")
    assert result.stdout == ""


@pytest.fixture
def without_redis(tmp_path: Path) -> str:
    """A PYTHONPATH entry on which `import redis` fails as it does where it is not installed."""
    shadow = tmp_path / "no-redis"
    (shadow / "redis").mkdir(parents=True)
    (shadow / "redis" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'redis'\", name='redis')\n"
    )
    return str(shadow)


def test_serve_refuses_redis_without_the_extra_in_one_line(
    tmp_path: Path, without_redis: str
) -> None:
    env = server_env(tmp_path)
    result = run(
        tmp_path,
        "serve",
        "--port",
        "0",
        APFLOW_RATE_LIMIT_STORAGE=REDIS_URL,
        PYTHONPATH=f"{without_redis}:{env['PYTHONPATH']}",
    )
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr, "APFLOW_RATE_LIMIT_STORAGE", "redis extra")
    assert "pip install 'apflow-server[redis]'" in line
    assert result.stdout == ""


# ---------------------------------------------------------------------- shared by Redis


@needs_redis
def test_two_apps_share_the_count_through_redis(make_protocol_service: ServiceFactory) -> None:
    proxy = ipaddress.ip_network("10.0.0.0/8")
    apps = [
        make_protocol_service(
            client=("10.0.0.1", 1000 + n),
            trusted_proxies=(proxy,),
            webhook_rate_limit=LIMIT,
            rate_limit_storage=REDIS_URL,
        )
        for n in range(2)
    ]
    client = {"X-Forwarded-For": fresh_address()}
    first, second = apps
    statuses = [
        first.api.webhook("missing", headers=client).status,
        second.api.webhook("missing", headers=client).status,
        first.api.webhook("missing", headers=client).status,
    ]
    assert statuses == [404] * LIMIT
    assert second.api.webhook("missing", headers=client).status == 429
    assert first.api.webhook("missing", headers=client).status == 429
    # another client still has its whole allowance
    assert second.api.webhook("missing", headers={"X-Forwarded-For": fresh_address()}).status == 404


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers = []
    try:
        for n in range(2):
            home = tmp_path / f"server-{n}"
            home.mkdir()
            env = server_env(
                home,
                APFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{home / 'live.db'}",
                APFLOW_WEBHOOK_RATE_LIMIT=str(LIMIT),
                APFLOW_RATE_LIMIT_STORAGE=REDIS_URL,
                APFLOW_TRUSTED_PROXIES="127.0.0.1",
            )
            servers.append(ServerProcess(env, "--no-scheduler"))
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
            assert "Traceback" not in server.output, server.output


@needs_redis
def test_two_live_servers_share_the_count_through_redis(two_servers: list[ServerProcess]) -> None:
    client = {"X-Forwarded-For": fresh_address()}
    with client_for(two_servers[0]) as first, client_for(two_servers[1]) as second:
        path = "/webhook/trigger/missing"
        statuses = [
            first.post(path, headers=client).status_code,
            second.post(path, headers=client).status_code,
            first.post(path, headers=client).status_code,
        ]
        assert statuses == [404] * LIMIT
        limited = second.post(path, headers=client)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert first.post(path, headers=client).status_code == 429


def test_an_app_built_from_settings_by_hand_refuses_the_storage_before_serving(
    tmp_path: Path,
) -> None:
    """Settings made in code skip from_env's check: create_app still refuses at once (before
    any server starts), as a ConfigError rather than limits' own exception."""
    from apflow_server.api.app import create_app

    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        rate_limit_storage="bogus://x",
    )
    with pytest.raises(ConfigError) as caught:
        create_app(settings)
    assert caught.value.message.startswith("APFLOW_RATE_LIMIT_STORAGE: ")
    assert "\n" not in caught.value.message


def test_an_unreachable_storage_lets_requests_through_with_a_warning(
    make_protocol_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The limit throttles guessing; a Redis outage must not take the webhook down with it."""
    pytest.importorskip("redis")
    service = make_protocol_service(
        webhook_rate_limit=1, rate_limit_storage="redis://127.0.0.1:1/0"
    )
    with caplog.at_level(logging.WARNING, logger="apflow_server.api.webhook"):
        statuses = [service.api.webhook("missing").status for _ in range(3)]
    assert statuses == [404, 404, 404]  # answered, not limited: the limit is one a minute
    warnings = [r for r in caplog.records if "rate-limit storage" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not once a request
