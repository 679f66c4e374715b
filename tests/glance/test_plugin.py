"""The `introspect` import plugin inside a real Glance's glance-direct flow: the image goes
active with its properties already set; a hostile image (which Glance itself refuses) gets its
verdict and is not left stuck in `importing`; an error of ours never blocks an import. With
`[introspect] enforce = true` and a policy file (a glance-api of its own, in front of the same
Glance), a rejected image fails its import with its findings' messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import introspect
from introspect.safety import Policy
from tests.glance.fixtures import Admin, inspect_now, run
from tests.glance.peer import ADMIN, Deployment
from workers.glance.catalog import GlanceCatalog
from workers.glance.ownership import MARKER, Marker, desired_properties
from workers.pipeline import State

pytestmark = pytest.mark.glance


def import_task(admin: Admin, image_id: str) -> dict[str, Any]:
    """The image's one import task, as Glance recorded it (status, message)."""
    (task,) = admin.call("GET", f"/v2/images/{image_id}/tasks").json()["tasks"]
    return task  # type: ignore[no-any-return]


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
    assert f"the properties of image {image_id} could not be saved; the import goes on" in glance.glance_log()


def test_report_only_a_rejected_image_goes_active_with_its_verdict(tmp_path: Path, admin: Admin) -> None:
    """Without `enforce`, the plugin reports: an image introspect rejects and Glance's own checks
    accept (a qcow2 of 70 TiB, past the default policy's 64 TiB) goes active, its verdict set."""
    huge = tmp_path / "huge.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", huge, "70T")
    image_id = admin.imported(huge)
    image = admin.get(image_id)
    assert (image["status"], image["introspect_verdict"]) == ("active", "rejected")
    assert "image.virtual_size_limit" in image["introspect_findings"].split(",")
    assert import_task(admin, image_id)["status"] == "success"
    admin.delete(image_id)


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


#: The enforcing glance-api's policy: the fixture images (1 GiB + 3 MiB) are past its limit, the
#: OVA's disk (1 GiB) is not.
LIMITED = {"max_virtual_size": 1 << 30}


@pytest.fixture(scope="module")
def enforcing(glance: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    """An admin at a glance-api whose import plugin enforces, under the LIMITED policy file."""
    policy = tmp_path_factory.mktemp("policy") / "policy.json"
    policy.write_text(json.dumps(LIMITED))
    api = glance.start_api(plugin_options={"enforce": "true", "policy": str(policy)})
    yield Admin(api.url, dict(ADMIN))
    api.stop()
    glance.apis.remove(api)


@pytest.mark.parametrize(
    ("name", "code"), [("disk.qcow2", "image.virtual_size_limit"), ("backed.qcow2", "qcow2.backing_file")]
)
def test_enforce_fails_the_import_of_a_rejected_image_with_its_findings(
    name: str, code: str, images: dict[str, Path], enforcing: Admin
) -> None:
    """disk.qcow2 is rejected by the policy file alone (Glance itself takes it: report-only, it
    goes active, see test_import_goes_active_with_the_properties_set); backed.qcow2 by its backing
    file, refused before Glance's own check could."""
    image_id = enforcing.imported(images[name])
    image = enforcing.get(image_id)
    assert (image["status"], image["os_glance_failed_import"]) == ("queued", "fs")
    assert image["introspect_verdict"] == "rejected" and code in image["introspect_findings"].split(",")
    report = introspect.inspect(images[name], policy=Policy.model_validate(LIMITED))
    said = "; ".join(f"{f.code}: {f.message}" for f in report.findings if f.severity == "reject")
    task = import_task(enforcing, image_id)
    assert task["status"] == "failure"
    assert task["message"] == f"introspect refused image {image_id} (rejected): {said}"
    enforcing.delete(image_id)


def test_enforce_lets_an_image_that_passes_go_active(enforcing: Admin) -> None:
    from tests.conftest import fixture_group

    ova = fixture_group("ova") / "vmware-pvscsi.ova"  # a 1 GiB disk: within the policy's limit
    image_id = enforcing.imported(ova, disk_format_="vmdk", container_format="ova")
    image = enforcing.get(image_id)
    assert (image["status"], image["introspect_verdict"]) == ("active", "ok")
    assert import_task(enforcing, image_id)["status"] == "success"
    enforcing.delete(image_id)
