"""VDI images written by qemu-img (fixtures/make/vdi.sh), judged against what qemu-img says.

Hostile variants are made in tmp_path from a real fixture: its header is parsed with the module's
own structure declarations, one field is changed with dataclasses.replace, and it is written back
where the declaration says it lives; where qemu's opinion matters, the real qemu-img reads it too.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid

import pytest

import introspect
from introspect.formats import vdi
from introspect.sources import HEAD_SIZE, TAIL_SIZE
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.tools import qemu_info, rewrite

IMAGES = [
    "dynamic-7m.vdi",
    "dynamic-1g3m.vdi",
    "dynamic-odd.vdi",
    "dynamic-1t.vdi",
    "static-5m.vdi",
    "static-odd.vdi",
    "data.vdi",
]


@pytest.fixture(scope="module")
def group():
    return fixture_group("vdi")


def _qemu_live(image):
    """What the real qemu-img says about an image made in the test: (info, error text)."""
    done = subprocess.run(
        ["qemu-img", "info", "-f", "vdi", "--output=json", str(image)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return (json.loads(done.stdout) if done.returncode == 0 else None), done.stderr


def _patched(group, tmp_path, name="dynamic-7m.vdi", **changes):
    """A copy of a fixture with VDIHEADER1 fields changed."""
    image = tmp_path / name
    shutil.copyfile(group / name, image)
    data = bytearray(image.read_bytes())
    header = vdi.VdiHeader1.unpack(data)
    rewrite(data, vdi.VdiHeader1, **changes)
    image.write_bytes(bytes(data))
    return image, header


@pytest.mark.parametrize("name", IMAGES)
def test_matches_qemu(group, name):
    image = group / name
    report = introspect.inspect(image)
    info = qemu_info(image)
    assert report.format == info["format"] == "vdi"
    assert report.verdict == "ok", report.findings
    assert report.findings == []
    assert report.virtual_size == info["virtual-size"]
    details = report.details
    assert details.block_size == info["cluster-size"]
    assert details.image_type == ("static" if name.startswith("static") else "dynamic")
    assert (details.version, details.version_minor) == (1, 1)
    assert details.header_size == vdi.VdiHeader1.SIZE  # qemu writes VDIHEADER1, no LCHS
    assert details.lchs_geometry is None
    assert details.geometry is None  # qemu leaves the legacy geometry "not calculated"
    assert details.sector_size == 512
    assert details.blocks * details.block_size >= info["virtual-size"]
    assert details.uuid is not None
    assert details.uuid == str(uuid.UUID(details.uuid))
    assert details.uuid_link is None
    assert details.uuid_parent is None
    assert report.reads <= 2
    assert report.bytes_read <= HEAD_SIZE + TAIL_SIZE


def test_static_images_have_every_block_allocated(group):
    for name in ("static-5m.vdi", "static-odd.vdi"):
        details = introspect.inspect(group / name).details
        assert details.blocks_allocated == details.blocks


def test_converted_image_has_its_three_data_blocks_allocated(group):
    # vdi.sh writes data into blocks 0, 2 and 4 of the raw disk it converts.
    details = introspect.inspect(group / "data.vdi").details
    assert (details.blocks, details.blocks_allocated) == (5, 3)


def test_reads_do_not_depend_on_the_virtual_size(group):
    small = introspect.inspect(group / "data.vdi")
    big = introspect.inspect(group / "dynamic-1t.vdi")
    assert big.virtual_size > 100_000 * small.virtual_size
    assert (small.reads, small.bytes_read) == (big.reads, big.bytes_read)


@pytest.mark.qemu
def test_odd_disk_size_is_rounded_up_to_a_sector_as_qemu_does(group, tmp_path):
    # dynamic-odd.vdi has 8 blocks for 7 MiB + 512 bytes: room for the rounding.
    image, _ = _patched(group, tmp_path, "dynamic-odd.vdi", disk_size=7 * 1024 * 1024 + 100)
    info, error = _qemu_live(image)
    assert info is not None, error
    report = introspect.inspect(image)
    assert report.verdict == "ok"
    assert report.details.disk_size == 7 * 1024 * 1024 + 100
    assert report.virtual_size == info["virtual-size"]


def test_lchs_geometry_is_read_when_the_header_size_covers_it(group, tmp_path):
    image, _ = _patched(group, tmp_path, header_size=vdi.HEADER1_PLUS_SIZE)
    data = bytearray(image.read_bytes())
    rewrite(data, vdi.VdiDiskGeometry, vdi.LCHS_OFFSET, cylinders=14, heads=16, sectors=63, sector_size=512)
    image.write_bytes(bytes(data))
    details = introspect.inspect(image).details
    assert details.header_size == vdi.HEADER1_PLUS_SIZE
    assert details.lchs_geometry == details.geometry
    assert (details.geometry.cylinders, details.geometry.heads, details.geometry.sectors) == (14, 16, 63)


def test_lchs_geometry_is_not_read_when_the_header_size_does_not_cover_it(group, tmp_path):
    image = tmp_path / "lchs.vdi"
    shutil.copyfile(group / "dynamic-7m.vdi", image)
    data = bytearray(image.read_bytes())
    rewrite(data, vdi.VdiDiskGeometry, vdi.LCHS_OFFSET, cylinders=14, heads=16, sectors=63, sector_size=512)
    image.write_bytes(bytes(data))
    assert introspect.inspect(image).details.lchs_geometry is None


@pytest.mark.qemu
def test_version_0_header_is_parsed_and_qemu_refuses_it(group, tmp_path):
    """A 0.2 image: the pre-header's version, then VDIHEADER0 with the same values as a real image."""
    source = (group / "dynamic-7m.vdi").read_bytes()
    pre = vdi.VdiPreHeader.unpack(source)
    v1 = vdi.VdiHeader1.unpack(source)
    v0 = vdi.VdiHeader0(
        type=v1.type,
        flags=v1.flags,
        comment=b"made from dynamic-7m.vdi".ljust(256, b"\0"),
        legacy_geometry=v1.legacy_geometry,
        disk_size=v1.disk_size,
        block_size=v1.block_size,
        blocks=v1.blocks,
        blocks_allocated=v1.blocks_allocated,
        uuid_create=v1.uuid_create,
        uuid_modify=v1.uuid_modify,
        uuid_linkage=v1.uuid_linkage,
    )
    block_map = b"\xff" * (v1.blocks * vdi.VDI_BLOCK_POINTER_SIZE)
    image = tmp_path / "v0.vdi"
    image.write_bytes(pack(dataclasses.replace(pre, version=0x00000002)) + pack(v0) + block_map)
    info, error = _qemu_live(image)
    assert info is None  # qemu reads any version as VDIHEADER1 and refuses what it finds there
    assert "VDI image" in error
    report = introspect.inspect(image)
    details = report.details
    assert (details.version, details.version_minor) == (0, 2)
    assert details.header_size is None
    assert details.uuid_parent is None
    assert details.description == "made from dynamic-7m.vdi"
    assert details.offset_blocks == vdi.V0_OFFSET_BLOCKS
    assert details.offset_data == vdi.V0_OFFSET_BLOCKS + len(block_map)
    assert details.disk_size == v1.disk_size
    assert report.verdict == "rejected"
    [finding] = report.findings
    assert finding.code == "vdi.qemu_unsupported"
    assert "version 0.2, qemu opens 1.1 only" in finding.message
    assert "VBoxManage clonemedium" in finding.message


