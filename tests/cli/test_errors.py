"""Bad input: one `Error:` line on stderr naming the field or option, exit 1 for a refused
operation and 2 for a malformed command line, never a traceback, and the database unchanged."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import Cli, Process, assert_one_error_line, snapshot

import apflow_server.cli.tasks as tasks_module

REFUSED, USAGE = 1, 2


@pytest.fixture
def seeded(cli: Cli) -> tuple[Cli, str, str]:
    """A scheduled task and an unscheduled one, so "unchanged" has something to compare."""
    scheduled = cli.create(
        "--name",
        "Daily Report",
        "--schedule-type",
        "daily",
        "--schedule-expression",
        "09:00",
        "--schedule-enabled",
    )
    plain = cli.create("--name", "Plain")
    return cli, scheduled["id"], plain["id"]


def write(tmp_path: Path, name: str, content: object) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


# ---------------------------------------------------------------------- refused: exit 1

REFUSED_CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "invalid daily time": (
        "tasks create --name X --schedule-type daily --schedule-expression 25:00",
        ("schedule_expression", "25:00"),
    ),
    "invalid cron": (
        "tasks create --name X --schedule-type cron --schedule-expression '61 * * * *'",
        ("schedule_expression",),
    ),
    "invalid time zone": (
        "tasks create --name X --schedule-type daily --schedule-expression 09:00"
        " --schedule-timezone Mars/Olympus",
        ("schedule_timezone", "Mars/Olympus"),
    ),
    "invalid date": (
        "tasks create --name X --schedule-start-at 2025-13-45",
        ("schedule_start_at", "2025-13-45"),
    ),
    "enabled without a type": ("tasks create --name X --schedule-enabled", ("schedule_type",)),
    "max runs zero": ("tasks create --name X --max-runs 0", ("max_runs",)),
    "blank name": ("tasks create --name '  '", ("name",)),
    "unknown task": ("tasks get no-such-task", ("no-such-task", "not found")),
    "unknown task tree": ("tasks tree no-such-task", ("no-such-task",)),
    "unknown task runs": ("tasks runs no-such-task", ("no-such-task",)),
    "unknown task delete": ("tasks delete no-such-task", ("no-such-task",)),
    "unknown task update": ("tasks update no-such-task --name Y", ("no-such-task",)),
    "unknown task init": ("tasks scheduled init no-such-task", ("no-such-task",)),
    "unknown task complete": ("tasks scheduled complete no-such-task", ("no-such-task",)),
    "unknown task preview": ("tasks scheduled preview no-such-task", ("no-such-task",)),
    "unknown parent": (
        "tasks create --name X --parent-id no-such-task",
        ("parent_id", "no-such-task"),
    ),
    "preview without expression": (
        "tasks scheduled preview --schedule-type daily",
        ("schedule_expression",),
    ),
    "command env not in the env allowlist": (
        "tasks create --name X --executor command_executor"
        """ --inputs '{"command": ["true"], "env": {"LD_PRELOAD": "/x.so"}}'""",
        ("inputs.env", "LD_PRELOAD", "APFLOW_COMMAND_ENV_ALLOWLIST"),
    ),
}


@pytest.mark.parametrize("case", REFUSED_CASES)
def test_refused_operations(seeded: tuple[Cli, str, str], case: str) -> None:
    cli, _, _ = seeded
    args, names = REFUSED_CASES[case]
    cli.fails(REFUSED, *shlex.split(args), names=names)


def test_refused_updates_leave_the_task_unchanged(seeded: tuple[Cli, str, str]) -> None:
    cli, scheduled, plain = seeded
    update = ("tasks", "update", scheduled)
    cli.fails(REFUSED, *update, "--schedule-expression", "25:00", names=("schedule_expression",))
    cli.fails(REFUSED, *update, "--schedule-timezone", "Nowhere/Land", names=("schedule_timezone",))
    cli.fails(
        REFUSED,
        *update,
        "--schedule-start-at",
        "2025-02-01T00:00:00Z",
        "--schedule-end-at",
        "2025-01-01T00:00:00Z",
        names=("schedule_end_at",),
    )
    cli.fails(REFUSED, *update, "--dependencies", '["ghost"]', names=("dependencies[0].id",))
    cli.fails(REFUSED, *update, "--name", "", names=("name",))
    cli.fails(REFUSED, "tasks", "scheduled", "init", plain, names=("schedule_type",))
    cli.fails(REFUSED, "tasks", "scheduled", "preview", plain, names=("schedule_type",))
    # Disabled schedules cannot be initialised.
    cli.ok("tasks", "update", scheduled, "--schedule-disabled")
    cli.fails(REFUSED, "tasks", "scheduled", "init", scheduled, names=("schedule_enabled",))


def test_file_with_a_cycle_writes_nothing(seeded: tuple[Cli, str, str], tmp_path: Path) -> None:
    cli, _, _ = seeded
    tree = [
        {"name": "Root"},
        {"name": "A", "parent_id": "Root", "dependencies": ["B"]},
        {"name": "B", "parent_id": "Root", "dependencies": [{"id": "A"}]},
    ]
    message = cli.fails(
        REFUSED,
        "tasks",
        "create",
        "--file",
        write(tmp_path, "cycle.json", tree),
        names=("dependencies", "cycle"),
    )
    assert "A -> B -> A" in message or "B -> A -> B" in message


def test_file_with_one_bad_task_writes_none_of_them(
    seeded: tuple[Cli, str, str], tmp_path: Path
) -> None:
    cli, _, _ = seeded
    tree = [
        {"name": "Root", "schedule_type": "daily", "schedule_expression": "09:00"},
        {"name": "Good", "parent_id": "Root"},
        {"name": "Bad", "parent_id": "Root", "inputs": {"x": 1}, "schedule_timezone": "Nope/No"},
    ]
    path = write(tmp_path, "tree.json", tree)
    cli.fails(REFUSED, "tasks", "create", "--file", path, names=("tasks[2].schedule_timezone",))
    orphan = [{"name": "Root"}, {"name": "Child", "parent_id": "Missing"}, {"name": "Two"}]
    cli.fails(
        REFUSED,
        "tasks",
        "create",
        "--file",
        write(tmp_path, "roots.json", orphan),
        names=("root",),
    )
    unknown = [{"name": "Root", "colour": "blue"}]
    cli.fails(
        REFUSED,
        "tasks",
        "create",
        "--file",
        write(tmp_path, "unknown.json", unknown),
        names=("colour", "unknown field"),
    )


# ---------------------------------------------------------------------- usage: exit 2

USAGE_CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "invalid JSON": (
        "tasks create --name X --inputs '{bad'",
        ("--inputs", "not valid JSON", "column 2"),
    ),
    "empty JSON": ("tasks create --name X --params ''", ("--params", "JSON")),
    "NaN in JSON": ("""tasks create --name X --inputs '{"a": NaN}'""", ("--inputs",)),
    "inputs not an object": (
        "tasks create --name X --inputs '[1, 2]'",
        ("--inputs", "must be a JSON object, got a list"),
    ),
    "params not an object": ("""tasks create --name X --params '"echo"'""", ("--params",)),
    "dependencies not a list": (
        "tasks create --name X --dependencies '{}'",
        ("--dependencies", "must be a JSON list, got an object"),
    ),
    "unknown option": ("tasks create --name X --bogus 1", ("--bogus",)),
    "unknown command": ("tasks explode", ("explode",)),
    "missing argument": ("tasks get", ("TASK_ID",)),
    "missing name": ("tasks create --inputs {}", ("--name",)),
    "bad format": ("tasks list -f xml", ("--format", "xml")),
    "bad format on create": ("tasks create --name X --format yaml", ("--format",)),
    "bad priority": ("tasks create --name X --priority 7", ("--priority",)),
    "priority not a number": ("tasks create --name X --priority x", ("--priority",)),
    "bad schedule type": (
        "tasks create --name X --schedule-type hourly",
        ("--schedule-type", "hourly"),
    ),
    "bad misfire policy": (
        "tasks create --name X --schedule-misfire later",
        ("--schedule-misfire", "later"),
    ),
    "bad status filter": ("tasks list --status sleeping", ("--status",)),
    "bad run status filter": ("tasks runs --status pending", ("--status",)),
    "bad limit": ("tasks list --limit 0", ("--limit",)),
    "naive --before": ("tasks scheduled due --before 2025-01-01T00:00", ("--before", "offset")),
    "bad --after": (
        "tasks scheduled preview --schedule-type daily --schedule-expression 09:00"
        " --after tomorrow",
        ("--after", "tomorrow"),
    ),
    "bad --result": ("tasks scheduled complete any --result '{'", ("--result", "not valid JSON")),
    "unreadable --file": (
        "tasks create --file /no/such/tree.json",
        ("--file", "cannot read", "/no/such/tree.json"),
    ),
    "preview of nothing": ("tasks scheduled preview", ("TASK_ID",)),
    "preview of both": (
        "tasks scheduled preview some-id --schedule-type daily",
        ("TASK_ID", "not both"),
    ),
}


@pytest.mark.parametrize("case", USAGE_CASES)
def test_malformed_command_lines(seeded: tuple[Cli, str, str], case: str) -> None:
    cli, _, _ = seeded
    args, names = USAGE_CASES[case]
    cli.fails(USAGE, *shlex.split(args), names=names)


def test_update_without_changes_is_a_usage_error(seeded: tuple[Cli, str, str]) -> None:
    cli, scheduled, _ = seeded
    cli.fails(USAGE, "tasks", "update", scheduled, names=("nothing to change",))
    cli.fails(USAGE, "tasks", "update", scheduled, "-f", "json", names=("nothing to change",))


def test_file_usage_errors(seeded: tuple[Cli, str, str], tmp_path: Path) -> None:
    cli, _, _ = seeded
    tree = write(tmp_path, "tree.json", [{"name": "Root"}])
    cli.fails(
        USAGE,
        "tasks",
        "create",
        "--file",
        tree,
        "--name",
        "X",
        "--schedule-enabled",
        names=("--file", "--name", "--schedule-enabled"),
    )
    bad = write(tmp_path, "bad.json", "[{")
    cli.fails(USAGE, "tasks", "create", "--file", bad, names=("--file", "not valid JSON"))
    cli.fails(
        USAGE,
        "tasks",
        "create",
        "--file",
        write(tmp_path, "str.json", '"Root"'),
        names=("--file", "a string"),
    )
    cli.fails(
        USAGE, "tasks", "create", "--file", write(tmp_path, "empty.json", []), names=("--file",)
    )
    cli.fails(
        USAGE,
        "tasks",
        "create",
        "--file",
        write(tmp_path, "items.json", [{"name": "Root"}, 3]),
        names=("--file", "item 1"),
    )


# ---------------------------------------------------------------------- unexpected failures


def test_an_unexpected_exception_is_one_line_without_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_work: object) -> object:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(tasks_module, "run_with_service", broken)
    result = cli("tasks", "get", "x")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "internal error: RuntimeError: the disk is on fire")


def test_apflow_debug_shows_the_traceback(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_work: object) -> object:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(tasks_module, "run_with_service", broken)
    from click.testing import CliRunner

    from apflow_server.cli.main import apflow

    result = CliRunner().invoke(apflow, ["tasks", "get", "x"], env={**cli.env, "APFLOW_DEBUG": "1"})
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: internal error: RuntimeError: the disk is on fire"
    )


def test_keyboard_interrupt_exits_130_quietly(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_work: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks_module, "run_with_service", interrupted)
    result = cli("tasks", "list")
    assert result.exit_code == 130
    assert result.stdout == "" and result.stderr == ""


def test_bad_settings_are_refused(cli: Cli) -> None:
    result = cli("tasks", "list", APFLOW_DEFAULT_TIMEZONE="Nowhere/Land")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "APFLOW_DEFAULT_TIMEZONE", "Nowhere/Land")
    result = cli("tasks", "list", APFLOW_DATABASE_URL="mysql://db/apflow")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "unsupported database")
    result = cli("tasks", "list", APFLOW_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "cannot reach the database")
    result = cli("tasks", "list", APFLOW_COMMAND_ALLOWLIST="true, git 'ls-remote")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "APFLOW_COMMAND_ALLOWLIST", "No closing quotation")
    result = cli("tasks", "list", APFLOW_COMMAND_ENV_ALLOWLIST="LANG, LD-PRELOAD")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "APFLOW_COMMAND_ENV_ALLOWLIST", "'LD-PRELOAD'")
    result = cli("tasks", "list", APFLOW_REST_MAX_RESPONSE_BYTES="lots")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "APFLOW_REST_MAX_RESPONSE_BYTES", "lots")
    result = cli("tasks", "list", APFLOW_REST_MAX_KEEPALIVE="500")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "APFLOW_REST_MAX_KEEPALIVE (500)")
    result = cli("tasks", "list", APFLOW_DATABASE_POOLER="bouncy")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "APFLOW_DATABASE_POOLER", "'bouncy'")
    result = cli("tasks", "list", APFLOW_DATABASE_LISTEN_URL="mysql://db/apflow")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "APFLOW_DATABASE_LISTEN_URL", "postgresql://")


def test_a_mistyped_home_is_refused_and_not_built(cli: Cli, tmp_path: Path) -> None:
    """APFLOW_HOME is created when missing, but only inside a folder that exists: a typo
    is one line, with nothing made (it printed "No tasks found." from a new database)."""
    cli.env["APFLOW_DATABASE_URL"] = None  # the embedded default, under APFLOW_HOME
    mistyped = tmp_path / "no-such-folder" / "x" / "apflow"
    for command in (("tasks", "list"), ("calendars", "list"), ("serve", "--port", "1")):
        result = cli(*command, APFLOW_HOME=str(mistyped))
        assert result.exit_code == 1, result.stdout
        assert_one_error_line(result.stderr, str(mistyped), "does not exist")
    assert not (tmp_path / "no-such-folder").exists()
    fresh = tmp_path / "apflow-home"  # one level new: made, as ~/.apflow is on first use
    assert cli("tasks", "list", APFLOW_HOME=str(fresh)).exit_code == 0
    assert (fresh / "apflow.db").is_file()
    file = tmp_path / "a-file"
    file.write_text("")
    result = cli("tasks", "list", APFLOW_HOME=str(file))
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, str(file), "not a folder")


# ---------------------------------------------------------------------- real processes


def test_errors_in_real_processes(process: Process, tmp_path: Path) -> None:
    """The same guarantees end to end: what reaches a terminal is one line, never a traceback."""
    task = process.json("tasks", "create", "--name", "Keep me", "--inputs", '{"a": 1}')
    database = f"sqlite+aiosqlite:///{process.env['APFLOW_HOME']}/apflow.db"
    before = snapshot(database)
    cycle = write(
        tmp_path,
        "cycle.json",
        [
            {"name": "Root"},
            {"name": "A", "parent_id": "Root", "dependencies": ["B"]},
            {"name": "B", "parent_id": "Root", "dependencies": ["A"]},
        ],
    )
    cases = [
        (
            [
                "tasks",
                "update",
                task["id"],
                *shlex.split(
                    "--schedule-type daily --schedule-expression 25:00 --schedule-enabled"
                ),
            ],
            REFUSED,
            ("schedule_expression: time '25:00' is not a time of day",),
        ),
        (["tasks", "create", "--name", "X", "--inputs", "{"], USAGE, ("--inputs: not valid JSON",)),
        (["tasks", "create", "--name", "X", "--bogus"], USAGE, ("--bogus",)),
        (["tasks", "get", "missing-id"], REFUSED, ("task 'missing-id' not found",)),
        (["tasks", "create", "--file", cycle], REFUSED, ("dependencies form a cycle",)),
        (["tasks", "scheduled", "list", "-f", "csv"], USAGE, ("--format",)),
    ]
    for args, code, names in cases:
        result = process(*args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stdout == ""
        assert_one_error_line(result.stderr, *names)
    assert snapshot(database) == before


def test_help_and_version(process: Process) -> None:
    assert process.ok("--version").startswith("apflow ")
    assert "tasks" in process.ok()


@pytest.mark.parametrize(
    "argv",
    [
        [b"tasks", b"create", b"--name", b"\xff\xfe"],
        [b"tasks", b"get", b"\xff"],
        [b"tasks", b"list", b"--user-id", b"caf\xe9"],
    ],
)
def test_arguments_that_are_not_utf8_are_a_usage_error(process: Process, argv: list[bytes]) -> None:
    """Python reads bytes that are not UTF-8 as lone surrogates, which nothing can store."""
    result = subprocess.run(
        [process.executable.encode(), *argv],
        env=process.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert_one_error_line(stderr, "is not valid UTF-8 text")
    assert process.json("tasks", "list")["total"] == 0


def test_the_root_help_says_what_each_command_says_of_itself() -> None:
    """`apflow --help` lists the commands without importing them: its one-liners are written
    in cli/main.py, and must be the commands' own."""
    import click

    from apflow_server.cli.main import COMMANDS, apflow

    context = click.Context(apflow)
    for name, (_, summary) in COMMANDS.items():
        command = apflow.get_command(context, name)
        assert command is not None
        assert summary == command.get_short_help_str(limit=90), name


def test_help_imports_neither_the_database_nor_the_web_stack() -> None:
    script = (
        "import sys; from apflow_server.cli.main import main\n"
        "sys.argv = ['apflow', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('sqlalchemy', 'starlette', 'icalendar', 'httpx')\n"
        "print('HEAVY', [name for name in heavy if name in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "HEAVY []" in result.stdout, result.stdout
