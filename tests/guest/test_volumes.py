"""The guest disk's volumes (introspect.guest.volumes) and `identify`, against what sfdisk and
blkid say of disks partitioned by sfdisk and sgdisk, each filesystem dd'ed into its partition
(fixtures/make/volext4.sh)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from introspect.formats.partitions import GPT_TYPE_NAMES, LegacyMbr, PartitionRecord
from introspect.formats.raw import RawGuestView
from introspect.guest.disk import Disk
from introspect.guest.fs import identify, open_filesystem
from introspect.guest.volumes import Volumes, find_volumes
from introspect.safety import GUEST_VOLUME_CUT
from introspect.sources import Budget, FileSource, Reader
from tests.conftest import fixture_group
from tests.tools import recorded, rewrite

GUEST_BUDGET = Budget(max_reads=512, max_bytes=4 << 20)
SECTOR = 512


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("volext4")


def volumes_of(path: Path) -> tuple[Volumes, Reader]:
    reader = Reader(FileSource(path), GUEST_BUDGET)
    return find_volumes(Disk.of(RawGuestView(reader, reader.size))), reader


def sfdisk(path: Path) -> dict:
    return json.loads(recorded(path, "sfdisk.json"))["partitiontable"]


def blkid_by_partition(path: Path) -> dict[str, dict[str, str]]:
    """blkid -p of each partition, as recorded: device -> its TYPE, LABEL, UUID..."""
    found = {}
    for block in recorded(path, "blkid.txt").split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "PARTITION" in fields:
            found[f"/dev/sda{fields.pop('PARTITION')}"] = fields
    return found


@pytest.mark.parametrize("name", ["mbr.img", "gpt.img"])
def test_partitions_are_sfdisks_named_as_linux_names_them(group: Path, name: str) -> None:
    path = group / name
    table = sfdisk(path)
    volumes, _ = volumes_of(path)
    expected = [p for p in table["partitions"] if p["type"] not in ("5", "f", "85")]  # not the containers
    assert [v.device for v, _ in volumes.found] == [
        "/dev/sda" + p["node"].removeprefix(path.name) for p in expected
    ]
    for (volume, disk), partition in zip(volumes.found, expected, strict=True):
        assert volume.start == partition["start"] * table["sectorsize"]
        assert volume.size == disk.size == partition["size"] * table["sectorsize"]
        if table["label"] == "dos":
            assert volume.partition_type == f"0x{int(partition['type'], 16):02x}"
        else:
            assert volume.partition_type == GPT_TYPE_NAMES[partition["type"].lower()]
    assert volumes.findings == []
    if name == "mbr.img":
        assert [v.device for v, _ in volumes.found] == [
            "/dev/sda1",
            "/dev/sda2",
            "/dev/sda5",
            "/dev/sda6",
            "/dev/sda7",
        ]


@pytest.mark.parametrize("name", ["mbr.img", "gpt.img"])
def test_each_partition_is_what_blkid_says(group: Path, name: str) -> None:
    path = group / name
    said = blkid_by_partition(path)
    volumes, reader = volumes_of(path)
    for volume, disk in volumes.found:
        expected = said[volume.device]
        fs = open_filesystem(disk)
        if fs is not None:
            assert (fs.name, fs.label, fs.uuid) == (expected["TYPE"], expected["LABEL"], expected["UUID"])
        else:
            assert identify(disk) == expected["TYPE"]
    assert {said[v.device]["TYPE"] for v, _ in volumes.found} >= {"swap", "ext4"}
    assert reader.reads <= 40


def test_identify_names_luks_and_nothing_in_free_space(group: Path) -> None:
    volumes, _ = volumes_of(group / "gpt.img")
    by_device = {volume.device: disk for volume, disk in volumes.found}
    assert identify(by_device["/dev/sda3"]) == "crypto_LUKS"
    disk = next(iter(by_device.values()))
    free = Disk(disk.cache, 30 * 1024 * 1024, 4 * 1024 * 1024, "free space")
    assert identify(free) is None


def test_finding_the_volumes_costs_a_few_reads(group: Path) -> None:
    for name, most in (("mbr.img", 12), ("gpt.img", 10)):
        _, reader = volumes_of(group / name)
        assert reader.reads <= most, name


def test_a_disk_without_a_table_is_one_volume(group: Path) -> None:
    path = group / "ext4-4k.img"
    volumes, _ = volumes_of(path)
    assert volumes.table is None
    [(volume, disk)] = volumes.found
    assert (volume.device, volume.start, volume.size) == ("/dev/sda", 0, path.stat().st_size)
    assert open_filesystem(disk).label == "volext4-4k"


def with_record(group: Path, tmp_path: Path, number: int, **changes: int) -> Path:
    """A copy of mbr.img with primary record `number` changed."""
    path = tmp_path / "mbr.img"
    shutil.copyfile(group / "mbr.img", path)
    with path.open("r+b") as file:
        sector = bytearray(file.read(SECTOR))
        at = LegacyMbr.offset_of("partition_record") + (number - 1) * PartitionRecord.SIZE
        rewrite(sector, PartitionRecord, at, **changes)
        file.seek(0)
        file.write(sector)
    return path


def test_a_partition_past_the_end_is_cut_with_a_finding(group: Path, tmp_path: Path) -> None:
    path = with_record(group, tmp_path, 2, size_in_lba=0xFFFFFFFF)
    volumes, _ = volumes_of(path)
    volume = next(v for v, _ in volumes.found if v.device == "/dev/sda2")
    assert volume.size == path.stat().st_size - volume.start
    [finding] = [f for f in volumes.findings if f.code == GUEST_VOLUME_CUT.code]
    assert "/dev/sda2" in finding.message


def test_a_partition_after_the_end_is_empty_with_a_finding(group: Path, tmp_path: Path) -> None:
    path = with_record(group, tmp_path, 1, starting_lba=0xFFFFFF00)
    volumes, _ = volumes_of(path)
    volume, disk = volumes.found[0]
    assert (volume.device, volume.start, volume.size, disk.size) == ("/dev/sda1", 0xFFFFFF00 * SECTOR, 0, 0)
    assert open_filesystem(disk) is None
    assert identify(disk) is None
    assert [f.code for f in volumes.findings] == [GUEST_VOLUME_CUT.code]
