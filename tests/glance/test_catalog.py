"""What only the Glance catalog does (the contract every catalog keeps is checked once, for all
of them, in tests/workers/catalog/test_contract.py): the claim lives in a property and goes with
the write-back, an import still running is waited for, images are Glance's to create and
delete, and there is no history."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import introspect
from tests.glance.fixtures import Admin
from workers import pipeline
from workers.errors import NotReady, PipelineError
from workers.glance.catalog import CLAIM, GlanceCatalog
from workers.glance.ownership import desired_properties

pytestmark = pytest.mark.glance


def test_the_pipeline_task_inspects_a_glance_image(
    catalog: GlanceCatalog, images: dict[str, Path], admin: Admin
) -> None:
    path = images["lsilogic.vmdk"]
    image_id = admin.uploaded(path)
    done = pipeline.introspect_image(catalog, image_id, task_id="task-1", job_id="job-1")
    assert (done.state, done.written) == (pipeline.State.INSPECTED, True)
    image = admin.get(image_id)
    want = desired_properties(introspect.inspect(path))
    assert {key: image.get(key) for key in want} == want
    assert CLAIM not in image  # the write-back's own PATCH dropped the claim
    record = catalog.get(image_id)
    assert record.inspected_virtual_size == record.virtual_size and not record.mismatches


def test_the_claim_is_a_property_and_an_import_is_waited_for(
    catalog: GlanceCatalog, images: dict[str, Path], admin: Admin
) -> None:
    image_id = admin.uploaded(images["disk.qcow2"])
    claim = catalog.claim(image_id, token="a", task_id="t1")
    assert claim.location == f"glance:{image_id}"
    assert '"token":"a"' in admin.get(image_id)[CLAIM]
    staged = admin.create("staged", "qcow2")
    assert admin.call(
        "PUT", f"/v2/images/{staged}/stage", content=images["disk.qcow2"].read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    ).status_code == 204  # fmt: skip
    with pytest.raises(NotReady, match="not active"):
        catalog.claim(staged, token="d", task_id=None)


def test_images_are_glances_to_create_and_delete_and_it_keeps_no_history(
    catalog: GlanceCatalog, images: dict[str, Path], admin: Admin
) -> None:
    image_id = admin.uploaded(images["disk.vhd"])
    pipeline.introspect_image(catalog, image_id, task_id="t")
    assert catalog.history(image_id) == []
    with pytest.raises(PipelineError, match="images are created in Glance"):
        catalog.create(name="x")
    with pytest.raises(PipelineError, match="uploaded to Glance itself"):
        catalog.set_data(uuid.UUID(image_id), location="file:///x", size=1, checksum=None)
    with pytest.raises(PipelineError, match=f"openstack image delete {image_id}"):
        catalog.delete(image_id)
