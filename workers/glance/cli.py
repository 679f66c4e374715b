"""`introspect glance ...`: inspect, listen, sync, show, against a Glance image API v2.

Settings come from INTROSPECT_GLANCE_* and the cloud's own (clouds.yaml, secure.yaml, OS_*), read as the
`openstack` command reads them (workers/glance/settings.py, cloud.py).
Without `--inline`, `listen` and `sync` queue the pipeline's task for each image (the worker
then reads it through the Glance catalog, INTROSPECT_CATALOG=glance); with it, the same
inspection (the pipeline's `introspect_image` over the Glance catalog) runs in this process, so
nothing but Glance (and, for `listen`, the notification broker) is needed.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, ParamSpec, TypeVar

import click

from introspect.errors import IntrospectError
from introspect.output import (
    chosen,
    emit,
    emit_one,
    make_console,
    output_options,
    pick_columns,
    print_fields,
    print_table,
)
from introspect.safety import Policy
from introspect.text import literal
from workers.errors import NotReady, PipelineError
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import GlanceClient
from workers.glance.listener import Inline, Listener
from workers.glance.messaging import messaging
from workers.glance.ownership import ATTRIBUTES, MARKER, RESERVED_PREFIX, Marker, digest
from workers.glance.refs import ImageRefError, parse_image_ref
from workers.glance.settings import GlanceSettings, get_glance_settings
from workers.glance.source import RangeCache
from workers.glance.sync import parse_since, sync_pass
from workers.logs import configure, log_options
from workers.pipeline import introspect_image
from workers.policy import command_policy, policy_option
from workers.settings import get_settings

P = ParamSpec("P")
R = TypeVar("R")


def friendly(command: Callable[P, R]) -> Callable[P, R]:
    """Errors an operator can act on become one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (PipelineError, IntrospectError, ImageRefError) as error:
            raise click.ClickException(literal(str(error))) from None

    return wrapper


def _client(settings: GlanceSettings) -> GlanceClient:
    return GlanceClient.from_settings(settings)


def _catalog(client: GlanceClient, settings: GlanceSettings) -> GlanceCatalog:
    cache = RangeCache(settings.cache_dir, settings.cache_max_bytes) if settings.cache_max_bytes else None
    return GlanceCatalog(client, cache=cache, block=settings.read_block, max_block=settings.read_block_max)


def _inspect_now(
    catalog: GlanceCatalog, image_id: str, *, force: bool, policy: Policy
) -> tuple[str, str, dict[str, Any]]:
    """The pipeline's inspection, in this process: (state, message, summary)."""
    try:
        done = introspect_image(
            catalog,
            image_id,
            task_id=None,
            delivery_limit=get_settings().delivery_limit,
            force=force,
            policy=policy,
        )
    except NotReady as error:
        return "not_ready", str(error), {"image_id": image_id, "state": "not_ready", "message": str(error)}
    return str(done.state), done.message, done.summary()


def _queue(image_id: str) -> None:
    """Hand one image to the pipeline's workers (they read it through the Glance catalog)."""
    from workers.tasks import enqueue

    enqueue([image_id])


inline_option = click.option(
    "--inline", is_flag=True, help="Inspect in this process instead of queueing the pipeline's task."
)


@click.group("glance")
def glance_group() -> None:
    """Work with an OpenStack Glance: inspect its images and write the properties back."""


#: What `glance inspect` says of each image (the pipeline's summary of its inspection).
INSPECT_FIELDS = (
    "image_id",
    "state",
    "message",
    "status",
    "verdict",
    "format",
    "findings",
    "written",
    "data_requests",
    "data_bytes",
)
#: What `glance inspect -f value|csv` shows without -c.
INSPECT_COLUMNS = ("image_id", "state", "verdict", "message")


@glance_group.command("inspect")
@click.argument("refs", nargs=-1, required=True)
@click.option(
    "--force", is_flag=True, help="Inspect even when the marker says the data was already inspected."
)
@policy_option
@output_options
@friendly
def inspect_command(
    refs: tuple[str, ...],
    force: bool,
    policy_file: Path | None,
    output: str,
    columns: tuple[str, ...],
    as_json: bool,
) -> None:
    """Inspect images (ids or hrefs) now and write their properties back (exit 1 unless every
    verdict is ok). A row for each image, as it is done."""
    output = chosen(output, as_json)
    machine = output in ("json", "yaml")
    picked = pick_columns(columns, INSPECT_FIELDS, INSPECT_FIELDS if machine else INSPECT_COLUMNS)
    policy = command_policy(policy_file, here=True)
    settings = get_glance_settings()
    failed = False

    def inspected() -> Iterator[dict[str, Any]]:
        nonlocal failed
        with _client(settings) as client:
            catalog = _catalog(client, settings)
            for ref in refs:
                image_id = client.image_id(parse_image_ref(ref))
                _, _, summary = _inspect_now(catalog, image_id, force=force, policy=policy)
                failed = failed or summary.get("verdict") not in (None, "ok")
                yield summary

    if output != "table":
        emit(inspected(), output, picked)
    elif columns:
        print_table(inspected(), picked, make_console())
    else:
        for summary in inspected():
            click.echo(f"{summary['image_id']}  {summary['state']}  {literal(summary['message'])}")
    if failed:
        raise SystemExit(1)


