"""`apflow serve` and `apflow config init|show|gen-token` as real subprocesses of the console
script, in a temporary APFLOW_HOME."""

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


# ---------------------------------------------------------------------- JWT hygiene

SHORT_SECRET = "s" * 31  # one byte under the minimum


def test_serve_refuses_a_short_jwt_secret_on_a_public_address(tmp_path: Path) -> None:
    for secret in ("x", SHORT_SECRET):
        result = run(
            tmp_path, "serve", "--host", "0.0.0.0", "--port", "0", APFLOW_JWT_SECRET=secret
        )
        assert result.returncode == 1, result.stderr
        line = one_error_line(result.stderr, "APFLOW_JWT_SECRET", "32 bytes", "0.0.0.0")
        assert secret not in line.replace("APFLOW_JWT_SECRET", "")
        assert result.stdout == ""


def test_serve_warns_once_about_a_short_jwt_secret_on_loopback(tmp_path: Path) -> None:
    serve = Serve(tmp_path, "--no-scheduler", APFLOW_JWT_SECRET=SHORT_SECRET)
    try:
        serve.wait_ready()
    finally:
        code = serve.terminate()
    assert code == 0, serve.output
    warnings = [line for line in serve.output.splitlines() if "APFLOW_JWT_SECRET" in line]
    assert len(warnings) == 1, serve.output
    assert "WARNING" in warnings[0] and "32 bytes" in warnings[0]
    assert SHORT_SECRET not in serve.output


def test_serve_says_nothing_about_a_secret_of_32_bytes(tmp_path: Path) -> None:
    serve = Serve(
        tmp_path,
        "--host",
        "0.0.0.0",
        "--no-scheduler",
        APFLOW_JWT_SECRET="é" * 16,
        APFLOW_ALLOWED_HOSTS="127.0.0.1",
    )
    try:
        serve.wait_ready()
    finally:
        serve.terminate()
    assert "APFLOW_JWT_SECRET" not in serve.output


def claims_of(home: Path, *args: str, **env: str) -> dict[str, object]:
    result = run(home, "config", "gen-token", *args, **env)
    assert result.returncode == 0, result.stderr
    secret = (
        env.get("APFLOW_JWT_SECRET")
        or yaml.safe_load((home / "config.cli.yaml").read_text())["jwt_secret"]
    )
    claims: dict[str, object] = jwt.decode(
        result.stdout.strip(),
        secret,
        algorithms=["HS256"],
        options={"verify_aud": False, "verify_exp": False},  # exp: compared below
    )
    return claims


def test_gen_token_always_sets_exp_within_one_second_and_ten_years(tmp_path: Path) -> None:
    assert run(tmp_path, "config", "init").returncode == 0
    default = claims_of(tmp_path)
    assert default["exp"] == default["iat"] + 86400  # type: ignore[operator]
    shortest = claims_of(tmp_path, "--expires-in", "1")
    assert shortest["exp"] == shortest["iat"] + 1  # type: ignore[operator]
    longest = claims_of(tmp_path, "--expires-in", str(10 * 365 * 86400))
    assert longest["exp"] == longest["iat"] + 10 * 365 * 86400  # type: ignore[operator]
    for refused in ("0", "-5", str(10 * 365 * 86400 + 1)):
        result = run(tmp_path, "config", "gen-token", "--expires-in", refused)
        assert result.returncode == 2, (refused, result.stderr)
        one_error_line(result.stderr, "--expires-in", "1", "10 years")
        assert result.stdout == ""


def test_gen_token_puts_in_the_configured_audience_and_issuer(tmp_path: Path) -> None:
    claims = claims_of(
        tmp_path,
        "--subject",
        "ops",
        APFLOW_JWT_SECRET="k" * 40,
        APFLOW_JWT_AUDIENCE="apflow-production",
        APFLOW_JWT_ISSUER="apflow-cli",
    )
    assert claims["aud"] == "apflow-production" and claims["iss"] == "apflow-cli"
    plain = claims_of(tmp_path, APFLOW_JWT_SECRET="k" * 40)
    assert "aud" not in plain and "iss" not in plain


def test_a_live_server_checks_exp_audience_and_issuer(tmp_path: Path) -> None:
    secret = "k" * 40
    scope = {"APFLOW_JWT_AUDIENCE": "apflow-production", "APFLOW_JWT_ISSUER": "apflow-cli"}
    serve = Serve(tmp_path, "--no-scheduler", APFLOW_JWT_SECRET=secret, **scope)
    listing = {"jsonrpc": "2.0", "method": "tasks.list", "id": 1}
    url = f"http://127.0.0.1:{serve.port}/tasks/"

    def call(value: str) -> httpx.Response:
        return httpx.post(url, json=listing, headers={"Authorization": f"Bearer {value}"})

    try:
        serve.wait_ready()
        issued = run(tmp_path, "config", "gen-token", APFLOW_JWT_SECRET=secret, **scope)
        assert call(issued.stdout.strip()).json()["result"]["total"] == 0
        now = int(time.time())
        forever = jwt.encode(
            {"sub": "a", "aud": "apflow-production", "iss": "apflow-cli"}, secret, "HS256"
        )
        refused = call(forever)
        assert refused.status_code == 401
        assert "exp" in refused.json()["error"]["message"]
        elsewhere = jwt.encode(
            {"sub": "a", "aud": "apflow-staging", "iss": "apflow-cli", "exp": now + 60},
            secret,
            "HS256",
        )
        assert call(elsewhere).status_code == 401
        unscoped = run(tmp_path, "config", "gen-token", APFLOW_JWT_SECRET=secret)
        assert call(unscoped.stdout.strip()).status_code == 401
    finally:
        serve.terminate()
    assert "Traceback" not in serve.output


def test_audience_and_issuer_may_come_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.cli.yaml").write_text(
        yaml.safe_dump({"jwt_secret": "k" * 40, "jwt_audience": "apflow-prod", "jwt_issuer": "ops"})
    )
    shown = json.loads(run(tmp_path, "config", "show", "-f", "json").stdout)
    assert (shown["jwt_audience"], shown["jwt_issuer"]) == ("apflow-prod", "ops")
    overridden = run(tmp_path, "config", "show", "-f", "json", APFLOW_JWT_AUDIENCE="other")
    assert json.loads(overridden.stdout)["jwt_audience"] == "other"
