"""`apflow serve` and `apflow config init|show|gen-token` as real subprocesses of the console
script, in a temporary APFLOW_HOME (SPEC §7, §9)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from api_harness import ServiceFactory
from api_support import free_port, server_env

from apflow_server.config import Settings


def apflow_executable() -> str:
    beside = Path(sys.executable).parent / "apflow"
    if beside.exists():
        return str(beside)
    found = shutil.which("apflow")
    assert found, "the apflow console script is not installed"
    return found


def run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [apflow_executable(), *args],
        env=server_env(home, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(stderr: str, *fragments: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


class Serve:
    """`apflow serve` running in the background."""

    def __init__(self, home: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.log = home / f"serve-{self.port}.log"
        self._handle = self.log.open("w")
        self.process = subprocess.Popen(
            [apflow_executable(), "serve", "--port", str(self.port), *args],
            env=server_env(home, APFLOW_DATABASE_URL=f"sqlite:///{home / 'cli.db'}", **env),
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                response = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(self.log.read_text())

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._handle.close()
        return code

    @property
    def output(self) -> str:
        return self.log.read_text()


# ---------------------------------------------------------------------- apflow serve


def test_serve_refuses_a_public_address_with_auth_off(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 1
    one_error_line(result.stderr, "--insecure", "0.0.0.0")
    assert result.stdout == ""


def test_serve_on_a_public_address_needs_the_host_names(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--insecure",
    )
    assert result.returncode == 1
    one_error_line(result.stderr, "APFLOW_ALLOWED_HOSTS", "0.0.0.0")


def test_serve_binds_a_public_address_with_insecure_or_with_auth(tmp_path: Path) -> None:
    insecure_home, secured_home = tmp_path / "insecure", tmp_path / "secured"
    insecure_home.mkdir()
    secured_home.mkdir()
    hosts = {"APFLOW_ALLOWED_HOSTS": "127.0.0.1"}
    insecure = Serve(insecure_home, "--host", "0.0.0.0", "--insecure", "--no-scheduler", **hosts)
    secured = Serve(
        secured_home,
        "--host",
        "0.0.0.0",
        "--no-scheduler",
        APFLOW_JWT_SECRET="s" * 64,
        **hosts,
    )
    try:
        insecure.wait_ready()
        secured.wait_ready()
        listed = httpx.post(
            f"http://127.0.0.1:{insecure.port}/tasks/",
            json={"jsonrpc": "2.0", "method": "tasks.list", "id": 1},
        )
        assert listed.json()["result"]["total"] == 0
        refused = httpx.post(
            f"http://127.0.0.1:{secured.port}/tasks/",
            json={"jsonrpc": "2.0", "method": "tasks.list", "id": 1},
        )
        assert refused.status_code == 401
    finally:
        codes = [insecure.terminate(), secured.terminate()]
    for code, serve in zip(codes, (insecure, secured), strict=True):
        assert code in {0, -signal.SIGTERM}, serve.output
        assert "Application shutdown complete" in serve.output
        assert "Traceback" not in serve.output


def test_serve_refuses_a_taken_port_with_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = run(tmp_path, "serve", "--port", str(port))
    assert result.returncode == 1
    one_error_line(result.stderr, str(port))
    assert "Traceback" not in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("APFLOW_COMMAND_ALLOWLIST", "echo hello, git 'ls-remote", "No closing quotation"),
        ("APFLOW_COMMAND_ALLOWLIST", "bin/tool", "a bare name or an absolute path"),
        ("APFLOW_COMMAND_ENV_ALLOWLIST", "LANG, GIT-SSH", "'GIT-SSH'"),
    ],
)
def test_serve_refuses_malformed_command_allowlists_with_one_line(
    tmp_path: Path, variable: str, value: str, fragment: str
) -> None:
    result = run(tmp_path, "serve", "--port", str(free_port()), **{variable: value})
    assert result.returncode == 1
    one_error_line(result.stderr, variable, fragment)
    assert result.stdout == ""


def test_sigterm_stops_serve_with_exit_status_0(tmp_path: Path) -> None:
    serve = Serve(tmp_path)
    try:
        serve.wait_ready()
    finally:
        code = serve.terminate()
    assert "Application shutdown complete" in serve.output
    assert code == 0, serve.output


# ---------------------------------------------------------------------- apflow config


def test_config_init_writes_a_private_file_with_a_jwt_secret(tmp_path: Path) -> None:
    result = run(tmp_path, "config", "init")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "config.cli.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = yaml.safe_load(path.read_text())
    secret = values["jwt_secret"]
    assert isinstance(secret, str) and len(secret) >= 32
    assert secret not in result.stdout + result.stderr
    again = run(tmp_path, "config", "init")
    assert again.returncode == 0
    assert yaml.safe_load(path.read_text())["jwt_secret"] == secret  # kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_config_show_never_prints_the_secret(tmp_path: Path) -> None:
    assert run(tmp_path, "config", "init").returncode == 0
    secret = yaml.safe_load((tmp_path / "config.cli.yaml").read_text())["jwt_secret"]
    webhook_secret = "w" * 40
    table = run(tmp_path, "config", "show", APFLOW_WEBHOOK_SECRET=webhook_secret)
    as_json = run(tmp_path, "config", "show", "-f", "json", APFLOW_WEBHOOK_SECRET=webhook_secret)
    for result in (table, as_json):
        assert result.returncode == 0, result.stderr
        assert secret not in result.stdout + result.stderr
        assert webhook_secret not in result.stdout + result.stderr
    shown = json.loads(as_json.stdout)
    assert shown["jwt_secret"] == "(set)"
    assert shown["auth"] == "on"


def test_gen_token_makes_an_admin_token_the_server_accepts(
    tmp_path: Path, make_protocol_service: ServiceFactory
) -> None:
    assert run(tmp_path, "config", "init").returncode == 0
    result = run(tmp_path, "config", "gen-token", "--subject", "u", "--role", "admin")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    admin = lines[0]
    secret = yaml.safe_load((tmp_path / "config.cli.yaml").read_text())["jwt_secret"]
    claims = jwt.decode(admin, secret, algorithms=["HS256"])
    assert claims["sub"] == "u"
    assert claims["roles"] == ["admin"]
    assert claims["exp"] > time.time()
    plain = run(tmp_path, "config", "gen-token", "--subject", "v").stdout.strip()

    # A server reading the same APFLOW_HOME (its config file holds the secret).
    settings = Settings.from_env({"APFLOW_HOME": str(tmp_path)})
    assert settings.jwt_secret == secret
    service = make_protocol_service(jwt_secret=settings.jwt_secret)
    gift = service.api.call("tasks.create", {"name": "for w", "user_id": "w"}, auth=admin)
    assert gift["user_id"] == "w"
    assert service.api.call("tasks.list", {"user_id": "w"}, auth=admin)["total"] == 1
    refused = service.api.fail("tasks.create", {"name": "x", "user_id": "w"}, auth=plain)
    assert refused["code"] == -32003
    assert service.api.call("tasks.list", {}, auth=plain)["total"] == 0


def test_gen_token_without_a_secret_is_one_line(tmp_path: Path) -> None:
    result = run(tmp_path, "config", "gen-token", "--subject", "u", "--role", "admin")
    assert result.returncode == 1
    one_error_line(result.stderr, "secret")
    assert result.stdout == ""
    assert not (tmp_path / "config.cli.yaml").exists()
