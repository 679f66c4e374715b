"""Every trigger runs the one inspection (workers/pipeline.py `introspect_image`) and writes the
same thing for the same image: properties, verdict and findings.

SQL catalog: a worker's task (`import` queued, `rerun` queued, the task published directly),
`import --inline` and `rerun --inline`, on an ordinary image, and on one whose bytes changed
under the same image after its first inspection (a virtual-size mismatch).

Glance: `glance inspect`, `rerun --inline` and `rerun` queued with INTROSPECT_CATALOG=glance,
the task published directly (what `glance listen` queues), `glance sync --inline`, `glance sync`
queued, the listener inspecting inline, and the import plugin; on an ordinary image, and on a
qcow2 declared raw (Glance then records the file's size as virtual_size: a virtual-size
mismatch, beside the format mismatch). The findings cap is lowered to SHORT_CAP characters, in
this process and in the worker (tests/workers/findings_cap.py), so that it bites on the second
image's codes. The plugin runs inside Glance, where the cap cannot be lowered, and the image it
imports is the ordinary one.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import introspect
from introspect.cli import main
from tests.glance.fixtures import Admin, Running, settle
from tests.glance.peer import Api
from tests.workers.services import Deployment, RedisDb, deployment_env, start_worker, wait_until
from workers.catalog import Catalog, Status, open_catalog
from workers.glance import ownership
from workers.glance.cli import glance_group
from workers.glance.client import GlanceClient
from workers.glance.ownership import Marker, desired_properties
from workers.glance.settings import get_glance_settings
from workers.pipeline import State
from workers.settings import get_settings

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.qemu]

ORDINARY, CHANGED = "stream.vmdk", "small.qcow2"
#: What the second image's findings are cut to: within its second code, which is left out whole.
SHORT_CAP = 30


def deployed(tmp: Path, redis_db: RedisDb, **extra: str) -> Deployment:
    env = deployment_env(
        tmp,
        broker_url=redis_db.url,
        prefix=redis_db.prefix,
        queue=f"q-{secrets.token_hex(4)}",
        database_url=None,
        **extra,
    )
    return Deployment(env=env, data_dir=tmp)


def publish(deployment: Deployment, ids: list[str]) -> None:
    """The task itself, published as `glance listen` and `import` do (from a process of the
    deployment: this one's Celery app talks to another broker)."""
    code = f"from workers.tasks import enqueue; enqueue({ids!r})"
    subprocess.run([sys.executable, "-c", code], env=deployment.env, check=True, timeout=60)


def imported_ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    return re.findall(r"^([0-9a-f-]{36})  ", result.stderr, flags=re.MULTILINE)


def same_for_every_trigger(written: dict[str, Any]) -> Any:
    """The one thing every trigger wrote (the assertion shows which trigger differs)."""
    first = next(iter(written.values()))
    assert {trigger: value for trigger, value in written.items() if value != first} == {}, first
    return first


# -- the SQL catalog --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sql(redis_db: RedisDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # file:// locations are confined to INTROSPECT_LOCATION_ROOTS: the tests' images are in tmp dirs
    roots = str(tmp_path_factory.getbasetemp())
    deployment = deployed(tmp_path_factory.mktemp("triggers-sql"), redis_db, INTROSPECT_LOCATION_ROOTS=roots)
    worker = start_worker(deployment.env, deployment.data_dir / "worker.log", "--concurrency", "1")
    try:
        yield deployment
    finally:
        worker.stop()


def sql_written(catalog: Catalog, image_id: str) -> tuple[Any, ...]:
    record = catalog.get(image_id)
    return (record.status, record.verdict, record.findings, catalog.introspected(image_id))


def test_every_sql_trigger_writes_the_same(sql: Deployment, images: dict[str, Path], tmp_path: Path) -> None:
    catalog = open_catalog(f"sqlite:///{sql.data_dir / 'catalog.sqlite'}")

    def located(name: str, trigger: str) -> str:
        copy = tmp_path / f"{trigger.replace(' ', '-')}-{name}"
        shutil.copyfile(images[name], copy)
        return copy.as_uri()

    def registered(name: str, trigger: str) -> str:
        """An image with data whose first inspection is the trigger's."""
        image_id = catalog.create(name=name)
        catalog.start_upload(image_id)
        location = located(name, trigger)
        catalog.set_data(image_id, location=location, size=images[name].stat().st_size, checksum=None)
        return str(image_id)

    def changed(trigger: str) -> str:
        """Inspected once, then other bytes under the same image (a virtual size of 1 TiB, not 7 MiB)."""
        (image_id,) = imported_ids(
            sql.introspect("import", "--inline", "--location", located(CHANGED, trigger))
        )
        shutil.copyfile(images["huge.qcow2"], tmp_path / f"{trigger.replace(' ', '-')}-{CHANGED}")
        return image_id

    def task(ids: list[str]) -> None:
        before = {image_id: catalog.get(image_id).inspected_at for image_id in ids}
        publish(sql, ids)
        wait_until(
            lambda: all(catalog.get(i).inspected_at not in (None, before[i]) for i in ids), what="the task"
        )

    reruns: dict[str, Callable[[list[str]], object]] = {
        "task": lambda ids: task(ids),
        "rerun --inline": lambda ids: sql.introspect("rerun", "--inline", *ids),
        "rerun": lambda ids: sql.introspect("rerun", "--wait", *ids),
    }
    ordinary: dict[str, Any] = {}
    mismatch: dict[str, Any] = {}
    for trigger, run in reruns.items():
        ids = [registered(ORDINARY, trigger), changed(trigger)]
        run(ids)
        ordinary[trigger], mismatch[trigger] = (sql_written(catalog, image_id) for image_id in ids)
    for trigger, flag in (("import", "--wait"), ("import --inline", "--inline")):
        result = sql.introspect("import", flag, "--location", located(ORDINARY, trigger))
        ordinary[trigger] = sql_written(catalog, imported_ids(result)[0])

    report = introspect.inspect(images[ORDINARY])
    assert same_for_every_trigger(ordinary) == (
        Status.ACTIVE,
        "ok",
        [finding.model_dump(mode="json") for finding in report.findings],
        report.properties,
    )
    status, verdict, findings, _ = same_for_every_trigger(mismatch)
    assert (status, verdict) == (Status.REJECTED, "rejected")
    assert {"code": "pipeline.virtual_size_changed", "severity": "reject"}.items() <= findings[-1].items()


# -- Glance ---------------------------------------------------------------------------------------------


@pytest.fixture
def glance_settings(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """INTROSPECT_CATALOG=glance against the session's Glance, here and in the deployment's
    processes; the findings cap lowered here."""
    settings = {
        "INTROSPECT_CATALOG": "glance",
        "INTROSPECT_GLANCE_ENDPOINTS": api.url,
        "INTROSPECT_GLANCE_PROJECT_ID": "0" * 31 + "a",
        "INTROSPECT_GLANCE_CACHE_DIR": str(tmp_path / "ranges"),
    }
    for name in ("OS_CLOUD", "OS_AUTH_URL", "OS_AUTH_TYPE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(ownership, "MAX_FINDINGS_VALUE", SHORT_CAP)
    get_settings.cache_clear()
    get_glance_settings.cache_clear()
    yield settings
    get_settings.cache_clear()
    get_glance_settings.cache_clear()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def glance_written(image: dict[str, Any]) -> dict[str, str]:
    """What introspect wrote to the image: the keys its marker owns."""
    marker = Marker.read(image)
    assert marker is not None, image
    return {key: image[key] for key in sorted(marker.keys)}


@pytest.mark.glance
def test_every_glance_trigger_writes_the_same(
    glance_settings: dict[str, str],
    redis_db: RedisDb,
    tmp_path: Path,
    images: dict[str, Path],
    admin: Admin,
    client: GlanceClient,
    rabbit_vhost: str,
) -> None:
    deployment = deployed(tmp_path, redis_db, **glance_settings, TEST_FINDINGS_CAP=str(SHORT_CAP))
    worker = start_worker(
        deployment.env,
        tmp_path / "worker.log",
        "--concurrency",
        "1",
        "--",
        "-I",
        "tests.workers.findings_cap",
    )
    declared = {ORDINARY: "vmdk", CHANGED: "raw"}

    def uploaded() -> list[str]:
        return [admin.uploaded(images[name], disk_format_=declared[name]) for name in (ORDINARY, CHANGED)]

    def finished(ids: list[str]) -> None:
        def done(image: dict[str, Any]) -> bool:
            marker = Marker.read(image)
            return marker is not None and marker.data is not None and "introspect_claim" not in image

        wait_until(lambda: all(done(admin.get(i)) for i in ids), what="the worker's write-backs")

    def in_process(group: Any, *args: str) -> None:
        result = CliRunner().invoke(group, list(args), catch_exceptions=False)
        assert result.exit_code in (0, 1), result.output  # 1: a rejected image

    def sync(queued: bool) -> Callable[[list[str]], None]:
        def run(ids: list[str]) -> None:
            if queued:
                deployment.introspect("glance", "sync", "--since", since)
                finished(ids)
            else:
                in_process(glance_group, "sync", "--inline", "--since", since)

        return run

    triggers: dict[str, Callable[[list[str]], object]] = {
        "glance inspect": lambda ids: in_process(glance_group, "inspect", *ids),
        "rerun --inline": lambda ids: in_process(main, "rerun", "--inline", *ids),
        "rerun": lambda ids: deployment.introspect("rerun", "--wait", *ids),
        "task": lambda ids: (publish(deployment, ids), finished(ids)),
        "glance sync --inline": sync(queued=False),
        "glance sync": sync(queued=True),
    }
    written: dict[str, list[dict[str, str]]] = {}
    try:
        for trigger, run in triggers.items():
            time.sleep(1.1)  # Glance's updated_at has one-second resolution: sync sees only these
            since = utc_now()
            ids = uploaded()
            run(ids)
            written[trigger] = [glance_written(admin.get(image_id)) for image_id in ids]
    finally:
        worker.stop()
    listening = Running(client, rabbit_vhost)
    listening.thread.start()
    try:
        assert listening.ready.wait(10) and not listening.errors, listening.errors
        ids: list[str] = []
        for name in (ORDINARY, CHANGED):
            # One at a time: Glance on SQLite fails an upload (500, "database is locked") whose last
            # UPDATE meets the listener's write-back of the image before.
            image_id = admin.uploaded(images[name], disk_format_=declared[name])
            ids.append(image_id)
            settle(listening, lambda image_id=image_id: State.INSPECTED in listening.outcomes_for(image_id))
        written["glance listen --inline"] = [glance_written(admin.get(image_id)) for image_id in ids]
    finally:
        listening.stop.set()
        listening.thread.join(10)
    plugin = glance_written(admin.get(admin.imported(images[ORDINARY])))

    ordinary = same_for_every_trigger(
        {trigger: both[0] for trigger, both in written.items()} | {"plugin": plugin}
    )
    assert ordinary == desired_properties(introspect.inspect(images[ORDINARY]))
    mismatch = same_for_every_trigger({trigger: both[1] for trigger, both in written.items()})
    assert mismatch["introspect_verdict"] == "rejected"
    codes = "image.format_mismatch,pipeline.virtual_size_changed"
    assert mismatch["introspect_findings"] == "image.format_mismatch" and len(codes) > SHORT_CAP
