"""The `introspect` import plugin inside a real Glance's glance-direct flow: the image goes
active with its properties already set; a hostile image (which Glance itself refuses) gets its
verdict and is not left stuck in `importing`; an error of ours never blocks an import."""

from __future__ import annotations

from pathlib import Path

import pytest

import introspect
from tests.glance.fixtures import Admin, inspect_now
from tests.glance.peer import Deployment
from workers.glance.catalog import GlanceCatalog
from workers.glance.ownership import MARKER, Marker, desired_properties
from workers.pipeline import State

pytestmark = pytest.mark.glance


@pytest.mark.parametrize("name", ["lsilogic.vmdk", "disk.qcow2", "disk.vhdx"])
def test_import_goes_active_with_the_properties_set(
    name: str, images: dict[str, Path], admin: Admin, catalog: GlanceCatalog
) -> None:
    image_id = admin.imported(images[name])
    image = admin.get(image_id)
    assert image["status"] == "active"
    want = desired_properties(introspect.inspect(images[name]))
    assert {key: image.get(key) for key in want} == want
    marker = Marker.read(image)
    assert marker is not None and set(marker.keys) == set(want) and marker.data is None
    # the first inspection after the import finds the same values and only completes the marker
    assert inspect_now(catalog, image_id).state == State.INSPECTED
    after = admin.get(image_id)
    assert {key: after.get(key) for key in want} == want
    assert Marker.read(after).data == image["checksum"]  # type: ignore[union-attr]
    assert inspect_now(catalog, image_id).state == State.SKIPPED


def test_hostile_image_is_refused_and_not_left_importing(
    images: dict[str, Path], admin: Admin, glance: Deployment
) -> None:
    image_id = admin.imported(images["backed.qcow2"])
    image = admin.get(image_id)
    assert image["status"] == "queued"  # not "importing": the owner can act on it
    assert image["os_glance_failed_import"] == "fs"
    assert image["introspect_verdict"] == "rejected"
    assert "qcow2.backing_file" in image["introspect_findings"].split(",")
    # Glance's own check refused the data after our task ran; our revert put the image back
    # the owner can stage other data and import again, or delete it
    again = admin.call(
        "PUT", f"/v2/images/{image_id}/stage", content=images["disk.qcow2"].read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert again.status_code == 204, again.text
    admin.delete(image_id)


def test_an_error_of_ours_never_blocks_the_import(
    images: dict[str, Path], admin: Admin, glance: Deployment
) -> None:
    # no room left for the plugin's properties: saving them fails inside Glance
    image_id = admin.create("full", "qcow2")
    filler = [{"op": "add", "path": f"/filler_{n:03d}", "value": "x"} for n in range(127)]
    assert admin.patch(image_id, filler).status_code == 200
    staged = admin.call(
        "PUT", f"/v2/images/{image_id}/stage", content=images["disk.qcow2"].read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert staged.status_code == 204
    started = admin.call("POST", f"/v2/images/{image_id}/import", json={"method": {"name": "glance-direct"}})
    assert started.status_code == 202
    image = admin.wait(
        image_id, lambda image: image["status"] == "active" and not image.get("os_glance_import_task")
    )
    assert MARKER not in image
    assert f"inspecting the staged data of image {image_id} failed; the import goes on" in glance.glance_log()


@pytest.mark.parametrize(("container_format", "mismatch"), [("ova", False), ("bare", True)])
def test_an_ova_is_inspected_inside_and_checked_against_its_container_format(
    container_format: str, mismatch: bool, admin: Admin, glance: Deployment
) -> None:
    """An OVA (fixtures/make/ova.sh) imported with disk_format=vmdk: the plugin reads the OVF's
    properties; declared `bare`, the content is an OVA, which is image.container_mismatch."""
    from tests.conftest import fixture_group

    ova = fixture_group("ova") / "vmware-pvscsi.ova"
    image_id = admin.imported(ova, disk_format_="vmdk", container_format=container_format)
    image = admin.get(image_id)
    findings = (image.get("introspect_findings") or "").split(",")
    assert ("image.container_mismatch" in findings) is mismatch
    assert image["introspect_verdict"] == ("rejected" if mismatch else "ok")
    assert (image["os_distro"], image["hw_scsi_model"], image["vmware_adaptertype"]) == (
        "ubuntu",
        "vmpvscsi",
        "paraVirtual",
    )
    assert image["introspect_container_format"] == "ova"
    admin.delete(image_id)
