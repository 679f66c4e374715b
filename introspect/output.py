"""What every command of the `introspect` command line shares to talk to people and scripts: the
openstack client's `-f table|json|value|yaml|csv` and `-c COLUMN`, consoles that never truncate
into a pipe, and bad input said in one line. The library's commands (introspect/cli.py) and the
service's (workers/) both use it, so a listing reads the same whichever package it comes from."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from introspect.text import literal

# rich is imported where a table or a console is made: a command that prints JSON lines, or only
# its --help, never pays for it.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

P = ParamSpec("P")
R = TypeVar("R")

USAGE_ERROR = 2
#: Into a pipe or a file, tables take the width their cells need: nothing is truncated for scripts.
UNBOUNDED = 100_000
OUTPUTS = ("table", "json", "value", "yaml", "csv")
#: Longest piece of a refused value quoted in a message.
QUOTED = 40


class BadInput(click.ClickException):
    """Bad input, said in one line (`Error: ` and what is wrong, with the value and what is accepted)
    and exit status 2, the same prefix in every command: no usage text, no traceback."""

    exit_code = USAGE_ERROR


def make_console(*, stderr: bool = False) -> Console:
    """A console for our output: its terminal's width in a terminal (a long cell wraps there),
    unbounded into a pipe or a file (a script gets every character)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else UNBOUNDED
    return Console(stderr=stderr, highlight=False, soft_wrap=not stderr, width=width)


def shown(text: str) -> str:
    """A refused value as a message quotes it: repr'd, literal, and cut to a readable length."""
    cut = text if len(text) <= QUOTED else f"{text[:QUOTED]}..."
    return literal(repr(cut))


def output_options(command: Callable[P, R]) -> Callable[P, R]:
    """-f/--format, -c/--column, and --json (the same as -f json) on a listing or show command;
    the command gets `output`, `columns` and `as_json`."""
    command = click.option("--json", "as_json", is_flag=True, help="The same as -f json.")(command)
    command = click.option(
        "-c", "--column", "columns", multiple=True, metavar="COLUMN", help="Only this column (repeatable)."
    )(command)
    return click.option(
        "-f",
        "--format",
        "output",
        type=click.Choice(OUTPUTS),
        default="table",
        show_default=True,
        help="Output format (json and yaml: one object per row, as it comes).",
    )(command)


def chosen(output: str, as_json: bool) -> str:
    """The output format: --json is -f json."""
    return "json" if as_json else output


def pick_columns(picked: tuple[str, ...], available: Iterable[str], default: Iterable[str]) -> list[str]:
    """The columns -c picked (each one checked against those there are), else `default`."""
    known = list(available)
    for column in picked:
        if column not in known:
            raise BadInput(f"-c {shown(column)}: no such column: the columns are {', '.join(known)}")
    return list(picked) or list(default)


def plain(value: object) -> str:
    """A value for `-f value` and `-f csv`: lists and objects as JSON, control characters escaped."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return literal(json.dumps(value))
    return literal(str(value))


class RowWriter:
    """Rows in a machine format (json, yaml, value, csv), each written and flushed as it comes:
    a listing of a whole catalog holds one page in memory, not the whole output, and a script
    reading an inspection's rows sees each as soon as its image is done."""

    def __init__(self, output: str, picked: list[str]) -> None:
        if output == "yaml":
            try:
                import yaml  # type: ignore[import-untyped]  # (PyYAML: the glance extra installs it)
            except ImportError:
                raise BadInput("-f yaml needs PyYAML: pip install pyyaml (or use -f json)") from None
            self._yaml_dump = yaml.safe_dump
        self.output = output
        self.picked = picked
        self._csv = csv.writer(sys.stdout, lineterminator="\n")
        if output == "csv":
            self._csv.writerow(picked)

    def write(self, row: dict[str, Any]) -> None:
        values = {column: row.get(column) for column in self.picked}
        if self.output == "json":
            sys.stdout.write(json.dumps(values) + "\n")
        elif self.output == "yaml":
            sys.stdout.write(self._yaml_dump([values], sort_keys=False))
        elif self.output == "csv":
            self._csv.writerow([plain(value) for value in values.values()])
        else:
            sys.stdout.write(" ".join(plain(value) for value in values.values()) + "\n")
        sys.stdout.flush()


def emit(rows: Iterable[dict[str, Any]], output: str, picked: list[str]) -> None:
    """Rows in a machine format, each written as it comes (see RowWriter)."""
    writer = RowWriter(output, picked)
    for row in rows:
        writer.write(row)


def emit_one(data: dict[str, Any], output: str, picked: list[str]) -> None:
    """One object (a show command): `-f value` is one value per line, the rest as `emit` writes."""
    if output == "value":
        for column in picked:
            sys.stdout.write(plain(data.get(column)) + "\n")
        sys.stdout.flush()
    else:
        emit([data], output, picked)


def literal_cell(column: str, row: dict[str, Any]) -> Text:
    """A table cell: the value as `plain` writes it, literal (never markup), `-` when there is none."""
    from rich.text import Text

    value = row.get(column)
    return Text("-" if value is None else plain(value))


def print_table(
    rows: Iterable[dict[str, Any]],
    picked: list[str],
    out: Console,
    cell: Callable[[str, dict[str, Any]], Text] = literal_cell,
) -> None:
    """Rows as a table: an id never wraps, any other cell folds in a terminal (a long name wraps
    rather than become "na…"), and into a pipe the console is wide enough for every cell."""
    from rich.table import Column, Table

    made = Table(
        *(Column(c, no_wrap=True, min_width=36) if c == "id" else Column(c, overflow="fold") for c in picked)
    )
    for row in rows:
        made.add_row(*(cell(column, row) for column in picked))
    out.print(made)


def print_fields(data: dict[str, Any], picked: list[str], out: Console) -> None:
    """One object's chosen fields as a field | value table (a show command's `-c` in a table)."""
    print_table(({"field": column, "value": data.get(column)} for column in picked), ["field", "value"], out)