@pytest.mark.qemu
def test_link_uuid_is_a_differencing_image_which_qemu_refuses(group, tmp_path):
    parent = uuid.UUID("0b6e3a4c-1d2f-4a5b-8c7d-9e0f1a2b3c4d")
    image, _ = _patched(group, tmp_path, uuid_linkage=parent.bytes_le)
    info, error = _qemu_live(image)
    assert info is None
    assert "non-NULL link UUID" in error
    report = introspect.inspect(image)
    assert report.details.uuid_link == str(parent)
    assert report.verdict == "rejected"
    [finding] = report.findings
    assert finding.code == "vdi.differencing"
    assert finding.severity == "reject"
    assert f"parent image is {parent}" in finding.message
    assert "merge it into its parent" in finding.message


def test_diff_image_type_is_rejected_even_without_a_parent_uuid(group, tmp_path):
    image, _ = _patched(group, tmp_path, type=4)
    report = introspect.inspect(image)
    assert report.details.image_type == "diff"
    assert [f.code for f in report.findings] == ["vdi.differencing"]
    assert "a diff VDI whose parent image is not named" in report.findings[0].message


@pytest.mark.qemu
def test_block_size_other_than_1_mib_is_refused_by_qemu(group, tmp_path):
    image, _ = _patched(group, tmp_path, block_size=2 * 1024 * 1024, blocks=4)
    info, error = _qemu_live(image)
    assert info is None
    assert "block size 2097152 is not 1048576" in error
    report = introspect.inspect(image)
    assert report.verdict == "rejected"
    [finding] = report.findings
    assert finding.code == "vdi.qemu_unsupported"
    assert "block size 2097152, qemu needs 1048576" in finding.message


