"""The `apflow` command: the root group, and the one place errors become messages.

Every failure ends as exactly one line on stderr:
- `Error: <message>` exit 1 when the operation was refused (any ApflowError: a validation,
  not-found, conflict, database or configuration error);
- `Error: <message>` exit 2 for a malformed command line (click's usage errors, bad JSON);
- `Error: internal error: <type>: <message>` exit 1 for a bug (APFLOW_DEBUG=1 adds the
  traceback);
- exit 130, silently, on Ctrl-C.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click

from apflow_server.core.errors import ApflowError
from apflow_server.core.task_fields import is_valid_unicode

try:
    __version__ = version("apflow-server")
except PackageNotFoundError:  # running from a source tree
    __version__ = "unknown"

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def fail(message: str) -> None:
    click.echo(f"Error: {one_line(message)}", err=True)


def usage_message(error: click.ClickException) -> str:
    """Click's message for a usage error, led by the option it is about."""
    if isinstance(error, click.BadParameter) and not isinstance(error, click.MissingParameter):
        param = error.param
        if param is not None:
            options = [opt for opt in param.opts if opt.startswith("--")] or param.opts
            hint = (
                max(options, key=len)
                if isinstance(param, click.Option)
                else (param.name or "").upper()
            )
            return f"{hint}: {error.message}"
    return error.format_message()


# The commands, loaded when one is used: `apflow --help` and every command then import only
# what they need (the database layer, the web stack and the iCalendar library take most of a
# second to import). Their one-line help is written here for the same reason.
COMMANDS = {
    "audit": ("apflow_server.cli.audit:audit", "Who changed what, and when (the audit log)."),
    "calendars": (
        "apflow_server.cli.calendars:calendars_group",
        "Business calendars: which days schedules run on.",
    ),
    "config": (
        "apflow_server.cli.configure:config_group",
        "The configuration file (APFLOW_HOME/config.cli.yaml) and tokens.",
    ),
    "db": ("apflow_server.cli.db:db_group", "The database schema (Alembic migrations)."),
    "notify": (
        "apflow_server.cli.notify:notify_group",
        "Get told when something goes wrong: signed webhooks for failed, missed, late runs.",
    ),
    "plugins": (
        "apflow_server.cli.plugins:plugins",
        "The plugins, executors and webhook verify hook this installation loads.",
    ),
    "scheduler": (
        "apflow_server.cli.scheduler:scheduler_group",
        "Run the internal scheduler and see what it does.",
    ),
    "serve": (
        "apflow_server.cli.serve:serve",
        "Run the service: JSON-RPC at /tasks/, POST /webhook/trigger/{task_id}, /healthz,...",
    ),
    "tasks": ("apflow_server.cli.tasks:tasks_group", "Create, inspect, change and delete tasks."),
}
# Modules that add commands to a group defined elsewhere (the `scheduler` group's calendar
# and external-scheduler commands).
EXTENSIONS = {"scheduler": ("apflow_server.cli.calendar", "apflow_server.cli.gateway")}


class ApflowGroup(click.Group):
    """The root group: loads its commands on use, runs the command and turns every outcome
    into an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name][0].partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        for extension in EXTENSIONS.get(name, ()):
            importlib.import_module(extension)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        code = self.run(args, prog_name, complete_var, windows_expand_args, **extra)
        if not standalone_mode:
            return code
        sys.exit(code)

    def run(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        windows_expand_args: bool,
        **extra: Any,
    ) -> int:
        for position, argument in enumerate(sys.argv[1:] if args is None else args, start=1):
            if not is_valid_unicode(argument):
                # Python decodes bytes that are not UTF-8 as lone surrogates: no column,
                # file or JSON document can hold them.
                shown = argument.encode("utf-8", "backslashreplace").decode()
                fail(f"argument {position} ({shown}) is not valid UTF-8 text")
                return EXIT_USAGE
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except click.exceptions.NoArgsIsHelpError as error:
            click.echo(error.format_message())
            return 0
        except click.ClickException as error:
            fail(usage_message(error))
            return error.exit_code
        except (click.exceptions.Abort, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        except ApflowError as error:
            fail(error.message)
            return EXIT_REFUSED
        except Exception as error:
            if os.environ.get("APFLOW_DEBUG") == "1":
                traceback.print_exc()
            fail(f"internal error: {type(error).__name__}: {error}")
            return EXIT_REFUSED
        # Commands return None; an int here is the code of a click Exit (--help, --version).
        return result if isinstance(result, int) else 0


@click.group(
    cls=ApflowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="apflow", message="%(prog)s %(version)s")
def apflow() -> None:
    """apflow-server: task trees on schedules, fired exactly once, visible in your calendar.

    The database is APFLOW_DATABASE_URL, else the SQLite file APFLOW_HOME/apflow.db
    (APFLOW_HOME defaults to ~/.apflow).
    """


def main() -> None:
    """The `apflow` console script."""
    apflow.main(prog_name="apflow")


if __name__ == "__main__":  # `python -m apflow_server.cli.main`: how the daemon is started
    main()
