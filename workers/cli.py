"""The pipeline's commands, added to `introspect` through the `introspect.commands` entry point
(declared in workers/commands.py, this module imported when one of them runs):
import, images (list/show/history/set/unset), rerun, delete, download, db upgrade, worker, status.

`--inline` (or INTROSPECT_EAGER=1) runs the task code in this process instead of queueing it,
so everything works with no broker. Bad input is one line on stderr and exit status 1, never a
traceback.
"""

from __future__ import annotations

import functools
import getpass
import os
import re
import shutil
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from introspect import vocabulary
from introspect.errors import IntrospectError
from introspect.formats import BY_NAME, canonical_name
from introspect.output import (
    BadInput,
    chosen,
    emit,
    emit_one,
    make_console,
    output_options,
    pick_columns,
    plain,
    print_fields,
    print_table,
    shown,
)
from introspect.safety import Policy
from introspect.text import literal
from workers import pipeline
from workers.backends import open_backend
from workers.catalog import DONE, CatalogBackend, ImageRecord, Property, Selection, Status, upgrade
from workers.catalog.sql import current_revision
from workers.errors import BrokerUnavailable, NoData, NotFound, PipelineError
from workers.glance.ownership import ATTRIBUTES, MAX_KEY, MAX_VALUE, RESERVED_PREFIX
from workers.glance.refs import IMAGE_ID, ImageRefError, parse_image_ref
from workers.logs import log_options
from workers.policy import command_policy, policy_option
from workers.settings import Settings, get_settings, mask
from workers.store import LocalStore, check_location, size_of

if TYPE_CHECKING:
    from introspect.streaming import StreamSource

P = ParamSpec("P")
R = TypeVar("R")

out = make_console()
err = make_console(stderr=True)
STATUS_STYLE = {
    Status.ACTIVE: "green",
    Status.REJECTED: "red",
    Status.ERROR: "magenta",
    Status.IMPORTING: "cyan",
    Status.SAVING: "cyan",
    Status.QUEUED: "dim",
}
POLL = 0.2
COPY_CHUNK = 1 << 20


class ImageRefType(click.ParamType[str]):
    """An image id, or its href as Nova and Glance write it (http://host:9292/v2/images/<id>, or
    /v1/): every command takes either, and gets the id."""

    name = "IMAGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        ref = str(value).strip()
        try:
            return parse_image_ref(ref).id
        except ImageRefError as error:
            if ref and not IMAGE_ID.match(ref.rsplit("/", 1)[-1]):
                shown = literal(repr(ref))
                self.fail(
                    f"{shown} does not end in an image id (a UUID): `introspect images list` shows the ids"
                )
            self.fail(literal(str(error)), param, ctx)


IMAGE_REF = ImageRefType()


def friendly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors an operator can act on into one line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (PipelineError, IntrospectError) as error:
            raise click.ClickException(literal(str(error))) from None

    return wrapper


def _text(value: object, style: str = "") -> Text:
    """Untrusted text (names, paths, keys, values, messages: they come from images and users) as a
    rich Text: printed literally, never read as markup, its control characters escaped."""
    return Text(literal("" if value is None else str(value)), style=style)


def _say(console: Console, *parts: str | Text) -> None:
    """One line of plain strings (ours) and Text (untrusted, see `_text`), never read as markup."""
    console.print(Text.assemble(*parts), soft_wrap=True)


def _catalog(settings: Settings, *, write: bool) -> CatalogBackend:
    """The configured catalog. Only a command that writes (`write`) may create or migrate it: a
    read against a catalog that does not exist, or has no schema, says so and changes nothing."""
    _check_database_url(settings)
    return open_backend(settings, write=write)


#: What INTROSPECT_DATABASE_URL accepts, for the message that refuses anything else.
DATABASE_URLS = (
    "sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
    "or mariadb://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
)


def _check_database_url(settings: Settings) -> None:
    """A database URL that cannot work (unparsable, an unknown database, a driver not installed)
    is one line naming it and what is accepted, before anything is opened."""
    if settings.catalog != "sql" or settings.database_url is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from workers.catalog.sql import normalize_url
    from workers.errors import CatalogConfigError

    url = settings.database_url
    shown = literal(re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url))  # no password in messages
    try:
        make_url(url)
        parsed = normalize_url(url)
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, CatalogConfigError):  # a NoSuchModuleError is an ArgumentError too
        reason = "an unknown kind of database"
    except ArgumentError:
        reason = "not a database URL"
    except ImportError as error:
        reason = f"its driver is not installed ({error})"
    except ValueError as error:
        reason = f"not a database URL ({error})"
    else:
        return
    raise PipelineError(f"INTROSPECT_DATABASE_URL {shown!r}: {reason}: use {DATABASE_URLS}")


def _store(settings: Settings) -> LocalStore:
    return LocalStore(settings.image_dir)


def _inline(flag: bool, settings: Settings) -> bool:
    return flag or settings.eager


inline_option = click.option(
    "--inline",
    is_flag=True,
    help="Run the inspection in this process (no broker needed); also INTROSPECT_EAGER=1.",
)


# -- running tasks ------------------------------------------------------------------------------


