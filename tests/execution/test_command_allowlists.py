"""command_executor's two allowlists, as a task author who wants to escape them would test them.

APFLOW_COMMAND_ENV_ALLOWLIST: a task's `env` may set only the names it lists (none by default),
so variables that make an allowed program run another one (GIT_SSH_COMMAND, GIT_CONFIG_*,
LD_PRELOAD, PATH...) are refused before anything starts. APFLOW_COMMAND_ALLOWLIST: an entry is
an argv prefix (`git ls-remote`), so options placed before the allowed subcommand
(`git -c core.sshCommand=...`) are refused; a bare program name still allows any arguments.
The escapes use real programs (git, sh, echo, true, env) and a marker file that the escaped
command would create.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from execution_support import Harness

from apflow_server.config import ConfigError, Settings
from apflow_server.core.types import RunStatus
from apflow_server.execution import ExecutionContext, ExecutionError
from apflow_server.execution.builtins import command_executor

CONTEXT = ExecutionContext(
    task_id="t1", task_name="t", run_id="r1", user_id=None, params={}, attempt=1
)
GIT = shutil.which("git")
ECHO = shutil.which("echo") or "/bin/echo"
REAL_ECHO = os.path.realpath(ECHO)  # what an absolute entry names
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def commands_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APFLOW_ALLOW_COMMAND_EXECUTOR", "1")
    monkeypatch.delenv("APFLOW_COMMAND_ALLOWLIST", raising=False)
    monkeypatch.delenv("APFLOW_COMMAND_ENV_ALLOWLIST", raising=False)


def allow(monkeypatch: pytest.MonkeyPatch, commands: str = "", env: str = "") -> None:
    monkeypatch.setenv("APFLOW_COMMAND_ALLOWLIST", commands)
    monkeypatch.setenv("APFLOW_COMMAND_ENV_ALLOWLIST", env)


def empty_git_repository(path: Path) -> Path:
    assert GIT is not None
    subprocess.run([GIT, "init", "-q", str(path)], check=True)
    return path


# ---------------------------------------------------------------------- env


@needs_git
async def test_git_ssh_command_in_env_does_not_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The reported escape: git is allowed, and GIT_SSH_COMMAND makes it run a shell line."""
    allow(monkeypatch, "git")
    marker = tmp_path / "escaped"
    inputs = {
        "command": ["git", "ls-remote", "ssh://apflow.invalid/repo"],
        "env": {"GIT_SSH_COMMAND": f"touch {marker} #"},
        "cwd": str(tmp_path),
    }
    with pytest.raises(ExecutionError) as refused:
        await command_executor(inputs, CONTEXT)
    assert "GIT_SSH_COMMAND" in str(refused.value)
    assert "APFLOW_COMMAND_ENV_ALLOWLIST" in str(refused.value)
    assert not marker.exists()


