"""The `introspect` command. Library commands live here (inspect, schema, rules, metadefs); other
packages (the pipeline in `workers/`) add theirs through the `introspect.commands` entry point
group, so the library never imports the service side.

Exit status everywhere: 0 when every report is ok, 1 when any is rejected or error, 2 on a usage
error (click's own, or a path that cannot be read). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import click

from introspect import DISTRIBUTION
from introspect.decode import GIB, KIB, MIB
from introspect.output import USAGE_ERROR, BadInput, chosen, output_options, pick_columns
from introspect.sources import GUEST_BUDGET, Budget
from introspect.startup import started
from introspect.text import literal
from introspect.vocabulary import NAMESPACE, metadefs_namespace

# What a command needs is imported when it runs, not here: `introspect --help` needs none of it,
# and `introspect inspect` none of the schema's, rules' or metadefs' (the formats' models,
# rich, the guest pass each cost a command that does not use them tens of milliseconds).
if TYPE_CHECKING:
    from rich.console import Console

    from introspect.model import Severity
    from introspect.report import Report
    from introspect.safety import Policy

#: The path that means standard input, read once as a stream (`curl ... | introspect inspect -`).
STDIN = "-"
STDIN_NAME = "<stdin>"  # the name its Report and row carry
#: Properties worth a column in the table; the rest is in --json.
SHOWN_PROPERTIES = ("vmware_disktype", "vmware_adaptertype", "hw_firmware_type")
VERDICT_STYLE = {"ok": "green", "rejected": "red", "error": "magenta"}
#: The entry point group other packages declare their commands in (see `PluginGroup`).
PLUGINS = "introspect.commands"
INSPECT = "inspect"


class LazyCommand(NamedTuple):
    """A plugin's command as `introspect --help` lists it, without importing it: `target` is where
    the click command is (`module:attribute`, imported when the command runs), `help` the first
    paragraph of its help (all the listing shows of it), `needs` the packages it cannot import
    without (its extra's): when one is missing, the command is absent, as an uninstalled extra's
    commands always were."""

    target: str
    help: str
    needs: tuple[str, ...] = ()

    def installed(self) -> bool:
        return all(find_spec(package) is not None for package in self.needs)

    def load(self) -> click.Command:
        module, _, attribute = self.target.partition(":")
        command: click.Command = getattr(import_module(module), attribute)
        return command


class PluginGroup(click.Group):
    """The library's own commands, plus those other packages add through the entry point group
    `introspect.commands`: each entry is a function `register(group)`, loaded only when a command
    is not one of ours (or for --help), so `introspect inspect` never pays for reading the
    installed packages' metadata. `register` may `add_command` (the command is imported with the
    function) or `add_lazy_command` (listed from its declaration, imported when it runs): the
    pipeline's commands bring Celery and SQLAlchemy, which `introspect --help` need not import."""

    _plugins_loaded = False
    _listing = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, LazyCommand] = {}

    def add_lazy_command(self, name: str, command: LazyCommand) -> None:
        """Declare a command that is imported only when it runs (and listed by `--help` before)."""
        if command.installed():
            self.lazy_commands[name] = command

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points  # here: tens of ms that `inspect` never needs

        for entry in entry_points(group=PLUGINS):
            try:
                register: Callable[[click.Group], None] = entry.load()
            except ImportError:
                continue  # that extra is not installed: its commands are simply absent
            register(self)

    def _load(self, name: str) -> None:
        """Import a declared command and make it a command like the others."""
        declared = self.lazy_commands.pop(name)
        try:
            command = declared.load()
        except ImportError as missing:
            # Its `needs` were found, yet an import failed: a broken install, said in one line.
            raise click.ClickException(
                f"`introspect {name}` cannot run: the {missing.name} package is missing or broken"
            ) from None
        self.add_command(command, name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._load_plugins()
        if cmd_name in self.lazy_commands:
            if self._listing:  # --help lists it from its declaration: the same line, no import
                return click.Command(cmd_name, help=self.lazy_commands[cmd_name].help)
            self._load(cmd_name)
        elif cmd_name not in self.commands:
            # Unknown: click's "Did you mean" looks for it among every command, so all are loaded.
            for name in list(self.lazy_commands):
                self._load(name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugins()
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION, prog_name="introspect")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Read what VM disk images say about themselves, and keep it as image properties."""
    # The console script pauses the collector for start-up (`introspect.startup`): `inspect` ends
    # start-up after its first image (whose format and guest modules are imported on the way),
    # every other command here, before it runs.
    if ctx.invoked_subcommand != INSPECT:
        started()


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _paths(arguments: tuple[str, ...]) -> Iterator[str | EmptyDirectory]:
    """Each argument, with directories expanded to the files under them, sorted (a directory
    with none is said to be empty). Nothing is opened here: special files are refused later,
    one line each, by the source that would read them."""
    for argument in arguments:
        if Path(argument).is_dir():
            found = False
            for root, dirs, files in os.walk(argument):
                dirs.sort()
                for name in sorted(files):
                    found = True
                    yield str(Path(root) / name)
            if not found:
                yield EmptyDirectory(argument)
        else:
            yield argument


class EmptyDirectory(str):
    """A directory argument with no file under it."""


def load_policy(
    policy_file: str | None,
    report_only: bool = False,
    severities: tuple[str, ...] = (),
    *,
    option: str = "--policy",
) -> Policy:
    """The policy of a JSON file (`--policy`, see `introspect rules` and introspect/policyfile.py)
    with `--severity CODE=LEVEL` and `--report-only` on top. Every mistake is one line naming the
    field, the value and what is accepted (`BadInput`)."""
    from introspect.errors import UsageError
    from introspect.policyfile import read_policy
    from introspect.safety import DEFAULT_POLICY

    try:
        policy = (
            read_policy(policy_file, f"{option} {literal(policy_file)}") if policy_file else DEFAULT_POLICY
        )
        overrides = dict(_severity(item) for item in severities)
    except UsageError as error:
        raise BadInput(str(error)) from None
    update: dict[str, Any] = {"severity": {**policy.severity, **overrides}} if overrides else {}
    if report_only:
        update["report_only"] = True
    return policy.model_copy(update=update) if update else policy


def _severity(item: str) -> tuple[str, Severity]:
    """One `--severity CODE=LEVEL`, checked."""
    from introspect.errors import UsageError
    from introspect.policyfile import check_rule_code, severity_named

    code, sep, level = item.partition("=")
    if not sep or not code:
        raise UsageError(f"--severity: {literal(repr(item))}: expected CODE=reject|warn|info")
    accepted = "expected CODE=reject|warn|info"
    return check_rule_code(code, "--severity"), severity_named(level, f"--severity {literal(code)}", accepted)


def _guest_budget(value: str) -> Budget:
    """`BYTES,READS` (BYTES may end in KiB, MiB or GiB) as the guest pass's Budget."""
    size, sep, reads = value.partition(",")
    units = {"gib": GIB, "mib": MIB, "kib": KIB, "": 1}
    number = size.strip().lower()
    unit = next(u for u in units if number.endswith(u))
    digits = number.removesuffix(unit).strip()
    if not sep or not digits.isdigit() or not reads.strip().isdigit() or int(reads) < 1 or int(digits) < 1:
        raise click.BadParameter(
            f"{literal(value)}: expected BYTES,READS such as 4MiB,512", param_hint="--guest-budget"
        )
    max_bytes = int(digits) * units[unit]
    return Budget(max_bytes=max_bytes, max_reads=int(reads), max_read_size=min(max_bytes, 4 * MIB))


def _guest_word(report: Report) -> str:
    """The guest's system in a few words (`debian 12 x86_64`), or why there is none."""
    if report.guest is None:
        return "-"
    systems = report.guest.systems
    if len(systems) > 1:
        return f"{len(systems)} systems"
    if not systems:
        return "none found"
    system = systems[0]
    return " ".join(
        word for word in (system.os_id or system.os_type, system.version, system.architecture) if word
    )


def _cells(report: Report) -> tuple[str, ...]:
    """One table row's cells, in `_Rows.COLUMNS` order. Every cell is literal, its control
    characters escaped: names and values come from images and users, and are never read as markup
    or terminal sequences."""
    from introspect.model import Severity

    shown = ", ".join(report.properties[k] for k in SHOWN_PROPERTIES if k in report.properties)
    codes = ", ".join(f.code for f in report.findings if f.severity != Severity.INFO)
    return (
        literal(report.source),
        report.format or "-",
        _human(report.virtual_size),
        report.verdict.value,
        literal(shown),
        literal(_guest_word(report)),
        literal(codes),
    )


#: What `inspect -f value|csv` shows without -c (-c picks any field of the Report).
INSPECT_COLUMNS = ("source", "format", "container_format", "virtual_size", "verdict")


@main.command(INSPECT)
@click.argument("paths", nargs=-1, required=True)
@output_options
@click.option("--expect", metavar="FORMAT", help="The disk_format the images were declared with.")
@click.option("--cross-check", is_flag=True, help="Also run a caged `qemu-img info` and compare.")
@click.option(
    "--policy",
    "policy_file",
    metavar="FILE",
    envvar="INTROSPECT_POLICY",
    help="A JSON policy (see `introspect rules`); also INTROSPECT_POLICY, as every other command reads it.",
)
@click.option("--report-only", is_flag=True, help="Record findings without rejecting.")
@click.option("--severity", "severities", multiple=True, metavar="CODE=LEVEL", help="Override a rule.")
@click.option(
    "--verify-manifest",
    is_flag=True,
    help="Check an OVA's manifest digests (reads every file it lists once).",
)
@click.option("--no-guest", is_flag=True, help="Read headers only: skip the guest's volumes and filesystems.")
@click.option(
    "--guest-budget",
    metavar="BYTES,READS",
    default=f"{GUEST_BUDGET.max_bytes},{GUEST_BUDGET.max_reads}",
    show_default=True,
    help="What the guest pass may read per image.",
)
@click.option("--verbose", "-v", is_flag=True, help="Print every finding's message under its row.")
def inspect_command(
    paths: tuple[str, ...],
    output: str,
    columns: tuple[str, ...],
    as_json: bool,
    expect: str | None,
    cross_check: bool,
    policy_file: str | None,
    report_only: bool,
    severities: tuple[str, ...],
    verify_manifest: bool,
    no_guest: bool,
    guest_budget: str,
    verbose: bool,
) -> None:
    """Inspect image files (directories are walked; `-` is standard input, read once) and print
    what they say about themselves, a row as each is done (-f json: the whole Report, unless -c
    picks its fields)."""
    from introspect.errors import SourceError, UsageError
    from introspect.formats import BY_NAME, canonical_name
    from introspect.inspector import inspect as inspect_image
    from introspect.output import RowWriter, make_console, print_table
    from introspect.report import Report

    output = chosen(output, as_json)
    machine = output in ("json", "yaml")
    fields = tuple(Report.model_fields)
    picked = pick_columns(columns, fields, fields if machine else INSPECT_COLUMNS)
    if expect is not None and canonical_name(expect) not in BY_NAME:
        raise click.BadParameter(f"unknown format {expect!r}", param_hint="--expect")
    policy = load_policy(policy_file, report_only, severities)
    budget = None if no_guest else _guest_budget(guest_budget)
    if verify_manifest:
        policy = policy.model_copy(update={"verify_manifest": True})
    # rich only where it prints: rows in a terminal, errors, a table of -c columns. JSON lines, rows
    # into a pipe and error-free runs never import it.
    err: Console | None = None

    def error(line: str) -> None:
        nonlocal err
        if err is None:
            err = _error_console()
        err.print(line, markup=False)

    failed = usage_failed = False
    targets = list(_paths(paths))
    whole = output == "json" and not columns  # the Report's own JSON, as `--json` always printed
    rows: _Rows | _PipedRows | None = None
    if output == "table" and not columns:
        names = [STDIN_NAME if t == STDIN else t for t in targets if not isinstance(t, EmptyDirectory)]
        rows = _Rows(names) if sys.stdout.isatty() else _PipedRows(names)
    writer = RowWriter(output, picked) if output != "table" and not whole else None
    picked_rows: list[dict[str, Any]] = []  # a table of -c columns, printed when all are done
    for done, path in enumerate(targets):
        if done:
            started()  # the first image's imports are made: start-up is over (`introspect.startup`)
        if isinstance(path, EmptyDirectory):
            error(f"Error: {literal(path)}: the directory holds no file to inspect")
            failed = True
            continue
        try:
            if path == STDIN:
                from introspect.streaming import StreamSource  # it imports the OVA reader

                stdin = StreamSource(sys.stdin.buffer, STDIN_NAME, digests=policy.verify_manifest)
                report = inspect_image(
                    stdin, expect=expect, policy=policy, guest=budget is not None, guest_budget=budget
                )
            else:
                report = inspect_image(
                    path,
                    expect=expect,
                    policy=policy,
                    cross_check=cross_check,
                    guest=budget is not None,
                    guest_budget=budget,
                )
        except UsageError as problem:
            error(f"Error: {literal(str(problem))}")
            usage_failed = True
            continue
        except OSError as problem:
            error(f"Error: {literal(path)}: {literal(str(problem.strerror or problem))}")
            failed = True
            continue
        except SourceError as problem:
            error(f"Error: {literal(str(problem))}")
            failed = True
            continue
        failed |= not report.ok
        if whole:
            sys.stdout.write(report.model_dump_json() + "\n")
            sys.stdout.flush()  # each line as soon as its image is done, also into a pipe
            continue
        if writer is not None:
            writer.write(report.model_dump(mode="json"))
            continue
        if rows is None:
            picked_rows.append(report.model_dump(mode="json"))
            continue
        rows.add(report)
        if verbose:
            for f in report.findings:
                rows.say(f"{literal(report.source)}: {f.severity} {f.code}: {literal(f.message)}")
    if picked_rows:
        print_table(picked_rows, picked, make_console())
    sys.exit(USAGE_ERROR if usage_failed else 1 if failed else 0)


#: A terminal at least this wide gets the widths rows have into a pipe (`_Rows.UNWRAPPED`).
WIDE_TERMINAL = 240


def _error_console() -> Console:
    """Error lines: one a line, never wrapped."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


class _Rows:
    """The table in a terminal, printed a row at a time as each image is done: every row is its own
    rich table with the same fixed column widths, so they line up under one header, and a long cell
    wraps inside its column."""

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "image",
        "format",
        "virtual size",
        "verdict",
        "vmware / firmware",
        "guest",
        "findings",
    )
    FIXED: ClassVar[dict[str, int]] = {
        "format": 7,
        "virtual size": 12,
        "verdict": 8,
        "vmware / firmware": 26,
        "guest": 22,
    }

    #: Into a pipe or a file, and in a wide terminal: the longest words the column can hold
    #: ("streamOptimized, lsiLogicsas, uefi"); a narrower terminal's rows wrap there instead.
    UNWRAPPED: ClassVar[dict[str, int]] = {"vmware / firmware": 34}
    #: What the findings column keeps at least when the image column takes the rest.
    FINDINGS_ROOM = 20
    #: In a terminal too narrow for FIXED (80 columns is): the short columns keep the width of
    #: their longest value ("qcow2", "1023.9 GiB", "rejected"), never folded; the vmware and guest
    #: columns get a fifth of the rest each (at least NARROWEST), and the image and findings
    #: columns share what is left, 3 to 2: the image says which row it is, the findings why.
    SHORT: ClassVar[dict[str, int]] = {"format": 6, "virtual size": 10, "verdict": 8}
    NARROWEST = 8

    def __init__(self, paths: list[str]) -> None:
        from rich.console import Console

        self.console = Console(highlight=False)
        width = self.console.width
        fixed = {**self.FIXED, **(self.UNWRAPPED if width >= WIDE_TERMINAL else {})}
        longest = max(5, max((len(p) for p in paths), default=5))
        gaps = 2 * (len(self.COLUMNS) - 1)
        left = width - sum(self.SHORT.values()) - gaps
        side = {c: min(fixed[c], max(self.NARROWEST, left // 5)) for c in ("vmware / firmware", "guest")}
        left -= sum(side.values())
        image = max(self.NARROWEST, min(longest, left * 3 // 5))
        narrow = {**self.SHORT, **side, "image": image, "findings": max(self.NARROWEST, left - image)}
        room = width - sum(fixed.values()) - gaps - self.FINDINGS_ROOM
        # FIXED's widths as long as they leave the image column no narrower than the shares would
        wide = room >= self.FINDINGS_ROOM and min(longest, room) >= image
        self.widths = {**fixed, "image": min(longest, room)} if wide else narrow
        self.header_printed = False

    def add(self, report: Report) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, header_style="bold", show_header=not self.header_printed)
        for column in self.COLUMNS:
            table.add_column(column, width=self.widths.get(column), overflow="fold")
        cells = [Text(cell) for cell in _cells(report)]
        cells[3].stylize(VERDICT_STYLE[report.verdict])
        table.add_row(*cells)
        self.console.print(table)
        self.header_printed = True

    def say(self, line: str) -> None:
        """A line under the rows (a finding's message), whole whatever its length."""
        self.console.print(line, markup=False, soft_wrap=True)


class _PipedRows:
    """The table into a pipe or a file: each image is one line whatever its lengths, that grep
    finds whole and `cut`/`awk` split, written and flushed as each image is done. The columns
    line up as in a terminal: the image column as wide as the longest name, the others as
    `_Rows` sets them (a longer cell pushes the rest of its own line along, never onto the next);
    no style, no trailing spaces. Written without rich, which a script's call need not import."""

    GAP = "  "  # between columns, as a rich table without a box has them

    def __init__(self, paths: list[str]) -> None:
        fixed = {**_Rows.FIXED, **_Rows.UNWRAPPED}
        image = max([len("image"), *(len(literal(p)) for p in paths)])
        self.widths = [image, *(fixed[column] for column in _Rows.COLUMNS[1:-1])]
        self.header_printed = False

    def _line(self, cells: tuple[str, ...]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, self.widths, strict=False))
        return (self.GAP.join([*padded, cells[-1]])).rstrip() + "\n"

    def add(self, report: Report) -> None:
        if not self.header_printed:
            sys.stdout.write(self._line(_Rows.COLUMNS))
            self.header_printed = True
        sys.stdout.write(self._line(_cells(report)))
        sys.stdout.flush()  # each row as soon as its image is done

    def say(self, line: str) -> None:
        """A line under the rows (a finding's message)."""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


@main.command()
def schema() -> None:
    """Print the JSON Schema of the Report that `inspect --json` prints."""
    from introspect.report import Report

    click.echo(json.dumps(Report.model_json_schema(), indent=2))


RULE_FIELDS = ("code", "severity", "summary", "names_files")


@main.command()
@output_options
def rules(output: str, columns: tuple[str, ...], as_json: bool) -> None:
    """List every rule a finding can come from, with its default severity (`summary`: what fired;
    `names_files`: the image names a file outside itself, which no policy changes)."""
    from introspect.output import emit, make_console, print_table
    from introspect.policyfile import known_rules

    output = chosen(output, as_json)
    machine = output in ("json", "yaml")
    picked = pick_columns(columns, RULE_FIELDS, RULE_FIELDS if machine else RULE_FIELDS[:3])
    rows = (
        {
            "code": code,
            "severity": rule.severity.value,
            "summary": rule.summary,
            "names_files": rule.names_files,
        }
        for code, rule in sorted(known_rules().items())
    )
    if output == "table":
        print_table(rows, picked, make_console())
    else:
        emit(rows, output, picked)


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write it to FILE.")
@click.option("--namespace", default=NAMESPACE, show_default=True, help="The namespace's name.")
def metadefs(output: str | None, namespace: str) -> None:
    """Print a Glance metadefs namespace describing every property introspect writes.

    Load it with `POST /v2/metadefs/namespaces` (admin), or `glance md-namespace-import --file FILE`:
    Horizon then offers those properties with the values Nova accepts."""
    text = json.dumps(metadefs_namespace(namespace), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text)
    except OSError as error:
        raise click.BadParameter(f"{output}: {error.strerror or error}", param_hint="--output") from None