def _run_inline(
    catalog: CatalogBackend,
    settings: Settings,
    ids: Iterable[uuid.UUID],
    job_id: str | None,
    policy: Policy | None,
) -> None:
    """The task's code, called directly: the same thing a worker does, in this process."""
    for image_id in ids:
        done = pipeline.introspect_image(
            catalog,
            image_id,
            task_id=f"inline-{uuid.uuid4().hex}",
            job_id=job_id,
            delivery_limit=settings.delivery_limit,
            policy=policy,
        )
        if done.state != pipeline.State.INSPECTED:
            _say(err, f"skipped {image_id}: ", _text(done.message))


def _submit(
    catalog: CatalogBackend,
    settings: Settings,
    ids: list[uuid.UUID],
    *,
    inline: bool,
    job_id: str | None = None,
    policy: Policy | None = None,
) -> None:
    """Inspect `ids` here (`inline`, under `policy`, else INTROSPECT_POLICY), or queue them."""
    if inline:
        _run_inline(catalog, settings, ids, job_id, policy)
        return
    from workers.tasks import enqueue  # Celery only when something is queued

    enqueue(ids, job_id=job_id)


def _wait(
    total: int, done: Callable[[], int], republish: Callable[[], None], *, settings: Settings, label: str
) -> None:
    """Poll until `done()` reaches `total`, with a progress bar. With no progress for the stall
    timeout, publish the unfinished ones again (a broker restart can lose queued messages; a
    duplicate is harmless, the tasks are idempotent)."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        bar = progress.add_task(label, total=total)
        last, last_change = -1, time.monotonic()
        while True:
            finished = done()
            progress.update(bar, completed=finished)
            if finished >= total:
                return
            now = time.monotonic()
            if finished != last:
                last, last_change = finished, now
            elif now - last_change > settings.stall_timeout:
                stalled = f"no progress for {settings.stall_timeout:g}s"
                progress.console.print(f"{stalled}: publishing the unfinished inspections again")
                republish()
                last_change = now
            time.sleep(POLL)


# -- import -------------------------------------------------------------------------------------


def _confine(location: str, settings: Settings) -> str:
    """A `file://` location only under INTROSPECT_LOCATION_ROOTS (symbolic links followed), as Glance
    confines its filesystem store to its data directories; any other local file is refused."""
    parts = urlsplit(location)
    if parts.scheme != "file":
        return location
    path = Path(unquote(parts.path)).resolve()
    roots = settings.file_roots
    if any(path.is_relative_to(root) for root in roots):
        return location
    if not roots:
        why = "no directory is open to file:// locations (INTROSPECT_LOCATION_ROOTS)"
    else:
        why = f"it is outside INTROSPECT_LOCATION_ROOTS ({', '.join(map(str, roots))})"
    raise PipelineError(f"{literal(location)}: {why}: upload the file instead (`introspect import FILE`)")


def _check_format(disk_format: str | None) -> str | None:
    if disk_format is None:
        return None
    name = canonical_name(disk_format)
    if name not in BY_NAME:
        raise click.BadParameter(f"{disk_format!r}: known formats are {', '.join(sorted(BY_NAME))}")
    return name


@click.command("import")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--location",
    "locations",
    multiple=True,
    metavar="URI",
    help="Register an image read in place (file://, http://, https://) instead of copying it.",
)
@click.option("--name", help="Image name (default: the file name).")
@click.option("--disk-format", help="The declared format; a mismatch with the content is a finding.")
@click.option("--owner", default=None, help="Owner recorded on the image (default: you).")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the inspections and show the properties (exit 1 unless all active).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up after this long (exit 1), the inspections stay queued.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show every image in full (default: in full for one, else a summary).",
)
@inline_option
@policy_option
@friendly
def import_command(
    files: tuple[Path, ...],
    locations: tuple[str, ...],
    name: str | None,
    disk_format: str | None,
    owner: str | None,
    wait: bool,
    timeout: float | None,
    verbose: bool,
    inline: bool,
    policy_file: Path | None,
) -> None:
    """Create images, upload their bytes to the store (or register a location), queue inspections.
    Exit status 1 when an inspection shown (--wait, --inline) did not end `active`."""
    if not files and not locations:
        raise click.UsageError("give FILE arguments or --location URI")
    if timeout is not None and not wait:
        raise BadInput("--timeout: only with --wait (without it, import does not wait)")
    settings = get_settings()
    declared = _check_format(disk_format)
    # a bad policy is one line before anything is uploaded
    policy = command_policy(policy_file, here=_inline(inline, settings))
    for file in files:
        if not file.is_file():
            raise PipelineError(f"{file}: no such file")
    for location in locations:
        _confine(check_location(location), settings)
    if name is not None:
        _bounded("--name", name)
    for file in files:
        _bounded("the file name", name or file.name)  # it becomes the image's name
    owner = _one_line("--owner", _bounded("--owner", owner or getpass.getuser()))
    catalog, store = _catalog(settings, write=True), _store(settings)
    inline = _inline(inline, settings)
    if not inline:
        _ping_broker(settings)  # before uploading anything
        if wait:
            _require_workers(settings)  # nobody would ever finish them: say so now, not never
    ids: list[uuid.UUID] = []
    for file in files:
        image_id = catalog.create(name=name or file.name, disk_format=declared, owner=owner)
        catalog.start_upload(image_id)
        try:
            with file.open("rb") as stream:
                members = _member_digester(stream, file.name)
                stored = store.add(image_id, stream, tap=members.feed if members else None)
        except BaseException:
            catalog.delete(image_id)
            raise
        digests = None
        if members is not None:
            members.finish()
            digests = members.member_digests()
        catalog.set_data(
            image_id,
            location=stored.location,
            size=stored.size,
            checksum=stored.checksum,
            member_digests=digests,
        )
        _say(err, f"{image_id}  ", _text(file), f"  {stored.size} bytes  sha256 {stored.checksum}")
        ids.append(image_id)
    for location in locations:
        size = size_of(location)
        named = name or location.rsplit("/", 1)[-1][:MAX_NAME] or location[:MAX_NAME]
        image_id = catalog.create(name=named, disk_format=declared, owner=owner)
        catalog.start_upload(image_id)
        catalog.set_data(image_id, location=location, size=size, checksum=None)
        _say(err, f"{image_id}  ", _text(location), f"  {size} bytes (read in place)")
        ids.append(image_id)
    try:
        _submit(catalog, settings, ids, inline=inline, policy=policy)
    except BrokerUnavailable as error:
        later = " ".join(map(str, ids))
        message = f"{error}; the images stay `saving`: queue them later with `introspect rerun {later}`"
        raise BrokerUnavailable(message) from None
    if not inline and not wait:
        err.print(f"queued {len(ids)} inspection(s) on {mask(settings.broker_url)}", markup=False)
        return
    if not inline:
        _wait_for_import(catalog, settings, ids, timeout=timeout)
    records = [catalog.get(image_id) for image_id in ids]
    if verbose or len(records) == 1:
        for record in records:
            _show(catalog, record, as_json=False)
    else:
        _summary(records)
    failed = [record for record in records if record.status != Status.ACTIVE]
    if failed:
        shown = ", ".join(f"{record.id} {record.status}" for record in failed)
        err.print(f"{len(failed)} of {len(records)} image(s) did not end active: {shown}", markup=False)
        raise SystemExit(1)


def _member_digester(stream: BinaryIO, name: str) -> StreamSource | None:
    """For a tar (an OVA), what hashes its members as the upload passes them: the inspection then
    verifies the manifest against those digests, so an import reads the file once, whatever its
    size. None for anything else."""
    from introspect.containers.ova import BLOCK, sniff_ova
    from introspect.streaming import StreamSource

    head = stream.read(BLOCK)
    stream.seek(0)
    return StreamSource.fed(name, digests=True, keep_head=0, keep_tail=0) if sniff_ova(head) else None


def _summary(records: list[ImageRecord]) -> None:
    """Many images in a few lines: the counts by status, then each image that did not end active
    with the codes of its findings (`-v`, or `images show ID`, for everything)."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    shown = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
    out.print(f"{len(records)} images: {shown}", markup=False)
    for record in records:
        if record.status != Status.ACTIVE:
            codes = ", ".join(
                str(f.get("code")) for f in record.findings or () if f.get("severity") != "info"
            )
            _say(out, f"{record.id}  ", _text(record.name), "  ", _status(record.status), "  ", _text(codes))


