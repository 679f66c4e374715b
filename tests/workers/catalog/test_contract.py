"""The catalog contract (workers/catalog/backend.py), checked once for every backend: SQLite,
PostgreSQL, MariaDB, and a real Glance (keystone-less, and behind keystone and TLS, where the
client finds it in the catalog). What only one backend does (the SQL audit history and status
table, Glance's marker and claim property) is tested beside it: tests/workers/catalog/test_sql.py,
tests/glance/test_catalog.py.

Each backend is isolated: its own SQLite file, its own PostgreSQL schema, its own database on
the session's private MariaDB server, and on the session's
Glance only images this test uploaded (every selection names them by id). A new backend is one
fixture below and one line in BACKENDS.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from introspect import INSPECTOR_VERSION
from tests.glance.fixtures import Admin, Peer, use_settings
from tests.workers.conftest import migrated_catalog
from workers.catalog import Catalog, CatalogBackend, Outcome, Selection, Source, Status
from workers.errors import NoData, NotFound, PipelineError, UpToDate
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import GlanceClient
from workers.glance.settings import get_glance_settings

#: What qemu-img made (tests.workers.services.IMAGE_RECIPES): the data of every image here.
DATA = "small.qcow2"
DATA_VIRTUAL_SIZE = 7 << 20
VERDICTS = {Status.ACTIVE: "ok", Status.REJECTED: "rejected", Status.ERROR: "error"}


@dataclass
class Backend:
    """A catalog under test, and how to put an image in it."""

    catalog: CatalogBackend
    #: An image with `data`, declared as `disk_format`, waiting for its first inspection.
    with_data: Callable[[Path, str], uuid.UUID]
    #: An image with no data yet.
    without_data: Callable[[], uuid.UUID]
    data: Path

    def image(self, disk_format: str = "qcow2") -> uuid.UUID:
        return self.with_data(self.data, disk_format)


def sql_backend(catalog: Catalog, images: dict[str, Path]) -> Backend:
    def with_data(path: Path, disk_format: str) -> uuid.UUID:
        image_id = catalog.create(name=path.name, disk_format=disk_format)
        catalog.start_upload(image_id)
        catalog.set_data(image_id, location=path.as_uri(), size=path.stat().st_size, checksum=None)
        return image_id

    return Backend(catalog, with_data, catalog.create, images[DATA])


@pytest.fixture
def sqlite_catalog(tmp_path: Path, images: dict[str, Path]) -> Iterator[Backend]:
    with migrated_catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}") as catalog:
        yield sql_backend(catalog, images)


@pytest.fixture
def postgresql_catalog(pg_schema: str, images: dict[str, Path]) -> Iterator[Backend]:
    with migrated_catalog(pg_schema) as catalog:
        yield sql_backend(catalog, images)


@pytest.fixture
def mariadb_catalog(mariadb_database: str, images: dict[str, Path]) -> Iterator[Backend]:
    with migrated_catalog(mariadb_database) as catalog:
        yield sql_backend(catalog, images)


def glance_backend(client: GlanceClient, admin: Admin, images: dict[str, Path]) -> Backend:
    def with_data(path: Path, disk_format: str) -> uuid.UUID:
        return uuid.UUID(admin.uploaded(path, disk_format_=disk_format))

    def without_data() -> uuid.UUID:
        return uuid.UUID(admin.create("no data yet", "qcow2"))

    return Backend(GlanceCatalog(client), with_data, without_data, images[DATA])


@pytest.fixture
def glance_catalog(client: GlanceClient, admin: Admin, images: dict[str, Path]) -> Backend:
    return glance_backend(client, admin, images)


@pytest.fixture
def glance_keystone_catalog(
    keystone_peer: Peer, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    """The Glance catalog as the service builds it from a clouds.yaml: keystone's token, Glance
    found in the catalog, TLS verified with the session's CA."""
    with GlanceClient.from_settings(use_settings(monkeypatch, keystone_peer.env)) as client:
        yield glance_backend(client, keystone_peer.admin, images)
    get_glance_settings.cache_clear()


