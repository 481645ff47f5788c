"""The Dockerfile and docker-compose.yml, checked without a Docker engine: their commands,
healthchecks and settings must point at real entry points of the package."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

from apflow_server.api.app import create_app
from apflow_server.cli.main import apflow
from apflow_server.config import Settings, normalise_database_url

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_SOURCE = (ROOT / "apflow_server" / "config.py").read_text()


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(item, str) for item in parsed)
    return parsed


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = project["project"]["scripts"]
    return scripts


def parse_cli(argv: list[str]) -> click.Context:
    """Resolve `apflow ...` argv to its command, failing on unknown commands or options."""
    assert argv[0] == "apflow" and console_scripts()["apflow"] == "apflow_server.cli.main:main"
    group_context = apflow.make_context("apflow", argv[1:], resilient_parsing=False)
    name, command, rest = apflow.resolve_command(group_context, argv[1:])
    assert command is not None, f"no command {name!r}"
    return command.make_context(name or "", rest, parent=group_context)


def route_paths() -> set[str]:
    app = create_app(Settings(home=Path("/nonexistent"), database_url="sqlite:///:memory:"))
    return {route.path for route in app.routes}  # type: ignore[attr-defined]


def test_the_image_is_slim_and_runs_as_a_named_non_root_user() -> None:
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    users = [value for keyword, value in stage if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert any(
        keyword == "RUN" and "useradd" in value and users[-1] in value for keyword, value in stage
    )


def test_the_command_is_apflow_serve_with_migrations_on_the_exposed_port() -> None:
    stage = final_stage()
    [command] = [exec_form(value) for keyword, value in stage if keyword == "CMD"]
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in stage)
    context = parse_cli(command)
    assert context.command.name == "serve"
    assert context.params["migrate"] is True
    assert context.params["host"] == "0.0.0.0"
    exposed = {value for keyword, value in stage if keyword == "EXPOSE"}
    assert exposed == {str(context.params["port"])}


def test_the_healthcheck_probes_a_real_health_route() -> None:
    [check] = [value for keyword, value in final_stage() if keyword == "HEALTHCHECK"]
    options, _, command = check.partition("CMD ")
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<healthcheck>", "exec")  # valid Python
    [url] = re.findall(r"http://[^'\"]+", argv[2])
    assert urlsplit(url).path in route_paths()
    assert urlsplit(url).port == 8000
    assert "--interval=" in options and "--timeout=" in options


def test_what_the_image_copies_exists() -> None:
    for keyword, value in dockerfile_instructions():
        if keyword == "COPY" and not value.startswith("--from"):
            *sources, _destination = shlex.split(value)
            for source in sources:
                assert (ROOT / source).exists(), source


def test_the_environment_named_in_the_image_is_read_by_the_service() -> None:
    for keyword, value in final_stage():
        if keyword == "ENV":
            for name in re.findall(r"(APFLOW_[A-Z_]+)=", value):
                assert f'"{name}"' in CONFIG_SOURCE, name


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_postgres_with_a_healthcheck(compose: dict) -> None:  # type: ignore[type-arg]
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_DB"] == "apflow"


def test_compose_starts_the_service_on_that_postgres(compose: dict) -> None:  # type: ignore[type-arg]
    service = compose["services"]["apflow"]
    assert service["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    environment = service["environment"]
    for name in environment:
        assert name.startswith("APFLOW_") and f'"{name}"' in CONFIG_SOURCE, name
    url = environment["APFLOW_DATABASE_URL"].replace("${POSTGRES_PASSWORD:-apflow}", "pw")
    assert normalise_database_url(url).startswith("postgresql+asyncpg://")
    parts = urlsplit(url)
    assert parts.hostname == "postgres" and parts.path == "/apflow"
    assert "?" in environment["APFLOW_JWT_SECRET"]  # required: compose refuses to start without
    [mapping] = service["ports"]
    assert mapping.split(":")[-1] == "8000"