#: Seconds a live worker has to answer when `import --wait` asks who consumes its queue.
WORKER_ANSWER = 2.0


def _live_workers(settings: Settings) -> list[str]:
    """The workers that answer on the broker within WORKER_ANSWER seconds and consume our queue."""
    from workers.app import app

    try:
        replies = app.control.inspect(timeout=WORKER_ANSWER).active_queues() or {}
    except Exception as error:  # kombu's and the transport's own: the broker went away meanwhile
        raise BrokerUnavailable(f"cannot reach the broker at {mask(settings.broker_url)}: {error}") from None
    return sorted(
        worker
        for worker, queues in replies.items()
        if any(queue.get("name") == settings.queue for queue in queues or ())
    )


def _no_workers(settings: Settings, waited: str) -> PipelineError:
    return PipelineError(
        f"no worker consumes queue {settings.queue!r} on {mask(settings.broker_url)} (none answered in "
        f"{waited}): start one with `introspect worker`, or use --inline"
    )


def _require_workers(settings: Settings) -> list[str]:
    workers = _live_workers(settings)
    if not workers:
        raise _no_workers(settings, f"{WORKER_ANSWER:g}s")
    return workers


def _wait_for_import(
    catalog: CatalogBackend, settings: Settings, ids: list[uuid.UUID], *, timeout: float | None
) -> None:
    """`import --wait`: a progress bar until every inspection is done. It never waits on nobody:
    with no progress for the stall timeout it asks the broker again who is alive (none: one line,
    exit 1, once the worker grace has passed without one) and says what it publishes again (a broker
    restart can lose queued messages; a duplicate is harmless). Past `timeout`, it gives up with
    the ids still unfinished."""
    total = len(ids)
    deadline = None if timeout is None else time.monotonic() + timeout
    workers_seen = time.monotonic()  # the import asked before it queued anything
    columns = (TextColumn("inspecting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        bar = progress.add_task("inspecting", total=total)
        last, last_change = -1, time.monotonic()
        while True:
            pending = [i for i, status in catalog.statuses(ids).items() if status not in DONE]
            progress.update(bar, completed=total - len(pending))
            if not pending:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                listed = " ".join(map(str, pending))
                raise PipelineError(
                    f"--timeout {timeout:g}s: {len(pending)} of {total} inspection(s) not finished, still "
                    f"queued: {listed} (`introspect images show ID` follows one)"
                )
            if len(pending) != last:
                last, last_change = len(pending), now
            elif now - last_change > settings.stall_timeout:
                stalled = f"no progress for {settings.stall_timeout:g}s"
                try:
                    workers = _live_workers(settings)
                except BrokerUnavailable as error:  # a broker restarting: its workers reconnect
                    progress.console.print(f"{stalled}: {literal(str(error))}; still waiting", markup=False)
                    workers_seen = time.monotonic()  # their grace starts when the broker is back
                else:
                    if workers:
                        workers_seen = now
                        progress.console.print(
                            f"{stalled}: publishing the unfinished inspections again "
                            f"({len(pending)} of {total}; {len(workers)} worker(s) alive)",
                            markup=False,
                        )
                        _submit(catalog, settings, pending, inline=False)
                    elif now - workers_seen > settings.worker_grace:
                        raise _no_workers(settings, f"the last {now - workers_seen:.0f}s")
                    else:
                        progress.console.print(
                            f"{stalled}: no worker answered; waiting up to {settings.worker_grace:g}s for one "
                            "to come back (a restarted broker's workers reconnect)",
                            markup=False,
                        )
                last_change = now
            time.sleep(POLL)


# -- images ---------------------------------------------------------------------------------------


@click.group("images")
def images_group() -> None:
    """List, show and override images in the catalog."""


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _status(status: Status) -> Text:
    return Text(str(status), style=STATUS_STYLE[status])


#: Plumbing, not facts about the image: the claim's token, the audit's lookup, the upload's digests.
HIDDEN_FIELDS = frozenset({"claim_token", "disk_format_override", "member_digests"})


def _record_json(record: ImageRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude=set(HIDDEN_FIELDS))


#: What `images list` shows by default (-c picks any field of the record).
LIST_COLUMNS = (
    "id",
    "name",
    "status",
    "disk_format",
    "size",
    "virtual_size",
    "inspector_version",
    "updated_at",
)
RECORD_FIELDS = [field for field in ImageRecord.model_fields if field not in HIDDEN_FIELDS]


STATUS_VALUES = frozenset(status.value for status in Status)


def _cell(column: str, row: dict[str, Any]) -> Text:
    """One table cell: sizes for people, statuses in colour, everything else literal."""
    value = row.get(column)
    if column in ("size", "virtual_size", "inspected_virtual_size"):
        return Text(_human(value))
    if column == "status" and isinstance(value, str) and value in STATUS_VALUES:
        return _status(Status(value))
    if column.endswith("_at") and isinstance(value, str):
        return Text(value.replace("T", " ")[:19])
    return _text("-" if value is None else plain(value) if isinstance(value, dict | list) else value)


def _table(rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    print_table(rows, columns, out, cell=_cell)


@images_group.command("list")
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in Status]))
@click.option("--disk-format", "formats", multiple=True, metavar="FORMAT", help="disk_format (repeatable).")
@output_options
@friendly
def list_command(
    statuses: tuple[str, ...], formats: tuple[str, ...], output: str, columns: tuple[str, ...], as_json: bool
) -> None:
    """Images in the catalog, oldest id first."""
    output = chosen(output, as_json)
    machine = output in ("json", "yaml")
    picked = pick_columns(columns, RECORD_FIELDS, RECORD_FIELDS if machine else LIST_COLUMNS)
    catalog = _catalog(get_settings(), write=False)
    records = catalog.images(statuses=statuses, formats=[canonical_name(f) for f in formats])
    rows = (_record_json(record) for record in records)
    if output == "table":
        _table(rows, picked)
    else:
        emit(rows, output, picked)