@needs_git
async def test_git_config_variables_in_env_do_not_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GIT_CONFIG_COUNT/KEY/VALUE set any configuration, here an alias to a shell command."""
    allow(monkeypatch, "git")
    marker = tmp_path / "escaped"
    inputs = {
        "command": ["git", "pwn"],
        "env": {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "alias.pwn",
            "GIT_CONFIG_VALUE_0": f"!touch {marker}",
        },
        "cwd": str(tmp_path),
    }
    with pytest.raises(ExecutionError) as refused:
        await command_executor(inputs, CONTEXT)
    assert "GIT_CONFIG_COUNT" in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    ["GIT_SSH_COMMAND", "LD_PRELOAD", "PATH", "GIT_CONFIG_COUNT", "PYTHONPATH", "HARMLESS"],
)
async def test_no_env_name_is_allowed_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    allow(monkeypatch, "sh")
    marker = tmp_path / "ran"
    inputs = {"command": ["sh", "-c", f"touch {marker}"], "env": {name: "x"}}
    with pytest.raises(ExecutionError) as refused:
        await command_executor(inputs, CONTEXT)
    assert str(refused.value) == (
        f"inputs.env: {name!r} may not be set: it is not in APFLOW_COMMAND_ENV_ALLOWLIST"
    )
    assert not marker.exists()


async def test_listed_env_names_reach_the_command_and_others_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    allow(monkeypatch, "env", env="APFLOW_T_GREETING, APFLOW_T_OTHER")
    result = await command_executor(
        {"command": ["env"], "env": {"APFLOW_T_GREETING": "hello", "APFLOW_T_OTHER": 7}}, CONTEXT
    )
    assert "APFLOW_T_GREETING=hello\n" in result["stdout"]
    assert "APFLOW_T_OTHER=7\n" in result["stdout"]

    with pytest.raises(ExecutionError) as refused:
        await command_executor(
            {"command": ["env"], "env": {"APFLOW_T_GREETING": "hello", "LD_PRELOAD": "/x.so"}},
            CONTEXT,
        )
    assert "'LD_PRELOAD'" in str(refused.value)
    # Names are matched exactly: case matters on POSIX.
    with pytest.raises(ExecutionError):
        await command_executor({"command": ["env"], "env": {"apflow_t_greeting": "x"}}, CONTEXT)


async def test_env_must_be_an_object() -> None:
    with pytest.raises(ExecutionError) as refused:
        await command_executor({"command": ["true"], "env": ["PATH=/tmp"]}, CONTEXT)
    assert str(refused.value) == "inputs.env: must be an object of variable names and values"


async def test_an_empty_env_is_fine() -> None:
    result = await command_executor({"command": ["true"], "env": {}}, CONTEXT)
    assert result["returncode"] == 0


# ---------------------------------------------------------------------- argv prefixes


@needs_git
@pytest.mark.parametrize(
    "command",
    [
        ["git", "-c", "core.sshCommand=touch {marker} #", "ls-remote", "ssh://apflow.invalid/r"],
        ["git", "-c", "alias.x=!touch {marker}", "x"],
        ["git", "--exec-path={dir}", "ls-remote", "."],
        ["git", "ls-remot", "."],
        ["git"],
    ],
    ids=["ssh-command-option", "shell-alias", "option-first", "other-subcommand", "too-short"],
)
async def test_a_prefix_entry_refuses_other_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    allow(monkeypatch, "git ls-remote")
    marker = tmp_path / "escaped"
    argv = [part.format(marker=marker, dir=tmp_path) for part in command]
    with pytest.raises(ExecutionError) as refused:
        await command_executor({"command": argv, "cwd": str(tmp_path)}, CONTEXT)
    assert str(refused.value) == (
        "'git' is in APFLOW_COMMAND_ALLOWLIST only with other leading arguments"
    )
    assert not marker.exists()


@needs_git
async def test_a_prefix_entry_runs_its_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    allow(monkeypatch, "git ls-remote")
    repository = empty_git_repository(tmp_path / "repo")
    result = await command_executor({"command": ["git", "ls-remote", str(repository)]}, CONTEXT)
    assert result == {"returncode": 0, "stdout": "", "stderr": ""}


async def test_prefixes_match_token_by_token(monkeypatch: pytest.MonkeyPatch) -> None:
    allow(monkeypatch, "echo hello, true, sh -c 'echo fixed'")

    result = await command_executor({"command": ["echo", "hello", "world"]}, CONTEXT)
    assert result["stdout"] == "hello world\n"
    assert (await command_executor({"command": ["echo", "hello"]}, CONTEXT))["returncode"] == 0
    # A bare entry allows any arguments.
    assert (await command_executor({"command": ["true", "-x", "y"]}, CONTEXT))["returncode"] == 0
    # A quoted entry is one token, as a shell would read it (but no shell runs).
    result = await command_executor({"command": ["sh", "-c", "echo fixed"]}, CONTEXT)
    assert result["stdout"] == "fixed\n"

    for argv in (
        ["echo", "bye"],
        ["echo"],
        ["echo", "hello2"],
        ["echo", "-n", "hello"],
        ["sh", "-c", "echo fixed; touch /tmp/x"],
        ["sh", "-c", "echo", "fixed"],
        ["sh"],
    ):
        with pytest.raises(ExecutionError) as refused:
            await command_executor({"command": argv}, CONTEXT)
        assert str(refused.value) == (
            f"{argv[0]!r} is in APFLOW_COMMAND_ALLOWLIST only with other leading arguments"
        ), argv

    with pytest.raises(ExecutionError) as unlisted:
        await command_executor({"command": ["env"]}, CONTEXT)
    assert str(unlisted.value) == "'env' is not in APFLOW_COMMAND_ALLOWLIST"


async def test_an_absolute_path_entry_matches_the_resolved_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    echo = ECHO
    allow(monkeypatch, f"{REAL_ECHO} hello")
    assert (await command_executor({"command": ["echo", "hello"]}, CONTEXT))["stdout"] == "hello\n"
    result = await command_executor({"command": [echo, "hello", "there"]}, CONTEXT)
    assert result["stdout"] == "hello there\n"
    with pytest.raises(ExecutionError):
        await command_executor({"command": [echo, "bye"]}, CONTEXT)


# ---------------------------------------------------------------------- settings


def test_allowlist_entries_are_parsed_as_argv() -> None:
    settings = Settings.from_env(
        {
            "APFLOW_COMMAND_ALLOWLIST": " git ls-remote , echo 'a b' c,/usr/bin/true,",
            "APFLOW_COMMAND_ENV_ALLOWLIST": "LANG, TZ ,GIT_TERMINAL_PROMPT",
        }
    )
    assert settings.command_allowlist == (
        ("git", "ls-remote"),
        ("echo", "a b", "c"),
        ("/usr/bin/true",),
    )
    assert settings.command_env_allowlist == ("LANG", "TZ", "GIT_TERMINAL_PROMPT")


def test_no_env_name_is_allowed_unless_configured() -> None:
    assert Settings.from_env({}).command_env_allowlist == ()
    assert Settings.from_env({}).command_allowlist == ()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("git 'ls-remote", "No closing quotation"),
        ("echo \\", "No escaped character"),
        ("''", "names no program"),
        ("bin/tool run", "a bare name or an absolute path"),
        ("./tool", "a bare name or an absolute path"),
    ],
)
def test_malformed_allowlist_entries_are_refused(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"APFLOW_COMMAND_ALLOWLIST": f"true, {value}"})
    message = str(refused.value)
    assert message.startswith("APFLOW_COMMAND_ALLOWLIST: ")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["A-B", "1X", "A=B", "NAME WITH SPACE", "É"])
def test_malformed_env_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"APFLOW_COMMAND_ENV_ALLOWLIST": f"LANG,{name}"})
    assert str(refused.value) == (
        f"APFLOW_COMMAND_ENV_ALLOWLIST: {name!r} is not an environment variable name"
    )


# ---------------------------------------------------------------------- through a tree run


async def test_a_dependency_cannot_steer_a_command(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A dependency's result is merged into a run's inputs, and the dependency may be written
    by someone who may not write command tasks: what a command runs (command, cwd, env,
    timeout) comes from the command task's stored inputs only."""
    harness.use_settings(allow_command_executor=True, command_allowlist=(("sh",),))
    evil, good = tmp_path / "evil", tmp_path / "good"
    ids = await harness.tree(
        {"name": "root"},
        {
            "name": "feeder",
            "parent_id": "root",
            "params": {"executor_id": "echo_executor"},
            "inputs": {
                "command": ["sh", "-c", f"touch {evil}"],
                "env": {"LD_PRELOAD": "/nonexistent/apflow.so"},
                "cwd": "/",
                "timeout": 0.001,
                "note": "plain data still flows",
            },
        },
        {
            "name": "cmd",
            "parent_id": "root",
            "dependencies": ["feeder"],
            "params": {"executor_id": "command_executor"},
            "inputs": {"command": ["sh", "-c", "touch good && pwd"], "cwd": str(tmp_path)},
        },
    )
    _, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.COMPLETED, outcome
    task = await harness.task(ids["cmd"])
    assert task.result["stdout"].strip() == str(tmp_path)
    assert good.exists()
    assert not evil.exists()


async def test_a_command_does_not_see_the_services_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """APFLOW_* holds the JWT and webhook secrets, the admin token and the database URL."""
    allow(monkeypatch, "sh", env="APFLOW_MINE")
    monkeypatch.setenv("APFLOW_JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret")
    monkeypatch.setenv("APFLOW_DATABASE_URL", "postgresql://u:pw@db/x")
    monkeypatch.setenv("UNRELATED_VARIABLE", "kept")
    inputs = {"command": ["sh", "-c", "env"], "env": {"APFLOW_MINE": "given"}}
    result = await command_executor(inputs, CONTEXT)
    seen = dict(line.split("=", 1) for line in result["stdout"].splitlines() if "=" in line)
    assert {name for name in seen if name.startswith("APFLOW_")} == {"APFLOW_MINE"}
    assert seen["UNRELATED_VARIABLE"] == "kept"
    assert "s3cret" not in result["stdout"]
