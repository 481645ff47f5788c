"""Parameter types: JSON given on the command line or in a file, and values that `none` clears.

A value that cannot be read is a usage error (exit 2) naming the option, e.g.
`--inputs: not valid JSON (Expecting value at column 1)`; whether a well-formed value is
acceptable is then decided by the repository's validation (exit 1).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    ParamType = click.ParamType[Any]
else:  # click < 8.4: not generic
    ParamType = click.ParamType

KINDS: dict[type, str] = {
    dict: "object",
    list: "list",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    type(None): "null",
}


def kind_of(value: Any) -> str:
    """The JSON kind of a value with its article: "an object", "a list", "null"."""
    kind = KINDS.get(type(value), type(value).__name__)
    if kind == "null":
        return kind
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def parse_json(text: str) -> Any:
    """Strict JSON (no NaN or Infinity); ValueError with a short reason otherwise."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        raise ValueError(f"not valid JSON ({exc.msg} at {where})") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None


class JsonValue(ParamType):
    """A JSON text; with `kind`, the value must be of that JSON type (object or list)."""

    def __init__(self, kind: type | None = None) -> None:
        self.kind = kind
        self.name = f"json {KINDS[kind]}" if kind is not None else "json"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            data = parse_json(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.kind is not None and not isinstance(data, self.kind):
            self.fail(f"must be a JSON {KINDS[self.kind]}, got {kind_of(data)}", param, ctx)
        return data


JSON_ANY = JsonValue()
JSON_OBJECT = JsonValue(dict)
JSON_LIST = JsonValue(list)


class TaskFile(ParamType):
    """A JSON file (or `-` for stdin) holding one task object or a non-empty list of them."""

    name = "file"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            if value == "-":
                text = sys.stdin.read()
            else:
                text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            self.fail(f"cannot read {value!r}: {exc.strerror or exc}", param, ctx)
        except UnicodeDecodeError:
            self.fail(f"cannot read {value!r}: not UTF-8 text", param, ctx)
        try:
            data = parse_json(text)
        except ValueError as exc:
            self.fail(f"{value}: {exc}", param, ctx)
        if isinstance(data, dict):
            return [data]
        if not isinstance(data, list) or not data:
            self.fail(
                f"{value}: must hold a task object or a non-empty list of task objects, "
                f"got {'an empty list' if data == [] else kind_of(data)}",
                param,
                ctx,
            )
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                self.fail(
                    f"{value}: item {index} must be a task object, got {kind_of(item)}", param, ctx
                )
        return data


class _Clear:
    """The value of an option given as `none`: clear the field (store null)."""

    def __repr__(self) -> str:
        return "CLEAR"


CLEAR: Any = _Clear()


class Clearable(ParamType):
    """`inner`, or the word `none` meaning "clear this field"."""

    def __init__(self, inner: ParamType) -> None:
        self.inner = inner
        self.name = inner.name

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        inner = self.inner.get_metavar(param, ctx) or self.inner.name.upper()
        if inner.startswith("[") and inner.endswith("]"):  # the choices: none is one more
            return f"{inner[:-1]}|none]"
        return f"{inner}|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == "none":
            return CLEAR
        return self.inner.convert(value, param, ctx)


class Instant(ParamType):
    """An ISO 8601 instant with its UTC offset (`2025-03-30T01:30:00Z`), as an aware datetime."""

    name = "instant"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 datetime (e.g. 2025-01-15T09:00:00Z)", param, ctx
            )
        if parsed.tzinfo is None:
            self.fail(
                f"{value!r} has no UTC offset; add one, e.g. {parsed.isoformat()}Z", param, ctx
            )
        return parsed.astimezone(UTC)


INSTANT = Instant()


class AliasedChoice(click.Choice[str]):
    """Choices that also accept other words for some of them (the guide's `running` for
    `in_progress`); the value passed on is always the canonical one."""

    def __init__(self, choices: list[str], aliases: dict[str, str]) -> None:
        super().__init__([*choices, *aliases], case_sensitive=False)
        self.aliases = aliases

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        chosen = super().convert(value, param, ctx)
        return self.aliases.get(chosen, chosen)