SHOW_FIELDS = [*RECORD_FIELDS, "properties"]


def _show(
    catalog: CatalogBackend,
    record: ImageRecord,
    *,
    as_json: bool = False,
    output: str = "table",
    columns: tuple[str, ...] = (),
) -> None:
    output = chosen(output, as_json)
    props = catalog.properties(record.id)
    if output != "table" or columns:
        data = _record_json(record) | {"properties": [p.model_dump(mode="json") for p in props]}
        picked = pick_columns(columns, SHOW_FIELDS, SHOW_FIELDS)
        if output == "table":
            _table(({"field": column, "value": data[column]} for column in picked), ["field", "value"])
        else:
            emit_one(data, output, picked)
        return
    _say(out, Text(str(record.id), style="bold"), "  ", _text(record.name), "  ", _status(record.status))
    facts = {
        "disk_format": record.disk_format,
        "container_format": record.container_format,
        "size": record.size,
        "virtual_size": record.virtual_size,
        "checksum (sha256)": record.checksum,
        "location": record.location,
        "owner": record.owner,
        "verdict": record.verdict,
        "inspector_version": record.inspector_version,
        "inspected_at": record.inspected_at,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    for key, value in facts.items():
        if value is not None:
            _say(out, f"  {key:18} ", _text(value))
    for finding in record.findings or ():
        severity, code = _text(finding["severity"], "red"), _text(finding["code"])
        _say(out, "  ", severity, " ", code, ": ", _text(finding["message"]))
    for problem in record.mismatches:
        _say(out, "  ", Text("mismatch", style="yellow"), " ", _text(problem))
    table = Table("key", "value", "source", "introspected", "admin")
    for prop in props:
        found, admin = prop.introspected, prop.admin
        introspected = (
            f"{found.value} (v{found.inspector_version}, {found.task_id}, {found.set_at:%Y-%m-%d %H:%M:%S})"
            if found
            else "-"
        )
        admin_value = f"{admin.value} (by {admin.set_by}, {admin.set_at:%Y-%m-%d %H:%M:%S})" if admin else "-"
        table.add_row(
            _text(prop.key), _text(prop.value), str(prop.source), _text(introspected), _text(admin_value)
        )
    out.print(table)


@images_group.command("show")
@click.argument("image_id", type=IMAGE_REF)
@output_options
@friendly
def show_command(image_id: str, output: str, columns: tuple[str, ...], as_json: bool) -> None:
    """One image: its record, findings, and every property with its source and version."""
    catalog = _catalog(get_settings(), write=False)
    _show(catalog, catalog.get(image_id), as_json=as_json, output=output, columns=columns)


HISTORY_FIELDS = ("at", "key", "old", "new", "source", "actor", "task_id")


@images_group.command("history")
@click.argument("image_id", type=IMAGE_REF)
@click.option("--deleted", is_flag=True, help="The history of a deleted image, from its tombstone.")
@output_options
@friendly
def history_command(
    image_id: str, deleted: bool, output: str, columns: tuple[str, ...], as_json: bool
) -> None:
    """Every change of every property of one image: who, when, which task."""
    output = chosen(output, as_json)
    fields = ["id", *HISTORY_FIELDS]
    picked = pick_columns(columns, fields, fields if output in ("json", "yaml") else HISTORY_FIELDS)
    catalog = _catalog(get_settings(), write=False)
    changes = catalog.deleted_history(image_id) if deleted else catalog.history(image_id)
    rows = (change.model_dump(mode="json") for change in changes)
    if output == "table":
        _table(rows, picked)
    else:
        emit(rows, output, picked)


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{shown(item)}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


# -- what may go into the catalog: Glance's rules, checked before anything reaches the database ----

#: Glance's limits: String(255) names, owners and property keys; Text values (MySQL's TEXT, 64 KiB).
MAX_NAME = MAX_KEY
#: What Glance and Nova property names are made of (`hw_disk_bus`, `os:secure_boot`, `img_hv_type`).
PROPERTY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
#: Image attributes, not properties: set elsewhere, or by no one. `disk_format` stays overridable
#: as a property (an inspection writes it; the audit of `rerun --dry-run` counts overrides).
NOT_PROPERTIES = ATTRIBUTES - {"disk_format"}
#: Keys inspections write: an admin value would pass for introspect's own.
OWN_PREFIX = "introspect_"


def _bounded(what: str, value: str, *, limit: int = MAX_NAME) -> str:
    """A name, owner or user: something there, and at most `limit` characters (the column's size;
    SQLite does not enforce it, PostgreSQL fails the statement)."""
    if not value.strip():
        raise PipelineError(f"{what} {shown(value)} is empty: give one with a visible character")
    if len(value) > limit:
        raise PipelineError(f"{what} {shown(value)} is {len(value)} characters long: at most {limit}")
    return value


def _one_line(what: str, value: str) -> str:
    """Text shown as one line (a user name, a property value): no control characters."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise PipelineError(f"{what} {shown(value)} holds control characters (a newline?): one line of text")
    return value


def _check_key(key: str, *, force: bool) -> None:
    quoted = shown(key)
    if len(key) > MAX_KEY:
        raise PipelineError(f"key {quoted} is {len(key)} characters long: at most {MAX_KEY}")
    if not PROPERTY_KEY.fullmatch(key):
        raise PipelineError(
            f"key {quoted}: a property key is letters, digits and _ . : - (starting with a letter or digit)"
        )
    if key in NOT_PROPERTIES:
        raise PipelineError(f"key {quoted} is an image attribute, not a property: it cannot be set here")
    if key.startswith(RESERVED_PREFIX):
        raise PipelineError(f"key {quoted}: the {RESERVED_PREFIX} prefix is reserved to Glance")
    if key.startswith(OWN_PREFIX) and not force:
        raise PipelineError(
            f"key {quoted}: {OWN_PREFIX}* keys are written by inspections: --force sets it anyway"
        )


def _check_value(key: str, value: str, *, force: bool) -> None:
    if not value.strip():
        raise PipelineError(f"{key}: an empty value: `introspect images unset IMAGE {key}` drops an override")
    _one_line(f"{key}: the value", value)
    if len(value.encode()) > MAX_VALUE:
        raise PipelineError(f"{key}: a value of {len(value.encode())} bytes: at most {MAX_VALUE}")
    refused = None if force else _vocabulary(key, value)
    if refused:
        raise PipelineError(f"{key}={shown(value)}: {refused}: --force sets it anyway")


def _vocabulary(key: str, value: str) -> str | None:
    """What the project's vocabulary (introspect/data/vocabulary.json: the names and values it
    writes, the metadefs it ships) says against an admin's `key=value`, or None."""
    return vocabulary.check_override(key, value)


