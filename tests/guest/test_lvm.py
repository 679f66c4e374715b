"""LVM2 (introspect.guest.lvm) on a disk made by the lvm2 tools in libguestfs' appliance
(fixtures/make/volext4.sh), against what pvs, lvs and vgcfgbackup said there; the root LV holds
ext4-4k.img's bytes (copied through device-mapper), the data LV an ext2 that blkid describes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from introspect.errors import TruncatedImage
from introspect.formats.raw import RawGuestView
from introspect.guest import lvm
from introspect.guest.disk import Disk
from introspect.guest.fs import identify, open_filesystem
from introspect.guest.fs.base import read_file
from introspect.guest.lvm import CorruptLvm, LabelHeader, LogicalVolumeDisk, MdaHeader, RawLocn, calc_crc
from introspect.guest.volumes import Volumes, find_volumes
from introspect.safety import GUEST_UNREADABLE, GUEST_UNSUPPORTED_VOLUME
from introspect.sources import Budget, FileSource, Reader
from tests.conftest import fixture_group
from tests.tools import recorded, rewrite

GUEST_BUDGET = Budget(max_reads=512, max_bytes=4 << 20)
SECTOR = 512
VG = "volext4"


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("volext4")


def volumes_of(path: Path, budget: Budget = GUEST_BUDGET) -> tuple[Volumes, Reader]:
    reader = Reader(FileSource(path), budget)
    return find_volumes(Disk.of(RawGuestView(reader, reader.size))), reader


def report(group: Path, what: str) -> list[dict[str, str]]:
    """`lvs` or `pvs --reportformat json` as recorded in the appliance."""
    return json.loads(recorded(group / "lvm.img", f"{what}.json"))["report"][0][what[:2]]


def partition_starts(group: Path) -> dict[str, int]:
    table = json.loads(recorded(group / "lvm.img", "sfdisk.json"))["partitiontable"]
    return {
        "/dev/sda" + p["node"].removeprefix("lvm.img"): p["start"] * table["sectorsize"]
        for p in table["partitions"]
    }


def by_device(volumes: Volumes) -> dict[str, tuple]:
    return {volume.device: (volume, disk) for volume, disk in volumes.found}


def test_the_pvs_are_pvs_pvs(group: Path) -> None:
    volumes, _ = volumes_of(group / "lvm.img")
    found = by_device(volumes)
    for pv in report(group, "pvs"):
        volume, disk = found[pv["pv_name"]]
        assert (volume.filesystem, volume.uuid) == ("LVM2_member", pv["pv_uuid"])
        assert identify(disk) == "LVM2_member"


def test_a_lookup_through_lvm_stays_well_within_the_guest_budget(group: Path) -> None:
    volumes, reader = volumes_of(group / "lvm.img")
    root = open_filesystem(by_device(volumes)[f"/dev/{VG}/root"][1])
    assert read_file(root, "/etc/os-release", 4096).startswith(b'NAME="Volext Linux"')
    assert reader.reads <= 24
    assert reader.bytes_read <= 512 * 1024


def test_the_lvs_are_the_visible_ones_lvs_lists(group: Path) -> None:
    volumes, reader = volumes_of(group / "lvm.img")
    visible = {row["lv_name"] for row in report(group, "lvs") if not row["lv_name"].startswith("[")}
    devices = [volume.device for volume, _ in volumes.found]
    assert devices[:2] == ["/dev/sda1", "/dev/sda2"]
    assert set(devices[2:]) == {f"/dev/{VG}/{name}" for name in visible}
    sizes = {row["lv_name"]: int(row["lv_size"]) for row in report(group, "lvs")}
    for volume, _ in volumes.found[2:]:
        assert volume.size == sizes[volume.device.rsplit("/", 1)[1]]
    assert reader.reads <= 12


def test_linear_lvs_map_their_segments(group: Path) -> None:
    """root: 4 extents on sda1 then 4 on sda2 (lvs' seg_pe_ranges), read through both."""
    volumes, _ = volumes_of(group / "lvm.img")
    pvs = {pv["pv_name"]: pv for pv in report(group, "pvs")}
    starts = partition_starts(group)
    segments = [row for row in report(group, "lvs") if row["lv_name"] == "root"]
    assert len(segments) == 2
    volume, disk = by_device(volumes)[f"/dev/{VG}/root"]
    assert isinstance(disk, LogicalVolumeDisk)
    expected = []
    for row in segments:
        pv, extents = row["seg_pe_ranges"].split(":")
        first = int(extents.split("-")[0])
        at = starts[pv] + int(pvs[pv]["pe_start"]) + first * int(pvs[pv]["vg_extent_size"])
        expected.append((int(row["seg_start"]), at, int(row["seg_size"])))
    assert disk.extents == expected
    assert volume.start == expected[0][1]
    assert volume.note is None


def test_the_root_lv_holds_the_bytes_copied_into_it(group: Path) -> None:
    volumes, _ = volumes_of(group / "lvm.img", Budget(max_reads=64, max_bytes=16 << 20))
    _, disk = by_device(volumes)[f"/dev/{VG}/root"]
    source = (group / "ext4-4k.img").read_bytes()
    boundary = 4 << 20  # the second segment starts here
    assert disk.read(boundary - 100, 200, "across segments") == source[boundary - 100 : boundary + 100]
    assert hashlib.sha256(disk.read(0, disk.size, "the LV")).digest() == hashlib.sha256(source).digest()
    with pytest.raises(TruncatedImage):
        disk.read(disk.size - 1, 2, "past the end")
    inner = disk.slice(boundary - 10, 20, "inner")
    assert inner.read(0, 20, "a slice") == source[boundary - 10 : boundary + 10]


def test_the_lvs_filesystems_are_blkids(group: Path) -> None:
    volumes, _ = volumes_of(group / "lvm.img")
    found = by_device(volumes)
    root = open_filesystem(found[f"/dev/{VG}/root"][1])
    assert read_file(root, "/etc/hostname", 100) == b"volext4\n"
    said = dict(line.split("=", 1) for line in recorded(group / "lvm.img", "data-blkid.txt").splitlines())
    data = open_filesystem(found[f"/dev/{VG}/data"][1])
    assert (data.name, data.label, data.uuid) == (said["TYPE"], said["LABEL"], said["UUID"])


def test_what_is_not_linear_is_named_not_read(group: Path) -> None:
    volumes, _ = volumes_of(group / "lvm.img")
    found = by_device(volumes)
    segtypes = {row["lv_name"]: row["segtype"] for row in report(group, "lvs")}
    unread = {name for name, kind in segtypes.items() if kind != "linear" and not name.startswith("[")}
    unread.add("snap")  # lvs calls the snapshot's COW store linear; the device is a snapshot
    assert unread == {"striped", "mirror", "pool", "thin", "snap"}
    for name in unread:
        volume, disk = found[f"/dev/{VG}/{name}"]
        assert volume.note, name
        assert disk.size == 0
    assert "raid1" in found[f"/dev/{VG}/mirror"][0].note
    assert "snapshot of data" in found[f"/dev/{VG}/snap"][0].note
    noted = sorted(
        f.message.split(":")[0] for f in volumes.findings if f.code == GUEST_UNSUPPORTED_VOLUME.code
    )
    assert noted == sorted(f"/dev/{VG}/{name}" for name in unread)


def test_the_metadata_is_vgcfgbackups(group: Path) -> None:
    """vgcfgbackup writes the same text format: parsed, it names every LV lvs -a lists."""
    vg = lvm.volume_group(recorded(group / "lvm.img", "vgcfgbackup.txt"), "vgcfgbackup")
    names = {row["lv_name"].strip("[]") for row in report(group, "lvs")} | {"snapshot0"}
    assert {lv.name for lv in vg.logical_volumes} == names
    assert {pv.uuid for pv in vg.physical_volumes.values()} == {pv["pv_uuid"] for pv in report(group, "pvs")}
    assert vg.name == VG
    assert vg.extent_size * SECTOR == int(report(group, "pvs")[0]["vg_extent_size"])


# --- Damaged PVs, derived from the real disk --------------------------------------------------


def patched(group: Path, tmp_path: Path) -> Path:
    path = tmp_path / "lvm.img"
    shutil.copyfile(group / "lvm.img", path)
    return path


def label_at(path: Path, partition: int) -> int:
    """Where pvcreate put the LABELONE sector (one of the partition's first 4)."""
    with path.open("rb") as file:
        file.seek(partition)
        head = file.read(4 * SECTOR)
    return partition + head.index(b"LABELONE")


def edit(path: Path, offset: int, length: int, change) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        data = bytearray(file.read(length))
        change(data)
        file.seek(offset)
        file.write(data)


def test_a_missing_pv_names_the_lvs_that_need_it(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path)
    starts = partition_starts(group)
    edit(
        path,
        label_at(path, starts["/dev/sda2"]),
        SECTOR,
        lambda data: data.__setitem__(slice(0, 8), bytes(8)),
    )
    volumes, _ = volumes_of(path)
    found = by_device(volumes)
    assert found["/dev/sda2"][0].filesystem is None
    root, disk = found[f"/dev/{VG}/root"]
    assert "needs the physical volume(s) pv1" in root.note
    assert disk.size == 0
    assert any(f.code == GUEST_UNREADABLE.code and f"/dev/{VG}/root" in f.message for f in volumes.findings)
    assert open_filesystem(found[f"/dev/{VG}/data"][1]).label == "volext4-data"


def test_a_label_with_a_bad_crc_is_no_pv(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path)
    starts = partition_starts(group)
    at = label_at(path, starts["/dev/sda1"])
    edit(path, at + LabelHeader.SIZE, 1, lambda data: data.__setitem__(0, data[0] ^ 0xFF))
    volumes, _ = volumes_of(path)
    found = by_device(volumes)
    assert found["/dev/sda1"][0].filesystem is None
    assert any("label's CRC does not match" in f.message for f in volumes.findings)
    assert "needs the physical volume(s) pv0" in found[f"/dev/{VG}/data"][0].note


def mda(path: Path, partition: int) -> tuple[int, MdaHeader, RawLocn]:
    """The first metadata area: pvcreate puts it at 4 KiB into the PV."""
    at = partition + 4096
    with path.open("rb") as file:
        file.seek(at)
        sector = file.read(SECTOR)
    header = MdaHeader.unpack(sector)
    assert header.magic == lvm.FMTT_MAGIC
    return at, header, RawLocn.unpack(sector, MdaHeader.SIZE)


def test_a_text_that_wraps_round_the_circular_buffer_is_read(group: Path, tmp_path: Path) -> None:
    """Move sda1's text so that its first 100 bytes end the area and the rest follows the header."""
    path = patched(group, tmp_path)
    starts = partition_starts(group)
    # sda2's label goes, so the VG can only come from sda1's wrapped text
    edit(path, label_at(path, starts["/dev/sda2"]), 8, lambda data: data.__setitem__(slice(0, 8), bytes(8)))
    at, header, locn = mda(path, starts["/dev/sda1"])
    with path.open("r+b") as file:
        file.seek(at + locn.offset)
        text = file.read(locn.size)
        new_offset = header.size - 100
        file.seek(at + new_offset)
        file.write(text[:100])
        file.seek(at + lvm.MDA_HEADER_SIZE)
        file.write(text[100:])
        file.seek(at)
        sector = bytearray(file.read(SECTOR))
        rewrite(sector, RawLocn, MdaHeader.SIZE, offset=new_offset)
        rewrite(
            sector, MdaHeader, 0, checksum_xl=calc_crc(lvm.INITIAL_CRC, bytes(sector[lvm.MDA_CRC_FROM :]))
        )
        file.seek(at)
        file.write(sector)
    volumes, _ = volumes_of(path)
    data = by_device(volumes)[f"/dev/{VG}/data"]
    assert open_filesystem(data[1]).label == "volext4-data"


def test_a_text_whose_checksum_fails_is_not_read(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path)
    starts = partition_starts(group)
    for device in ("/dev/sda1", "/dev/sda2"):
        at, _, locn = mda(path, starts[device])
        edit(path, at + locn.offset + 10, 1, lambda data: data.__setitem__(0, data[0] ^ 1))
    volumes, _ = volumes_of(path)
    assert [v.device for v, _ in volumes.found] == ["/dev/sda1", "/dev/sda2"]
    assert [f.message.endswith("fails its checksum") for f in volumes.findings] == [True, True]


def test_a_text_larger_than_its_area_is_not_read(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path)
    starts = partition_starts(group)
    for device in ("/dev/sda1", "/dev/sda2"):
        at, _, _ = mda(path, starts[device])

        def grow(sector: bytearray) -> None:
            rewrite(sector, RawLocn, MdaHeader.SIZE, size=1 << 40)
            rewrite(
                sector, MdaHeader, 0, checksum_xl=calc_crc(lvm.INITIAL_CRC, bytes(sector[lvm.MDA_CRC_FROM :]))
            )

        edit(path, at, SECTOR, grow)
    volumes, reader = volumes_of(path)
    assert len(volumes.found) == 2
    assert all("larger than its area or the cap" in f.message for f in volumes.findings)
    assert reader.bytes_read < 1 << 20


# --- The text parser, bounded ----------------------------------------------------------------------


def test_the_parser_reads_lvms_grammar() -> None:
    parsed = lvm.parse_text('a = "x\\"y" # comment\nb { c = [1, "two", 3]\n d { e = -4 } }\nf = 1.5\n')
    assert parsed == {"a": 'x"y', "b": {"c": [1, "two", 3], "d": {"e": -4}}, "f": 1.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a {" * 20 + "}" * 20, "deeper than 16"),
        ("a = [" + "1," * 70000 + "1]", "more than 65536"),
        ("a { b = 1", "ends inside a section"),
        ("}", "closes a section it never opened"),
        ("a = [1, 2", "ends inside a list"),
        ("a = ", "ends after '='"),
        ("a = {", "where a value was expected"),
        ("a b", "after the name"),
        ("a = 1 ; b = 2", "unexpected character"),
        ("x" * (lvm.MAX_METADATA_SIZE + 1), "longer than"),
    ],
)
def test_the_parser_refuses_what_is_out_of_bounds(text: str, message: str) -> None:
    with pytest.raises(CorruptLvm, match=message):
        lvm.parse_text(text)


def test_a_text_without_one_volume_group_is_refused() -> None:
    with pytest.raises(CorruptLvm, match="holds 0 volume groups"):
        lvm.volume_group("contents = 1", "test")
    with pytest.raises(CorruptLvm, match="extent_size is 0"):
        lvm.volume_group('vg { id = "x" seqno = 1 extent_size = 0 }', "test")
    long_name = "lv" * 100
    with pytest.raises(CorruptLvm, match="is not an LVM name"):
        lvm.volume_group(
            f'vg {{ id = "x" seqno = 1 extent_size = 8 logical_volumes {{ {long_name} {{ }} }} }}', "t"
        )
