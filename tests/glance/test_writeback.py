"""Inspection and write-back against a real Glance: the properties are exactly what the library
says for the same file, admins' values survive re-runs, and every refusal Glance can give
(403, 409, 413, 404) ends in a clear outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

import introspect
from tests.conftest import fixture_group
from tests.glance.fixtures import IMAGES, Admin, inspect_now
from workers.errors import PipelineError
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import GlanceClient, HeaderIdentity
from workers.glance.ownership import MARKER, Marker, desired_properties, digest
from workers.glance.source import RangeCache
from workers.glance.writeback import Status, write_back
from workers.pipeline import State

pytestmark = pytest.mark.glance

KIB = 1024
#: The source's largest granule: a read is widened to whole blocks, 64 KiB growing to 512 KiB.
MAX_BLOCK = 512 * KIB


def expected(path: Path) -> dict[str, str]:
    """What the library says about the same file, as the properties a write-back must produce."""
    return desired_properties(introspect.inspect(path))


def properties_of(image: dict[str, object]) -> dict[str, str]:
    """The image's properties that introspect could have written (drop Glance's own)."""
    return {
        key: value
        for key, value in image.items()
        if isinstance(value, str) and key in expected_keys(image) and key != MARKER
    }


def expected_keys(image: dict[str, object]) -> set[str]:
    marker = Marker.read(image)
    return set(marker.keys) if marker else set()


@pytest.mark.parametrize("name", [image[0] for image in IMAGES])
def test_upload_then_inspect_writes_exactly_what_the_library_says(
    name: str, images: dict[str, Path], admin: Admin, catalog: GlanceCatalog
) -> None:
    path = images[name]
    image_id = admin.uploaded(path)
    outcome = inspect_now(catalog, image_id)
    assert outcome.state == State.INSPECTED and outcome.written, outcome.message
    image = admin.get(image_id)
    want = expected(path)
    assert {key: image.get(key) for key in want} == want
    assert properties_of(image) == want  # and nothing else is ours
    # what Glance computed itself is untouched, and agrees with the library
    assert image["disk_format"] == introspect.inspect(path).format
    assert image["virtual_size"] == introspect.inspect(path).virtual_size
    # a few ranges, not the image: at most one request per read the parser made (nearby reads
    # share a block), each at most one block wider than the read
    report = introspect.inspect(path)
    assert outcome.data_requests is not None and outcome.data_bytes is not None
    assert report.reads <= 5  # VHDX: headers, regions, metadata, BAT
    guest_reads, guest_bytes = (report.guest.reads, report.guest.bytes_read) if report.guest else (0, 0)
    assert 1 <= outcome.data_requests <= report.reads + guest_reads
    assert outcome.data_bytes <= report.bytes_read + guest_bytes + outcome.data_requests * MAX_BLOCK
    assert outcome.data_bytes < path.stat().st_size // 2


def test_a_guest_is_read_through_a_few_ranges(admin: Admin, catalog: GlanceCatalog) -> None:
    """A real Debian (mmdebstrap) in a streamOptimized VMDK, as VMware exports it: its os-release,
    /bin/sh's ELF header and its ESP's loaders, read through Glance's range requests (the block
    grows from 64 KiB to 512 KiB), written back as the library says."""
    path = fixture_group("guest") / "debian-uefi.stream.vmdk"
    image_id = admin.uploaded(path, disk_format_="vmdk")
    outcome = inspect_now(catalog, image_id)
    assert outcome.state == State.INSPECTED and outcome.written, outcome.message
    want = expected(path)
    assert want["os_type"] == "linux" and want["os_distro"] == "debian"
    image = admin.get(image_id)
    assert {key: image.get(key) for key in want} == want
    report = introspect.inspect(path)
    assert outcome.data_requests is not None and outcome.data_bytes is not None
    print(
        f"\nguest over Glance: {outcome.data_requests} range requests, {outcome.data_bytes} bytes "
        f"(the library: {report.reads} + {report.guest.reads} reads)"
    )
    assert outcome.data_requests <= 16
    assert outcome.data_bytes <= 8 << 20 < path.stat().st_size


def test_vmdk_properties_carry_nova_names(
    images: dict[str, Path], admin: Admin, catalog: GlanceCatalog
) -> None:
    image_id = admin.uploaded(images["buslogic.vmdk"])
    inspect_now(catalog, image_id)
    image = admin.get(image_id)
    descriptor = images["buslogic.vmdk"].read_bytes()[: 64 * KIB]
    assert b'ddb.adapterType = "buslogic"' in descriptor  # what qemu-img wrote
    assert image["vmware_adaptertype"] == "busLogic"
    assert image["vmware_disktype"] == "streamOptimized"
    assert image["hw_disk_bus"] == "scsi"
    assert "hw_scsi_model" not in image  # QEMU has no BusLogic controller: see introspect/vocabulary.py


def test_an_admin_edit_of_an_introspected_value_leaves_the_marker(
    images: dict[str, Path], admin: Admin, catalog: GlanceCatalog
) -> None:
    """Edited in Glance directly (not through `images set`): from then on the key is the admin's,
    and the marker no longer claims it (the contract suite covers set/unset through the catalog)."""
    image_id = admin.uploaded(images["lsilogic.vmdk"])
    inspect_now(catalog, image_id)
    assert admin.get(image_id)["vmware_adaptertype"] == "lsiLogic"
    assert (
        admin.patch(image_id, [{"op": "replace", "path": "/vmware_adaptertype", "value": "ide"}]).status_code
        == 200
    )
    inspect_now(catalog, image_id, force=True)
    image = admin.get(image_id)
    assert image["vmware_adaptertype"] == "ide"
    assert "vmware_adaptertype" not in Marker.read(image).keys  # type: ignore[union-attr]


def test_value_set_before_introspect_ran_is_kept(
    images: dict[str, Path], admin: Admin, catalog: GlanceCatalog
) -> None:
    image_id = admin.uploaded(images["lsilogic.vmdk"], hw_disk_bus="ide")
    inspect_now(catalog, image_id)
    image = admin.get(image_id)
    assert image["hw_disk_bus"] == "ide" and "hw_disk_bus" not in Marker.read(image).keys  # type: ignore[union-attr]
    assert image["hw_scsi_model"] == "lsilogic"


def test_rerun_of_unchanged_image_costs_no_data_and_changes_no_property(
    images: dict[str, Path], admin: Admin, client: GlanceClient, tmp_path: Path
) -> None:
    catalog = GlanceCatalog(client, cache=RangeCache(tmp_path / "cache", 16 * 1024 * KIB))
    image_id = admin.uploaded(images["disk.qcow2"])
    first = inspect_now(catalog, image_id)
    before = admin.get(image_id)
    assert first.data_requests is not None and first.data_requests >= 1
    skipped = inspect_now(catalog, image_id)
    assert skipped.state == State.SKIPPED
    assert admin.get(image_id)["updated_at"] == before["updated_at"]  # skipped: not even a claim
    forced = inspect_now(catalog, image_id, force=True)
    assert forced.state == State.INSPECTED
    assert (forced.data_requests, forced.data_bytes) == (0, 0)
    after = admin.get(image_id)
    unchanged = {key for key in before if key not in (MARKER, "updated_at")}
    assert {key: after.get(key) for key in unchanged} == {key: before[key] for key in unchanged}
    assert Marker.read(after).keys == Marker.read(before).keys  # type: ignore[union-attr]


def test_member_cannot_change_or_remove_introspected_keys(
    images: dict[str, Path], admin: Admin, member: Admin, client: GlanceClient
) -> None:
    image_id = member.uploaded(images["lsilogic.vmdk"])
    inspect_now(GlanceCatalog(client), image_id)
    assert admin.get(image_id)["vmware_adaptertype"] == "lsiLogic"
    for ops in (
        [{"op": "replace", "path": "/vmware_adaptertype", "value": "ide"}],
        [{"op": "remove", "path": "/vmware_adaptertype"}],
        [{"op": "replace", "path": "/introspect_verdict", "value": "ok-trust-me"}],
        [{"op": "add", "path": f"/{MARKER}", "value": "{}"}],
    ):
        refused = member.patch(image_id, ops)
        assert refused.status_code == 403, refused.text
        assert "is reserved" in refused.text
    assert member.patch(image_id, [{"op": "add", "path": "/description", "value": "mine"}]).status_code == 200
    image = admin.get(image_id)
    assert image["vmware_adaptertype"] == "lsiLogic" and image["introspect_verdict"] == "ok"


def test_write_back_as_a_member_is_forbidden_with_a_clear_message(
    images: dict[str, Path], member: Admin, api: object
) -> None:
    image_id = member.uploaded(images["ide.vmdk"])
    url = member.url
    with GlanceClient([url], HeaderIdentity(["member", "reader"], "a" * 32, "alice")) as as_member:
        with pytest.raises(
            PipelineError, match=r"Glance refused introspect's claim .*give introspect's user a role"
        ):
            inspect_now(GlanceCatalog(as_member), image_id)
    assert "introspect_claim" not in member.get(image_id)  # nothing read, nothing written


def test_key_removed_between_read_and_patch_is_read_again(
    images: dict[str, Path], admin: Admin, client: GlanceClient
) -> None:
    image_id = admin.uploaded(images["disk.qcow2"])
    # introspect once owned a key it no longer produces...
    stale_marker = Marker(keys={"introspect_old": digest("x")}, data="old", inspector="0").dumps()
    ops = [
        {"op": "add", "path": "/introspect_old", "value": "x"},
        {"op": "add", "path": f"/{MARKER}", "value": stale_marker},
    ]
    assert admin.patch(image_id, ops).status_code == 200
    snapshot = admin.get(image_id)
    # ...and an admin removes it after our read: our `remove` gets 409, we read again
    assert admin.patch(image_id, [{"op": "remove", "path": "/introspect_old"}]).status_code == 200
    desired = expected(images["disk.qcow2"])
    result = write_back(client, image_id, desired, data="new", inspector="1", image=snapshot)
    assert result.status == Status.WRITTEN, result.message
    assert result.removed == []
    image = admin.get(image_id)
    assert "introspect_old" not in image
    assert {key: image[key] for key in desired} == desired


def test_property_quota_writes_the_most_useful_keys_first(
    images: dict[str, Path], admin: Admin, client: GlanceClient
) -> None:
    image_id = admin.uploaded(images["lsilogic.vmdk"])
    quota = 128
    desired = expected(images["lsilogic.vmdk"])
    room = 5  # the marker and 4 keys
    filler = [{"op": "add", "path": f"/filler_{n:03d}", "value": "x"} for n in range(quota - room)]
    assert admin.patch(image_id, filler).status_code == 200
    result = write_back(client, image_id, desired, data="d", inspector="1")
    assert result.status == Status.WRITTEN, result.message
    assert sorted(result.written) == ["hw_disk_bus", "hw_scsi_model", "vmware_adaptertype", "vmware_disktype"]
    assert set(result.left_out) == desired.keys() - result.written.keys()
    assert "left out by image_property_quota" in result.message
    image = admin.get(image_id)
    assert set(Marker.read(image).keys) == set(result.written)  # type: ignore[union-attr]


def test_no_room_at_all_is_reported(images: dict[str, Path], admin: Admin, client: GlanceClient) -> None:
    image_id = admin.uploaded(images["disk.vhd"])
    filler = [{"op": "add", "path": f"/filler_{n:03d}", "value": "x"} for n in range(128)]
    assert admin.patch(image_id, filler).status_code == 200
    result = write_back(client, image_id, expected(images["disk.vhd"]), data="d", inspector="1")
    assert result.status == Status.QUOTA
    assert "no room for introspect's properties" in result.message
    assert MARKER not in admin.get(image_id)


def test_deleted_image_is_an_outcome(images: dict[str, Path], admin: Admin, client: GlanceClient) -> None:
    image_id = admin.uploaded(images["disk.vdi"])
    snapshot = admin.get(image_id)
    admin.delete(image_id)
    assert inspect_now(GlanceCatalog(client), image_id).state == State.DELETED
    result = write_back(
        client, image_id, {"introspect_verdict": "ok"}, data="d", inspector="1", image=snapshot
    )
    assert result.status == Status.DELETED
    assert "deleted while introspect wrote to it" in result.message


def test_image_not_active_is_left_alone(admin: Admin, catalog: GlanceCatalog) -> None:
    image_id = admin.create("queued", "qcow2")
    outcome = inspect_now(catalog, image_id)
    assert outcome.state == State.NOT_INSPECTABLE
    assert "has no data yet (queued)" in outcome.message
    assert MARKER not in admin.get(image_id)


def test_mismatch_with_what_glance_declares_is_a_finding_never_a_rewrite(
    images: dict[str, Path], admin: Admin, catalog: GlanceCatalog
) -> None:
    # Glance takes qcow2 bytes declared raw (it then records the file size as virtual_size)
    image_id = admin.uploaded(images["disk.qcow2"], disk_format_="raw")
    declared = admin.get(image_id)
    outcome = inspect_now(catalog, image_id)
    assert outcome.outcome is not None
    codes = [finding["code"] for finding in outcome.outcome.findings]
    assert "image.format_mismatch" in codes and "pipeline.virtual_size_changed" in codes
    image = admin.get(image_id)
    assert (image["disk_format"], image["virtual_size"]) == ("raw", declared["virtual_size"])
    assert image["introspect_verdict"] == "rejected"
    assert image["introspect_format"] == "qcow2"
    assert set(image["introspect_findings"].split(",")) >= {
        "image.format_mismatch",
        "pipeline.virtual_size_changed",
    }


def test_a_declared_container_format_is_checked(
    images: dict[str, Path], admin: Admin, catalog: GlanceCatalog
) -> None:
    """Glance keeps what the uploader declared: a bare qcow2 declared `ova` is a finding, as the
    import plugin and the library say, on the write-back path too."""
    path = images["disk.qcow2"]
    image_id = admin.create("declared-ova", "qcow2", "ova")
    admin.upload(image_id, path)
    outcome = inspect_now(catalog, image_id)
    assert outcome.state == State.INSPECTED, outcome.message
    image = admin.get(image_id)
    assert image["container_format"] == "ova"
    report = introspect.inspect(path, expect_container="ova")
    assert image["introspect_verdict"] == report.verdict == "rejected"
    assert "image.container_mismatch" in image["introspect_findings"].split(",")