def _user(user: str | None) -> str:
    return _one_line("--user", _bounded("--user", user or getpass.getuser()))


def _effective(prop: Property | None) -> str:
    return "(none)" if prop is None else f"{prop.value} ({prop.source})"


def _say_changes(before: dict[str, Property], after: dict[str, Property], keys: Iterable[str]) -> None:
    """What each key's effective value was, and is now."""
    for key in keys:
        old, new = _effective(before.get(key)), _effective(after.get(key))
        if old == new:
            _say(out, _text(key), ": ", _text(new), ", unchanged")
        else:
            _say(out, _text(key), ": ", _text(old), " -> ", _text(new))


def _by_key(catalog: CatalogBackend, image_id: str) -> dict[str, Property]:
    return {prop.key: prop for prop in catalog.properties(image_id)}


@images_group.command("set")
@click.argument("image_id", type=IMAGE_REF)
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--user", default=None, help="Who is setting it (default: you).")
@click.option("--force", is_flag=True, help="Set introspect_* keys and values the vocabulary does not know.")
@friendly
def set_command(image_id: str, pairs: tuple[str, ...], user: str | None, force: bool) -> None:
    """Admin overrides: they win over introspected values and survive every re-run. Keys and values
    are checked (Glance's rules, the vocabulary introspect writes); each change is printed."""
    values = _pairs(pairs)
    for key, value in values.items():
        _check_key(key, force=force)
        _check_value(key, value, force=force)
    actor = _user(user)
    catalog = _catalog(get_settings(), write=True)
    before = _by_key(catalog, image_id)
    catalog.set_admin(image_id, values, actor=actor)
    _say_changes(before, _by_key(catalog, image_id), values)


