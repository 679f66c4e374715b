"""The Glance catalog backend: the pipeline's own task code runs against a real Glance through it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import introspect
from tests.glance.conftest import Admin
from workers import pipeline
from workers.catalog import Selection, Source, Status
from workers.errors import NoData, PipelineError
from workers.glance.catalog import CLAIM, GlanceCatalog, NotReady
from workers.glance.client import GlanceClient
from workers.glance.inspection import desired_properties

pytestmark = pytest.mark.glance


@pytest.fixture
def catalog(client: GlanceClient) -> GlanceCatalog:
    # the pipeline opens `glance:<id>` locations through the catalog's own open_location
    return GlanceCatalog(client)


def test_the_pipeline_task_inspects_a_glance_image(
    catalog: GlanceCatalog, images: dict[str, Path], admin: Admin
) -> None:
    path = images["lsilogic.vmdk"]
    image_id = admin.uploaded(path)
    assert catalog.get(image_id).status == Status.ACTIVE and catalog.get(image_id).verdict is None
    summary = pipeline.introspect_image(catalog, image_id, task_id="task-1", job_id="job-1")
    assert summary["status"] == "active" and summary["written"] is True
    image = admin.get(image_id)
    want = desired_properties(introspect.inspect(path))
    assert {key: image.get(key) for key in want} == want
    assert CLAIM not in image
    record = catalog.get(image_id)
    assert (record.verdict, record.inspected_format, record.deliveries) == ("ok", "vmdk", 0)
    assert record.inspector_version == introspect.INSPECTOR_VERSION and record.job_id == "job-1"
    assert record.inspected_virtual_size == record.virtual_size and not record.mismatches
    assert catalog.job_progress("job-1") == {Status.ACTIVE: 1} or catalog.job_progress("job-1") == {
        "active": 1
    }


def test_claims_count_deliveries_and_wait_for_imports(
    catalog: GlanceCatalog, images: dict[str, Path], admin: Admin
) -> None:
    image_id = admin.uploaded(images["disk.qcow2"])
    first = catalog.claim(image_id, token="a", task_id="t1")
    assert catalog.get(image_id).status == Status.IMPORTING
    second = catalog.claim(image_id, token="b", task_id="t2")  # the first worker died
    assert (first.deliveries, second.deliveries) == (1, 2)
    catalog.release(second)
    assert catalog.get(image_id).deliveries == 1
    assert second.location == f"glance:{image_id}"
    queued = admin.create("empty", "raw")
    with pytest.raises(NoData, match="has no data yet"):
        catalog.claim(queued, token="c", task_id=None)
    staged = admin.create("staged", "qcow2")
    assert admin.call(
        "PUT", f"/v2/images/{staged}/stage", content=images["disk.qcow2"].read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    ).status_code == 204  # fmt: skip
    with pytest.raises(NotReady, match="not active"):
        catalog.claim(staged, token="d", task_id=None)


def test_admin_values_through_the_catalog(
    catalog: GlanceCatalog, images: dict[str, Path], admin: Admin
) -> None:
    image_id = admin.uploaded(images["ide.vmdk"])
    pipeline.introspect_image(catalog, image_id, task_id="t")  # type: ignore[arg-type]
    sources = {prop.key: prop.source for prop in catalog.properties(image_id)}
    assert sources["vmware_adaptertype"] == Source.INTROSPECTED
    catalog.set_admin(
        image_id, {"vmware_adaptertype": "ide", "note": "x"}, actor="ops"
    )  # equal to ours, still theirs
    sources = {prop.key: prop.source for prop in catalog.properties(image_id)}
    assert sources["vmware_adaptertype"] == Source.ADMIN and sources["note"] == Source.ADMIN
    pipeline.introspect_image(catalog, image_id, task_id="t2")  # type: ignore[arg-type]
    assert catalog.effective(image_id)["vmware_adaptertype"] == "ide"
    with pytest.raises(PipelineError, match="has no admin value for hw_disk_bus"):
        catalog.unset_admin(image_id, ["hw_disk_bus"], actor="ops")
    catalog.unset_admin(image_id, ["vmware_adaptertype"], actor="ops")
    pipeline.introspect_image(catalog, image_id, task_id="t3")  # type: ignore[arg-type]
    assert catalog.introspected(image_id)["vmware_adaptertype"] == "ide"
    assert catalog.history(image_id) == []


def test_rerun_selection(catalog: GlanceCatalog, images: dict[str, Path], admin: Admin) -> None:
    image_id = admin.uploaded(images["disk.vhd"])
    fresh = uuid.UUID(image_id)
    never = {i for page in catalog.select_ids(Selection(inspector_older_than=1)) for i in page}
    assert fresh in never
    pipeline.introspect_image(catalog, image_id, task_id="t")  # type: ignore[arg-type]
    older = {
        i
        for page in catalog.select_ids(Selection(inspector_older_than=introspect.INSPECTOR_VERSION))
        for i in page
    }
    assert fresh not in older
    mine = list(catalog.select_ids(Selection(ids=[fresh], formats=["vhd"])))
    assert mine == [[fresh]]
    assert fresh not in {i for page in catalog.select_ids(Selection(failed=True)) for i in page}
    with pytest.raises(PipelineError, match="images are created in Glance"):
        catalog.create(name="x")
