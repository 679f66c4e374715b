"""The task code (workers/pipeline.py, which the Celery tasks and `--inline` both run) on real
images, and the tasks' delivery settings. Properties must equal what `introspect.inspect` gives
for the same file: whatever the parsers produce, the pipeline stores exactly that."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

import introspect
from introspect.model import Verdict
from tests.workers.httpserver import serve
from workers import pipeline
from workers.catalog import Catalog, Selection, Status
from workers.errors import StoreUnavailable, Transient
from workers.store import LocalStore

STATUS = {Verdict.OK: Status.ACTIVE, Verdict.REJECTED: Status.REJECTED, Verdict.ERROR: Status.ERROR}


def imported(
    catalog: Catalog,
    store_dir: Path,
    path: Path,
    *,
    disk_format: str | None = None,
    container_format: str | None = None,
) -> uuid.UUID:
    image_id = catalog.create(name=path.name, disk_format=disk_format, container_format=container_format)
    catalog.start_upload(image_id)
    with path.open("rb") as stream:
        stored = LocalStore(store_dir).add(image_id, stream)
    catalog.set_data(image_id, location=stored.location, size=stored.size, checksum=stored.checksum)
    return image_id


def registered(catalog: Catalog, location: str, size: int = 1) -> uuid.UUID:
    image_id = catalog.create()
    catalog.start_upload(image_id)
    catalog.set_data(image_id, location=location, size=size, checksum=None)
    return image_id


def run(catalog: Catalog, image_id: uuid.UUID, **kwargs) -> dict:
    return pipeline.introspect_image(
        catalog, image_id, task_id=f"test-{uuid.uuid4().hex[:8]}", **kwargs
    ).summary()


@pytest.mark.parametrize(
    "name",
    [
        "small.qcow2",
        "huge.qcow2",
        "stream.vmdk",
        "sparse.vmdk",
        "disk.vhd",
        "disk.vhdx",
        "disk.vdi",
        "disk.qed",
        "backed.qcow2",
    ],
)
def test_an_image_gets_exactly_what_the_library_reports(
    catalog: Catalog, images: dict[str, Path], tmp_path: Path, name: str
):
    image_id = imported(catalog, tmp_path, images[name])
    result = run(catalog, image_id)
    report = introspect.inspect(images[name])
    record = catalog.get(image_id)
    assert (result["image_id"], result["state"]) == (str(image_id), "inspected")
    assert (result["status"], result["written"]) == (str(STATUS[report.verdict]), True)
    assert result["findings"] == [finding.code for finding in report.findings]
    assert record.status == STATUS[report.verdict]
    assert catalog.effective(image_id) == catalog.introspected(image_id) == report.properties
    assert record.findings == [f.model_dump(mode="json") for f in report.findings]
    assert (record.inspected_format, record.inspected_virtual_size) == (report.format, report.virtual_size)
    assert record.inspector_version == introspect.INSPECTOR_VERSION
    parsed = report.verdict != Verdict.ERROR
    # no disk_format was declared: the first inspection that could parse the image supplies it
    assert record.disk_format == (report.format if parsed else None)
    assert record.virtual_size == (report.virtual_size if parsed else None)


def test_a_declared_format_is_passed_as_expect_and_never_rewritten(
    catalog: Catalog, images: dict[str, Path], tmp_path: Path
):
    image_id = imported(catalog, tmp_path, images["small.qcow2"], disk_format="vmdk")
    run(catalog, image_id)
    report = introspect.inspect(images["small.qcow2"], expect="vmdk")
    record = catalog.get(image_id)
    assert record.disk_format == "vmdk"
    assert record.status == STATUS[report.verdict]
    assert "image.format_mismatch" in {f["code"] for f in record.findings}
    assert record.findings == [f.model_dump(mode="json") for f in report.findings]


@pytest.mark.parametrize(("declared", "mismatch"), [("ova", True), ("bare", False), (None, False)])
def test_a_declared_container_format_is_checked(
    catalog: Catalog, images: dict[str, Path], tmp_path: Path, declared: str | None, mismatch: bool
):
    """A bare qcow2 declared as an OVA is a finding (Glance's container_format, checked on every
    path as the import plugin checks it); declared bare, or not declared, it is not."""
    image_id = imported(catalog, tmp_path, images["small.qcow2"], container_format=declared)
    run(catalog, image_id)
    report = introspect.inspect(images["small.qcow2"], expect_container=declared)
    record = catalog.get(image_id)
    assert record.findings == [f.model_dump(mode="json") for f in report.findings]
    assert ("image.container_mismatch" in {f["code"] for f in record.findings}) == mismatch
    assert record.status == STATUS[report.verdict] == (Status.REJECTED if mismatch else Status.ACTIVE)


def test_running_twice_gives_the_same_catalog(catalog: Catalog, images: dict[str, Path], tmp_path: Path):
    image_id = imported(catalog, tmp_path, images["stream.vmdk"])
    run(catalog, image_id)
    before = catalog.get(image_id), catalog.values(image_id), catalog.history(image_id)
    run(catalog, image_id)
    after = catalog.get(image_id), catalog.values(image_id), catalog.history(image_id)
    ignored = {"updated_at", "inspected_at", "inspection_task"}
    assert before[0].model_dump(exclude=ignored) == after[0].model_dump(exclude=ignored)
    assert before[1:] == after[1:]


def test_changed_bytes_under_the_same_image_are_a_finding(
    catalog: Catalog, images: dict[str, Path], tmp_path: Path
):
    image_id = imported(catalog, tmp_path, images["small.qcow2"])
    run(catalog, image_id)
    recorded = catalog.get(image_id)
    shutil.copyfile(images["huge.qcow2"], LocalStore(tmp_path).path_of(recorded.location))
    run(catalog, image_id)
    record = catalog.get(image_id)
    report = introspect.inspect(images["huge.qcow2"], expect=recorded.disk_format)
    assert record.virtual_size == recorded.virtual_size  # never silently rewritten
    if report.verdict != Verdict.ERROR:
        assert record.status == Status.REJECTED
        assert "pipeline.virtual_size_changed" in {f["code"] for f in record.findings}
        assert record.mismatches == [
            f"virtual_size {recorded.virtual_size} but the content says {report.virtual_size}"
        ]


def test_missing_data_is_a_verdict_not_a_retry(catalog: Catalog, tmp_path: Path):
    image_id = registered(catalog, (tmp_path / "gone.img").as_uri())
    assert run(catalog, image_id)["status"] == "error"
    record = catalog.get(image_id)
    assert [f["code"] for f in record.findings] == ["pipeline.data_missing"]
    assert record.deliveries == 0


def test_a_poison_image_gets_an_error_past_the_delivery_limit_without_being_read(
    catalog: Catalog, images: dict[str, Path]
):
    path = images["small.qcow2"]
    with serve(path.parent) as served:
        image_id = registered(catalog, served.url(path.name), path.stat().st_size)
        for _ in range(3):  # three deliveries whose worker died before finishing
            catalog.claim(image_id, token=uuid.uuid4().hex, task_id="died")
        assert run(catalog, image_id, delivery_limit=3)["status"] == "error"
        assert served.requests == []
    record = catalog.get(image_id)
    assert [f["code"] for f in record.findings] == ["pipeline.worker_lost"]
    assert record.findings[0]["message"].startswith("the worker died 3 times inspecting this image (limit 3)")
    assert record.deliveries == 0


def test_a_store_fault_is_retried_and_gives_its_delivery_back(catalog: Catalog, images: dict[str, Path]):
    path = images["small.qcow2"]

    def drop_reads(method: str, _path: str) -> None:
        if method == "GET":
            raise ConnectionAbortedError("the store went away")

    with serve(path.parent) as served:
        image_id = registered(catalog, served.url(path.name), path.stat().st_size)
        served.on_request = drop_reads
        with pytest.raises(StoreUnavailable, match=r"^cannot read http://"):
            run(catalog, image_id)
        record = catalog.get(image_id)
        assert (record.status, record.deliveries) == (Status.IMPORTING, 0)
        served.on_request = None
        run(catalog, image_id)
    assert catalog.effective(image_id) == introspect.inspect(path).properties


def test_fan_out_hands_over_pages(catalog: Catalog, tmp_path: Path):
    ids = sorted(registered(catalog, (tmp_path / f"{n}").as_uri()) for n in range(7))
    pages: list[list[uuid.UUID]] = []
    assert pipeline.fan_out(catalog, Selection(all=True), pages.append, batch=3) == 7
    assert pages == [ids[:3], ids[3:6], ids[6:]]


def test_the_tasks_are_acknowledged_late_and_retry_only_transient_faults():
    from workers import tasks
    from workers.app import app

    assert tasks.introspect_image.name == "workers.tasks.introspect_image"
    assert tasks.rerun.name == "workers.tasks.rerun"
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit
    for task in (tasks.introspect_image, tasks.rerun):
        assert Transient in task.autoretry_for
        assert not any(issubclass(introspect.ImageError, kind) for kind in task.autoretry_for)
        assert task.retry_jitter is True and task.retry_backoff