@images_group.command("unset")
@click.argument("image_id", type=IMAGE_REF)
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@click.option("--user", default=None, help="Who is clearing it (default: you).")
@friendly
def unset_command(image_id: str, keys: tuple[str, ...], user: str | None) -> None:
    """Drop admin overrides: the introspected value shows again."""
    for key in keys:
        _check_key(key, force=True)
    actor = _user(user)
    catalog = _catalog(get_settings(), write=True)
    before = _by_key(catalog, image_id)
    catalog.unset_admin(image_id, keys, actor=actor)
    _say_changes(before, _by_key(catalog, image_id), keys)


# -- rerun ----------------------------------------------------------------------------------------


@click.command("rerun")
@click.argument("image_ids", nargs=-1, type=IMAGE_REF)
@click.option("--all", "everything", is_flag=True, help="Every image with data.")
@click.option(
    "--disk-format", "formats", multiple=True, metavar="FORMAT", help="By disk_format (repeatable)."
)
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in Status]))
@click.option("--inspector-older-than", type=int, metavar="V", help="Inspected by a version older than V.")
@click.option("--failed", is_flag=True, help="Images whose last inspection ended in error.")
@click.option("--dry-run", is_flag=True, help="List what would be re-run, and every declared/found mismatch.")
@click.option("--wait", is_flag=True, help="Show progress until every re-run is done, then a summary.")
@inline_option
@policy_option
@output_options
@friendly
def rerun_command(
    image_ids: tuple[str, ...],
    everything: bool,
    formats: tuple[str, ...],
    statuses: tuple[str, ...],
    inspector_older_than: int | None,
    failed: bool,
    dry_run: bool,
    wait: bool,
    inline: bool,
    policy_file: Path | None,
    output: str,
    columns: tuple[str, ...],
    as_json: bool,
) -> None:
    """Inspect images again (after a parser upgrade, a policy change, a failure). With --dry-run,
    a row for each image it would re-run (action `rerun`), then one for each image whose declared
    disk_format or virtual size disagrees with its last inspection (action `mismatch`, with its
    problems); with --wait or --inline, the images of the job by status. --policy: with --inline."""
    settings = get_settings()
    output = chosen(output, as_json)
    picked = pick_columns(columns, DRY_RUN_FIELDS if dry_run else JOB_FIELDS, ())
    inline = _inline(inline, settings)
    policy = command_policy(policy_file, here=inline or dry_run)  # one line before anything happens
    try:
        ids = [uuid.UUID(image_id) for image_id in image_ids]
    except ValueError:
        raise NotFound(next(i for i in image_ids if not _is_uuid(i))) from None
    selection = Selection(
        all=everything,
        ids=ids,
        formats=[canonical_name(f) for f in formats],
        statuses=[Status(s) for s in statuses],
        inspector_older_than=inspector_older_than,
        failed=failed,
    )
    catalog = _catalog(settings, write=not dry_run)
    for image_id in ids:
        catalog.get(image_id)  # an unknown id is an error, not silently nothing
    if dry_run:
        _dry_run(catalog, selection, settings, output=output, picked=picked)
        return
    if not inline:
        _ping_broker(settings)
    job_id = uuid.uuid4().hex
    total = pipeline.fan_out(
        catalog,
        selection,
        lambda page: _submit(catalog, settings, page, inline=inline, job_id=job_id, policy=policy),
        batch=settings.rerun_batch,
    )
    err.print(f"{'ran' if inline else 'queued'} {total} inspection(s) (job {job_id})")
    if wait and not inline:

        def finished() -> int:
            return sum(catalog.job_progress(job_id).values())

        def republish() -> None:
            for page in catalog.select_ids(selection, batch=settings.rerun_batch, exclude_job=job_id):
                _submit(catalog, settings, page, inline=False, job_id=job_id)

        _wait(total, finished, republish, settings=settings, label="re-running")
    if wait or inline:
        rows = [
            {"status": status, "images": count}
            for status, count in sorted(catalog.job_progress(job_id).items())
        ]
        if output == "table":
            _table(rows, picked or list(JOB_FIELDS))
        else:
            emit(rows, output, picked or list(JOB_FIELDS))


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