#: What `glance show` shows of an image: a few attributes, introspect's marker, the properties.
SHOW_FIELDS = ("id", "name", "status", "disk_format", "container_format", "introspect_written", "properties")


@glance_group.command("show")
@click.argument("ref")
@output_options
@friendly
def show_command(ref: str, output: str, columns: tuple[str, ...], as_json: bool) -> None:
    """An image's properties, each with who set it: introspect, or someone else."""
    output = chosen(output, as_json)
    picked = pick_columns(columns, SHOW_FIELDS, SHOW_FIELDS)
    settings = get_glance_settings()
    with _client(settings) as client:
        image = client.get_image(client.image_id(parse_image_ref(ref)))
    marker = Marker.read(image)
    owned = marker.keys if marker else {}
    if output != "table":
        emit_one(_shown(image, marker, owned), output, picked)
        return
    if columns:
        print_fields(_shown(image, marker, owned), picked, make_console())
        return
    name = literal(str(image.get("name") or ""))
    click.echo(f"{image['id']}  {name}  {image.get('status')}  {image.get('disk_format')}")
    if marker:
        click.echo(f"introspect wrote at {marker.at} (inspector {marker.inspector}, data {marker.data})")
    for key, value, source in _sources(image, owned):
        click.echo(f"  {literal(key)} = {literal(value)}  ({source})")


def _shown(image: dict[str, Any], marker: Marker | None, owned: Mapping[str, str]) -> dict[str, Any]:
    """`glance show -f json`: the image's attributes, introspect's marker, each property's source."""
    attributes = {key: image.get(key) for key in ("id", "name", "status", "disk_format", "container_format")}
    written = {"at": marker.at, "inspector": marker.inspector, "data": marker.data} if marker else None
    properties = [{"key": k, "value": v, "source": source} for k, v, source in _sources(image, owned)]
    return attributes | {"introspect_written": written, "properties": properties}


def _sources(image: dict[str, Any], owned: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(key, value, who set it) of each string property, in key order."""
    found = []
    for key in sorted(image):
        value = image[key]
        if (
            key == MARKER
            or key in ATTRIBUTES
            or key.startswith(RESERVED_PREFIX)
            or not isinstance(value, str)
        ):
            continue
        if key not in owned:
            source = "someone else's"
        elif digest(value) == owned[key]:
            source = "introspected"
        else:
            source = "changed by someone since introspect wrote it"
        found.append((key, value, source))
    return found


@glance_group.command("listen")
@inline_option
@click.option("--queue", help="Our listener pool, which names our queue (INTROSPECT_GLANCE_QUEUE).")
@policy_option
@log_options
@friendly
def listen_command(
    inline: bool,
    queue: str | None,
    policy_file: Path | None,
    log_level: str,
    log_file: Path | None,
    log_format: str,
) -> None:
    """Consume Glance's notifications and inspect each image once per change of its data
    (--policy: with --inline; queued, the workers' own policy applies)."""
    configure(log_level.upper(), log_file, log_format)
    policy = command_policy(policy_file, here=inline)
    settings = get_glance_settings()
    chosen = messaging(settings, queue=queue)
    stop = _stop_on_signals()
    with _client(settings) as client:
        runner = (
            Inline(_catalog(client, settings), delivery_limit=get_settings().delivery_limit, policy=policy)
            if inline
            else None
        )
        listener = Listener(client, runner if runner is not None else _queue)
        listener.consume(
            chosen,
            should_stop=stop,
            idle=runner.idle if runner is not None else lambda: None,
        )


@glance_group.command("sync")
@click.option("--since", help="Only images changed since this time (ISO 8601, UTC unless a zone is given).")
@click.option(
    "--watch", type=float, help="Repeat every this many seconds, each pass from where the last ended."
)
@click.option("--force", is_flag=True, help="Dispatch even images whose marker covers their current data.")
@inline_option
@policy_option
@log_options
@friendly
def sync_command(
    since: str | None,
    watch: float | None,
    force: bool,
    inline: bool,
    policy_file: Path | None,
    log_level: str,
    log_file: Path | None,
    log_format: str,
) -> None:
    """Poll Glance for images changed since T and inspect those not inspected for their data
    (--policy: with --inline; queued, the workers' own policy applies)."""
    configure(log_level.upper(), log_file, log_format)
    policy = command_policy(policy_file, here=inline)
    settings = get_glance_settings()
    stop = _stop_on_signals()
    try:
        start = parse_since(since) if since else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None
    with _client(settings) as client:
        catalog = _catalog(client, settings)

        def dispatch(image: dict[str, Any]) -> None:
            if inline:
                state, message, _ = _inspect_now(catalog, str(image["id"]), force=force, policy=policy)
                click.echo(f"{image['id']}  {state}  {literal(message)}")
            else:
                _queue(str(image["id"]))

        while True:
            done = sync_pass(client, dispatch, since=start, force=force)
            click.echo(
                f"{done.seen} images changed since {start or 'the beginning'}: "
                f"{done.dispatched} {'inspected' if inline else 'queued'}, {done.up_to_date} up to date, "
                f"{done.not_ready} not active yet"
            )
            start = done.newest
            if watch is None or stop():
                break
            deadline = time.monotonic() + watch
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.5, watch))
            if stop():
                break


def _stop_on_signals() -> Callable[[], bool]:
    """A flag SIGTERM and SIGINT raise, so a loop ends between two images, never inside one."""
    stopped = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: stopped