BACKENDS = [
    pytest.param("sqlite_catalog", id="sqlite"),
    pytest.param("postgresql_catalog", id="postgresql", marks=pytest.mark.services),
    pytest.param("mariadb_catalog", id="mariadb", marks=pytest.mark.mariadb),
    pytest.param("glance_catalog", id="glance", marks=pytest.mark.glance),
    pytest.param("glance_keystone_catalog", id="glance-keystone-tls", marks=pytest.mark.glance),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.getfixturevalue(request.param)
    return found


def outcome(properties: dict[str, str], *, status: Status = Status.ACTIVE, **extra: Any) -> Outcome:
    return Outcome(
        status=status,
        verdict=VERDICTS[status],
        findings=extra.pop("findings", []),
        inspected_format=extra.pop("inspected_format", "qcow2"),
        inspected_virtual_size=extra.pop("inspected_virtual_size", DATA_VIRTUAL_SIZE),
        inspector_version=INSPECTOR_VERSION,
        properties=properties,
        **extra,
    )


def inspected(
    catalog: CatalogBackend, image_id: uuid.UUID, properties: dict[str, str] | None = None, **extra: Any
) -> None:
    """One inspection, claimed and written back (what the pipeline asks of a catalog)."""
    job_id = extra.pop("job_id", None)
    claim = catalog.claim(image_id, token=uuid.uuid4().hex, task_id="task-1")
    assert catalog.finish(claim, outcome(properties or {}, **extra), task_id="task-1", job_id=job_id)


def chosen(
    catalog: CatalogBackend, selection: Selection, *, batch: int = 2, **options: Any
) -> set[uuid.UUID]:
    return {image_id for page in catalog.select_ids(selection, batch=batch, **options) for image_id in page}


# -- inspections ------------------------------------------------------------------------------------


def test_a_claim_counts_deliveries_and_only_the_newest_writes_back(backend: Backend) -> None:
    catalog, image_id, job = backend.catalog, backend.image(), uuid.uuid4().hex
    stale = catalog.claim(image_id, token="first", task_id="a")
    assert catalog.get(image_id).status == Status.IMPORTING
    newer = catalog.claim(image_id, token="second", task_id="b")  # a redelivery took over
    assert (stale.deliveries, newer.deliveries, catalog.get(image_id).deliveries) == (1, 2, 2)
    assert (newer.image_id, newer.disk_format) == (image_id, "qcow2")
    assert catalog.finish(stale, outcome({"hw_disk_bus": "stale"}), task_id="a") is False
    assert catalog.finish(newer, outcome({"hw_disk_bus": "scsi"}), task_id="b", job_id=job) is True
    assert catalog.finish(newer, outcome({"hw_disk_bus": "again"}), task_id="b") is False  # once only
    record = catalog.get(image_id)
    assert (record.status, record.deliveries, record.claim_token) == (Status.ACTIVE, 0, None)
    assert (record.verdict, record.inspected_format, record.inspected_virtual_size) == (
        "ok",
        "qcow2",
        DATA_VIRTUAL_SIZE,
    )
    assert (record.inspector_version, record.job_id) == (INSPECTOR_VERSION, job)
    assert record.inspected_at is not None
    assert catalog.introspected(image_id)["hw_disk_bus"] == "scsi"
    assert catalog.job_progress(job) == {"active": 1}


def test_release_gives_the_delivery_back(backend: Backend) -> None:
    catalog, image_id = backend.catalog, backend.image()
    catalog.release(catalog.claim(image_id, token="t", task_id=None))
    assert catalog.get(image_id).deliveries == 0
    assert catalog.claim(image_id, token="u", task_id=None).deliveries == 1


def test_an_unforced_claim_of_data_already_inspected_is_up_to_date(backend: Backend) -> None:
    catalog, image_id = backend.catalog, backend.image()
    catalog.release(catalog.claim(image_id, token="t", task_id=None, force=False))  # never inspected
    inspected(catalog, image_id, {"hw_disk_bus": "scsi"})
    with pytest.raises(UpToDate, match=f"^image {image_id}: "):
        catalog.claim(image_id, token="u", task_id=None, force=False)
    assert catalog.claim(image_id, token="v", task_id=None).deliveries == 1  # forced, as re-runs are


def test_findings_and_verdicts_are_recorded(backend: Backend) -> None:
    catalog = backend.catalog
    findings = [{"code": "qcow2.backing_file", "severity": "reject", "message": "a backing file"}]
    rejected, failed = backend.image(), backend.image()
    inspected(catalog, rejected, status=Status.REJECTED, findings=findings)
    inspected(catalog, failed, status=Status.ERROR, inspected_format=None, inspected_virtual_size=None)
    record = catalog.get(rejected)
    assert (record.status, record.verdict) == (Status.REJECTED, "rejected")
    assert [finding["code"] for finding in record.findings or []] == ["qcow2.backing_file"]
    assert (catalog.get(failed).status, catalog.get(failed).verdict) == (Status.ERROR, "error")


def test_nothing_to_inspect_and_no_such_image(backend: Backend) -> None:
    catalog, queued = backend.catalog, backend.without_data()
    assert catalog.get(queued).status == Status.QUEUED
    with pytest.raises(NoData, match="has no data yet"):
        catalog.claim(queued, token="t", task_id=None)
    for unknown in (str(uuid.UUID(int=7)), "not-a-uuid"):
        message = f"no image with id {unknown}: `introspect images list` shows the ids"
        with pytest.raises(NotFound, match=f"^{re.escape(message)}$"):
            catalog.get(unknown)
        with pytest.raises(NotFound):
            catalog.claim(unknown, token="t", task_id=None)
        with pytest.raises(NotFound):
            catalog.set_admin(unknown, {"a": "b"}, actor="me")


def test_open_location_reads_the_claimed_data(backend: Backend) -> None:
    catalog = backend.catalog
    claim = catalog.claim(backend.image(), token="t", task_id=None)
    assert claim.location is not None
    data = backend.data.read_bytes()
    with catalog.open_location(claim.location) as source:
        assert source.size == len(data)
        assert source.pread(0, 4096) == data[:4096]
        assert source.pread(len(data) - 100, 1000) == data[-100:]


# -- properties -------------------------------------------------------------------------------------


def test_an_admin_override_survives_reruns_and_unset_shows_the_introspected_value_again(
    backend: Backend,
) -> None:
    catalog, image_id = backend.catalog, backend.image()
    found = {"hw_disk_bus": "scsi", "os_distro": "debian"}
    inspected(catalog, image_id, found)
    assert {key: value.source for key, value in _by_key(catalog, image_id).items() if key in found} == {
        "hw_disk_bus": Source.INTROSPECTED,
        "os_distro": Source.INTROSPECTED,
    }
    catalog.set_admin(image_id, {"hw_disk_bus": "ide", "note": "x"}, actor="ops")
    catalog.set_admin(image_id, {"os_distro": "debian"}, actor="ops")  # equal to ours, still theirs
    inspected(catalog, image_id, found)  # a re-run
    shown = _by_key(catalog, image_id)
    assert {key: (shown[key].value, shown[key].source) for key in ("hw_disk_bus", "os_distro", "note")} == {
        "hw_disk_bus": ("ide", Source.ADMIN),
        "os_distro": ("debian", Source.ADMIN),
        "note": ("x", Source.ADMIN),
    }
    with pytest.raises(PipelineError, match=f"^image {image_id} has no admin value for nope: "):
        catalog.unset_admin(image_id, ["nope"], actor="ops")
    catalog.unset_admin(image_id, ["hw_disk_bus", "os_distro"], actor="ops")
    inspected(catalog, image_id, found)
    effective = catalog.effective(image_id)
    assert {key: effective.get(key) for key in ("hw_disk_bus", "os_distro", "note")} == found | {"note": "x"}
    assert found.items() <= catalog.introspected(image_id).items()
    assert _by_key(catalog, image_id)["hw_disk_bus"].source == Source.INTROSPECTED


def _by_key(catalog: CatalogBackend, image_id: uuid.UUID) -> dict[str, Any]:
    return {prop.key: prop for prop in catalog.properties(image_id)}


# -- re-runs and the audit --------------------------------------------------------------------------


def test_selections_page_through_the_chosen_images(backend: Backend) -> None:
    catalog, job = backend.catalog, uuid.uuid4().hex
    ids = [backend.image("raw" if n % 3 == 0 else "qcow2") for n in range(7)]
    inspected(catalog, ids[1], status=Status.ERROR, inspected_format=None, inspected_virtual_size=None)
    inspected(catalog, ids[2], status=Status.REJECTED)
    for image_id in ids[3:]:
        inspected(catalog, image_id, job_id=job if image_id == ids[3] else None)
    everything = Selection(ids=ids)
    pages = list(catalog.select_ids(everything, batch=3))
    assert [len(page) for page in pages] == [3, 3, 1]
    assert sorted(image_id for page in pages for image_id in page) == sorted(ids)
    assert chosen(catalog, Selection(ids=ids, formats=["raw"])) == {ids[0], ids[3], ids[6]}
    assert chosen(catalog, Selection(ids=ids, failed=True)) == {ids[1]}
    assert chosen(catalog, Selection(ids=ids, statuses=[Status.REJECTED])) == {ids[2]}
    assert chosen(catalog, Selection(ids=ids, inspector_older_than=INSPECTOR_VERSION)) == {ids[0]}
    assert chosen(catalog, everything, exclude_job=job) == set(ids) - {ids[3]}
    assert catalog.count(Selection(ids=ids, failed=True)) == 1
    with pytest.raises(PipelineError, match=r"^say what to re-run: --all, --format F"):
        catalog.count(Selection())


def test_statuses_and_listings(backend: Backend) -> None:
    catalog = backend.catalog
    fresh, done, held, queued = backend.image(), backend.image(), backend.image(), backend.without_data()
    inspected(catalog, done)
    catalog.claim(held, token="t", task_id=None)
    found = catalog.statuses([fresh, done, held, queued, uuid.UUID(int=7)])
    # waiting for its first inspection: `saving` in the SQL catalog, already `active` in Glance
    assert found[fresh] in (Status.SAVING, Status.ACTIVE)
    assert {key: found[key] for key in (done, held, queued)} == {
        done: Status.ACTIVE,
        held: Status.IMPORTING,
        queued: Status.QUEUED,
    }
    assert uuid.UUID(int=7) not in found
    importing = {record.id for record in catalog.images(statuses=["importing"], batch=2)}
    assert held in importing and done not in importing
    assert done in {record.id for record in catalog.images(formats=["qcow2"])}
    assert catalog.counts()["importing"] >= 1


def test_the_audit_lists_what_was_declared_against_what_was_found(backend: Backend) -> None:
    catalog = backend.catalog
    declared_raw, agreeing = backend.image("raw"), backend.image("qcow2")
    inspected(catalog, declared_raw)  # the content is qcow2
    inspected(catalog, agreeing)
    assert "disk_format raw but the content is qcow2" in catalog.get(declared_raw).mismatches
    assert catalog.get(agreeing).mismatches == []
    listed = {record.id for record in catalog.mismatched(batch=2)}
    assert declared_raw in listed and agreeing not in listed


@pytest.mark.parametrize("engine", BACKENDS[:3])
def test_an_undeclared_container_format_is_adopted_once(engine: str, request: pytest.FixtureRequest) -> None:
    """As disk_format: an image that declared none (`introspect import vm.ova`) takes its first
    inspection's (`ova`), and keeps it; a declared one is never rewritten (the audit compares)."""
    backend: Backend = request.getfixturevalue(engine)
    catalog = backend.catalog
    undeclared = backend.image()
    inspected(catalog, undeclared, adopt_container_format="ova")
    inspected(catalog, undeclared, adopt_container_format="bare")
    assert catalog.get(undeclared).container_format == "ova"
    assert isinstance(catalog, Catalog)
    declared = catalog.create(name="declared", disk_format="qcow2", container_format="bare")
    catalog.start_upload(declared)
    catalog.set_data(
        declared, location=backend.data.as_uri(), size=backend.data.stat().st_size, checksum=None
    )
    inspected(catalog, declared)
    assert catalog.get(declared).container_format == "bare"


@pytest.mark.parametrize("engine", BACKENDS[:3])
def test_member_digests_of_an_upload_reach_the_claim(engine: str, request: pytest.FixtureRequest) -> None:
    """What the upload hashed comes back with the claim, on every engine (JSON read by a raw
    statement: decoded by PostgreSQL's driver, text from SQLite's and MariaDB's)."""
    backend: Backend = request.getfixturevalue(engine)
    digests = {512: {"sha1": "a" * 40, "sha256": "b" * 64}, 1 << 40: {"sha512": "c" * 128}}
    image_id = backend.catalog.create(name="vm.ova")
    backend.catalog.start_upload(image_id)
    backend.catalog.set_data(
        image_id, location=backend.data.as_uri(), size=1, checksum=None, member_digests=digests
    )
    assert backend.catalog.get(image_id).member_digests == digests
    assert backend.catalog.claim(image_id, token="t", task_id=None).member_digests == digests
    plain = backend.image()
    assert backend.catalog.claim(plain, token="u", task_id=None).member_digests is None