#: The rows of `rerun --dry-run`, and of the job's summary after `rerun --wait` or `--inline`.
DRY_RUN_FIELDS = ("action", "id", "problems")
JOB_FIELDS = ("status", "images")


def _dry_run(
    catalog: CatalogBackend, selection: Selection, settings: Settings, *, output: str, picked: list[str]
) -> None:
    """The selection, then the audit, a row each as they come; then the counts (on stderr in a
    machine format, where stdout holds the rows alone)."""
    counts = {"rerun": 0, "mismatch": 0}

    def rows() -> Iterator[dict[str, Any]]:
        for page in catalog.select_ids(selection, batch=settings.rerun_batch):
            for image_id in page:
                counts["rerun"] += 1
                yield {"action": "rerun", "id": str(image_id), "problems": []}
        for record in catalog.mismatched(batch=settings.rerun_batch):
            counts["mismatch"] += 1
            yield {"action": "mismatch", "id": str(record.id), "problems": record.mismatches}

    if output != "table":
        emit(rows(), output, picked or list(DRY_RUN_FIELDS))
    elif picked:
        _table(rows(), picked)
    else:
        for row in rows():
            if row["action"] == "rerun":
                out.print(f"would re-run {row['id']}")
            else:
                _say(out, f"mismatch {row['id']}: ", _text("; ".join(row["problems"])))
    would = f"{counts['rerun']} image(s) would be re-run"
    disagree = f"{counts['mismatch']} image(s) disagree with their last inspection"
    _say(out if output == "table" else err, f"{would}; {disagree}")


# -- delete, download -----------------------------------------------------------------------------


@click.command("delete")
@click.argument("image_id", type=IMAGE_REF)
@friendly
def delete_command(image_id: str) -> None:
    """Delete an image: its record, properties, and its file if the store holds it. Its history
    stays in a tombstone: `introspect images history --deleted ID`."""
    settings = get_settings()
    record = _catalog(settings, write=True).delete(image_id)
    if record.location:
        _store(settings).delete(record.location)
    err.print(f"deleted {record.id}")