def test_too_many_blocks_for_the_disk_is_out_of_spec(group, tmp_path):
    image, header = _patched(group, tmp_path, blocks=8)
    data = image.read_bytes()
    image.write_bytes(data[: header.offset_blocks] + b"\xff" * 32 + data[header.offset_blocks + 32 :])
    report = introspect.inspect(image)
    assert report.verdict == "ok"
    [finding] = report.findings
    assert finding.code == "vdi.out_of_spec"
    assert "declares 8 blocks where a 7340032-byte disk needs 7" in finding.message


def test_disk_bigger_than_its_block_map_is_a_bad_field(group, tmp_path):
    image, _ = _patched(group, tmp_path, disk_size=8 * 1024 * 1024)
    report = introspect.inspect(image)
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "vdi.bad_header"
    assert finding.message == (
        "cbDisk is 8388608, expected at most cBlocks * cbBlock = 7340032, what the block map can hold "
        f"(at offset {vdi.VdiHeader1.OFFSET})"
    )


def test_header_size_beyond_the_block_map_is_a_bad_field(group, tmp_path):
    image, header = _patched(group, tmp_path, header_size=0xFFFFFFFF)
    report = introspect.inspect(image)
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "vdi.bad_header"
    largest = header.offset_blocks - vdi.VdiHeader1.OFFSET
    assert finding.message.startswith(f"cbHeader is 4294967295, expected {vdi.V1_HEADER_MIN}..{largest}")


def test_unknown_image_type_is_a_bad_field(group, tmp_path):
    image, _ = _patched(group, tmp_path, type=9)
    [finding] = introspect.inspect(image).findings
    assert finding.code == "vdi.bad_header"
    assert finding.message.startswith("u32Type is 9, expected 1 (dynamic), 2 (static), 3 (undo) or 4 (diff)")


def test_unknown_major_version_is_a_bad_field(group, tmp_path):
    image = tmp_path / "v2.vdi"
    data = bytearray((group / "dynamic-7m.vdi").read_bytes())
    rewrite(data, vdi.VdiPreHeader, version=0x00020000)
    image.write_bytes(bytes(data))
    report = introspect.inspect(image)
    assert report.verdict == "error"
    assert report.findings[0].message == (
        "version is '2.0', expected 0.x or 1.x: this is not a VDI any VirtualBox release wrote (at offset 0)"
    )


def test_block_map_cut_short_is_truncated(group, tmp_path):
    image = tmp_path / "cut.vdi"
    shutil.copyfile(group / "dynamic-1t.vdi", image)
    details = introspect.inspect(image).details
    with image.open("r+b") as file:
        file.truncate(1024 * 1024)
    report = introspect.inspect(image)
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "image.truncated"
    end = details.offset_blocks + 4 * details.blocks
    assert finding.message == (
        f"the VDI block map needs bytes {details.offset_blocks}..{end} but the file ends at 1048576: "
        f"the image was cut short; upload it again (at offset {details.offset_blocks})"
    )


def test_data_blocks_cut_short_are_truncated(group, tmp_path):
    image = tmp_path / "cut.vdi"
    shutil.copyfile(group / "data.vdi", image)
    details = introspect.inspect(image).details
    with image.open("r+b") as file:
        file.truncate(details.offset_data + details.block_size)
    [finding] = introspect.inspect(image).findings
    assert finding.code == "image.truncated"
    assert finding.message.startswith(
        f"the VDI data area of 3 allocated blocks needs bytes {details.offset_data}.."
        f"{details.offset_data + 3 * details.block_size} but the file ends at "
        f"{details.offset_data + details.block_size}"
    )