@click.command("download")
@click.argument("image_id", type=IMAGE_REF)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: ./NAME; '-' for standard output).",
)
@friendly
def download_command(image_id: str, output: Path | None) -> None:
    """Copy an image's bytes out of the store (or from its location)."""
    catalog = _catalog(get_settings(), write=False)
    record = catalog.get(image_id)
    if record.location is None:
        raise NoData(f"image {record.id} has no data ({record.status})")
    target = output or Path(record.name or str(record.id)).name
    settings = get_settings()
    if not _store(settings).owns(record.location):
        _confine(record.location, settings)  # registered before the roots were narrowed
    with catalog.open_location(record.location) as source:
        if str(target) == "-":
            _copy(source.pread, source.size, sys.stdout.buffer.write)
            return
        directory = Path(target).resolve().parent
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{Path(target).name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as file:
                _copy(source.pread, source.size, file.write)
            shutil.move(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    _say(err, f"{record.id} -> ", _text(target))


def _copy(pread: Callable[[int, int], bytes], size: int, write: Callable[[bytes], Any]) -> None:
    offset = 0
    while offset < size:
        chunk = pread(offset, min(COPY_CHUNK, size - offset))
        if not chunk:
            raise NoData(f"the image data ended at {offset} of {size} bytes")
        write(chunk)
        offset += len(chunk)


# -- db, worker, status ---------------------------------------------------------------------------


@click.group("db")
def db_group() -> None:
    """The catalog database."""


@db_group.command("upgrade")
@friendly
def db_upgrade_command() -> None:
    """Apply the catalog's migrations (they also run on first use)."""
    from workers.catalog.sql import describe, make_engine

    settings = get_settings()
    _check_database_url(settings)
    engine = make_engine(settings.catalog_url, create_directory=settings.database_url is None)
    ran = upgrade(engine)
    done = "upgraded to" if ran else "already at"
    out.print(f"{describe(engine)}: {done} {current_revision(engine)}", markup=False)


@click.command("worker")
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1), help="Worker processes (default: 3 per CPU)."
)
@click.option("--queues", "-Q", help="Comma-separated queues (default: INTROSPECT_QUEUE).")
@policy_option
@log_options
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@friendly
def worker_command(
    concurrency: int | None,
    queues: str | None,
    policy_file: Path | None,
    log_level: str,
    log_file: Path | None,
    log_format: str,
    celery_args: tuple[str, ...],
) -> None:
    """Start a Celery worker (it replaces this process); extra arguments go to `celery worker`.
    Its tasks inspect under --policy (else INTROSPECT_POLICY)."""
    settings = get_settings()
    command_policy(policy_file, here=True)  # a bad file is one line now, not a failure per task
    if policy_file is not None:
        os.environ["INTROSPECT_POLICY"] = str(policy_file.resolve())  # for every pool process
    _catalog(settings, write=True)  # reachable and migrated: one clear line now, not a retry loop
    _ping_broker(settings)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.worker",  # workers.app's app, its log lines in --log-format
        "worker",
        "--loglevel",
        log_level.upper(),
        "--queues",
        queues or settings.queue,
        "--hostname",
        f"introspect-{os.getpid()}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if log_file:
        argv += ["--logfile", str(log_file)]
    os.environ["INTROSPECT_LOG_FORMAT"] = log_format
    argv += list(celery_args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def _ping_broker(settings: Settings) -> None:
    from workers.app import app

    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=0, interval_start=0, timeout=2)
    except Exception as error:
        raise BrokerUnavailable(f"cannot reach the broker at {mask(settings.broker_url)}: {error}") from None


STATUS_FIELDS = ("broker", "workers", "queue", "catalog")


@click.command("status")
@click.option("--timeout", default=1.0, show_default=True, help="Seconds to wait for workers to answer.")
@output_options
@friendly
def status_command(timeout: float, output: str, columns: tuple[str, ...], as_json: bool) -> None:
    """Broker reachability, live workers, queue depth, and images by status (exit 1 when the
    broker or the catalog cannot be reached). -c picks broker, workers, queue or catalog."""
    from workers.app import app

    output = chosen(output, as_json)
    picked = pick_columns(columns, STATUS_FIELDS, STATUS_FIELDS)
    settings = get_settings()
    state: dict[str, Any] = {"broker": {"url": mask(settings.broker_url), "reachable": True}}
    try:
        _ping_broker(settings)
    except BrokerUnavailable as error:
        state["broker"] |= {"reachable": False, "error": str(error)}
    if state["broker"]["reachable"]:
        state["workers"] = sorted(app.control.inspect(timeout=timeout).ping() or {})
        state["queue"] = {"name": settings.queue, "waiting": _queue_depth(app, settings.queue)}
    else:
        state |= {"workers": None, "queue": None}  # unknown: the broker did not answer
    try:
        catalog = _catalog(settings, write=False)
        state["catalog"] = {"url": catalog.url, "images": dict(sorted(catalog.counts().items()))}
    except PipelineError as error:
        state["catalog"] = {"error": str(error)}
    healthy = state["broker"]["reachable"] and "error" not in state["catalog"]
    if output != "table":
        emit_one(state, output, picked)
    elif columns:
        print_fields(state, picked, out)
    else:
        _say_status(state)
    if not healthy:
        raise SystemExit(1)


def _say_status(state: dict[str, Any]) -> None:
    broker, catalog = state["broker"], state["catalog"]
    if broker["reachable"]:
        _say(out, f"broker   {broker['url']}: ", Text("reachable", style="green"))
        workers = state["workers"]
        alive = f"workers  {len(workers)} alive" + (f": {', '.join(workers)}" if workers else "")
        _say(out, _text(alive))
        queue = state["queue"]
        _say(out, _text(f"queue    {queue['name']}: {queue['waiting']} message(s) waiting"))
    else:
        _say(out, "broker   ", _text(broker["error"], "red"))
    if "error" in catalog:
        _say(out, "catalog  ", _text(catalog["error"], "red"))
    else:
        summary = ", ".join(f"{status} {count}" for status, count in catalog["images"].items()) or "empty"
        _say(out, "catalog  ", _text(catalog["url"]), f": {summary}")


def _queue_depth(app: Any, queue: str) -> int:
    from kombu.exceptions import ChannelError

    with app.connection_for_read() as connection:
        try:
            _, depth, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:
            return 0  # never declared: nothing was ever queued there
    return int(depth)


#: The commands workers/commands.py declares (`introspect.commands`), imported when one runs.
__all__ = [
    "db_group",
    "delete_command",
    "download_command",
    "images_group",
    "import_command",
    "rerun_command",
    "status_command",
    "worker_command",
]
