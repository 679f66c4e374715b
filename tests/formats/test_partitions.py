"""MBR and GPT parsing, checked against what sfdisk, sgdisk and fdisk say about the same disks.

The disks are raw files (fixtures/make/partitions.sh), so they come back as `raw` reports with the
table in `details.partition_table`. Damaged tables are made here from copies of real fixtures, by
repacking one field with the structure declarations of `introspect.formats.partitions`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

import introspect
from introspect.formats import partitions
from introspect.formats.partitions import Gpt, Mbr
from introspect.sources import Budget
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.tools import recorded

GPT_DISKS = ["gpt-129m.img", "gpt-1t.img", "gpt-grown.img"]
MBR_DISKS = ["mbr.img", "mbr-boot.img"]
#: sfdisk's names for the GPT attribute bits (UEFI Table 5-7), as it prints them in "attrs".
SFDISK_ATTRIBUTES = {"RequiredPartition": 0, "NoBlockIOProtocol": 1, "LegacyBIOSBootable": 2}


def image(name: str) -> Path:
    return fixture_group("partitions") / name


def sfdisk(name: str) -> dict:
    return json.loads(recorded(image(name), "sfdisk.json"))["partitiontable"]


def table_of(path: Path) -> Mbr | Gpt | None:
    report = introspect.inspect(path)
    assert report.format == "raw"
    return report.details.partition_table


def copy(name: str, tmp_path: Path) -> Path:
    """A sparse copy of a fixture, to damage."""
    target = tmp_path / name
    subprocess.run(["cp", "--sparse=always", str(image(name)), str(target)], check=True)
    return target


def patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(data)


def read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(length)


def repack(record, **changes) -> bytes:
    """A structure as declared in introspect.formats.partitions, with some fields changed."""
    return pack(dataclasses.replace(record, **changes))


def has_finding(report, code: str, text: str) -> bool:
    return any(f.code == code and text in f.message for f in report.findings)


def sfdisk_attributes(attrs: str) -> int:
    """'RequiredPartition GUID:60,62' -> the attribute bits."""
    bits = 0
    for word in attrs.split():
        if word.startswith("GUID:"):
            for bit in word.removeprefix("GUID:").split(","):
                bits |= 1 << int(bit)
        else:
            bits |= 1 << SFDISK_ATTRIBUTES[word]
    return bits


def partition_number(node: str) -> int:
    return int(re.search(r"(\d+)$", node).group(1))


# --- GPT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GPT_DISKS)
def test_gpt_matches_sfdisk(name):
    expected = sfdisk(name)
    table = table_of(image(name))
    assert expected["label"] == "gpt"
    assert isinstance(table, Gpt)
    assert table.sector_size == expected["sectorsize"]
    assert table.header.disk_guid == expected["id"].lower()
    assert table.header.first_usable_lba == expected["firstlba"]
    assert table.header.last_usable_lba == expected["lastlba"]
    assert table.header.header_crc32_valid and table.header.partition_entry_array_crc32_valid
    assert table.mbr is not None and table.mbr.protective
    ours = {p.number: p for p in table.partitions}
    assert sorted(ours) == sorted(partition_number(p["node"]) for p in expected["partitions"])
    for theirs in expected["partitions"]:
        part = ours[partition_number(theirs["node"])]
        assert part.starting_lba == theirs["start"]
        assert part.ending_lba - part.starting_lba + 1 == theirs["size"]
        assert part.partition_type_guid == theirs["type"].lower()
        assert part.unique_partition_guid == theirs["uuid"].lower()
        assert part.partition_name == theirs.get("name", "")
        assert part.attributes == sfdisk_attributes(theirs.get("attrs", ""))


@pytest.mark.parametrize("name", GPT_DISKS)
def test_gpt_matches_sgdisk(name):
    text = recorded(image(name), "sgdisk.txt")
    table = table_of(image(name))
    entries = int(re.search(r"holds up to (\d+) entries", text).group(1))
    array_lba = int(re.search(r"Main partition table begins at sector (\d+)", text).group(1))
    assert table.header.number_of_partition_entries == entries
    assert table.header.partition_entry_lba == array_lba
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+ \S+\s+([0-9A-F]{4})\s+(.*)$", text, re.MULTILINE)
    assert [(p.number, p.starting_lba, p.ending_lba, p.partition_name) for p in table.partitions] == [
        (int(n), int(start), int(end), label) for n, start, end, _, label in rows
    ]


@pytest.mark.parametrize("name", GPT_DISKS)
def test_gpt_firmware_follows_sgdisk_codes(name):
    """sgdisk's EF00 is an EFI System Partition (UEFI boots it), EF02 a BIOS boot partition; the
    fixture also sets the Legacy BIOS Bootable attribute, which sfdisk reports."""
    text = recorded(image(name), "sgdisk.txt")
    codes = set(re.findall(r"\s([0-9A-F]{4})\s", text))
    legacy = any("LegacyBIOSBootable" in p.get("attrs", "") for p in sfdisk(name)["partitions"])
    firmware = introspect.inspect(image(name)).details.firmware
    assert firmware is not None
    assert firmware.uefi == ("EF00" in codes)
    assert firmware.bios == ("EF02" in codes or legacy)
    assert len(firmware.evidence) == ("EF00" in codes) + ("EF02" in codes) + legacy


def test_gpt_4k_sectors_matches_fdisk():
    text = recorded(image("gpt-4k.img"), "fdisk.txt")
    table = table_of(image("gpt-4k.img"))
    assert isinstance(table, Gpt)
    assert table.sector_size == int(re.search(r"Sector size \(logical/physical\): (\d+)", text).group(1))
    assert table.header.disk_guid == re.search(r"Disk identifier: (\S+)", text).group(1).lower()
    rows = re.findall(r"^\S+?(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.MULTILINE)
    assert [
        (
            p.number,
            p.starting_lba,
            p.ending_lba,
            p.partition_type_guid,
            p.partition_name,
            p.unique_partition_guid,
        )
        for p in table.partitions
    ] == [
        (int(n), int(start), int(end), kind.lower(), label, unique.lower())
        for n, start, end, _, kind, label, unique in rows
    ]
    assert table.backup.valid


def test_same_reads_for_small_and_1tib_gpt():
    """The head and tail hold everything of a 512-byte-sector GPT, whatever the disk size."""
    small, big = introspect.inspect(image("gpt-129m.img")), introspect.inspect(image("gpt-1t.img"))
    assert big.virtual_size > 1 << 40
    assert (small.reads, small.bytes_read) == (big.reads, big.bytes_read)
    assert small.reads <= 2


def test_grown_disk_backup_not_at_end():
    """sgdisk -v: "the secondary header's self-pointer indicates that it doesn't reside at the end"."""
    verify = recorded(image("gpt-grown.img"), "sgdisk-verify.txt")
    assert "doesn't reside" in verify
    report = introspect.inspect(image("gpt-grown.img"))
    table = report.details.partition_table
    assert report.verdict == "ok"
    assert table.backup.valid and table.backup.lba == table.header.alternate_lba
    assert table.backup.lba < report.size // 512 - 1
    [finding] = [f for f in report.findings if f.code == "gpt.backup_header"]
    assert finding.severity == "warn" and "sgdisk -e" in finding.message
    assert report.reads <= 3


def test_cut_disk_backup_missing():
    """sgdisk -v on the cut copy: "Backup header: ERROR", "partition 4 is too big for the disk"."""
    verify = recorded(image("gpt-cut.img"), "sgdisk-verify.txt")
    assert "Backup header: ERROR" in verify and "partition 4 is too big" in verify
    report = introspect.inspect(image("gpt-cut.img"))
    assert report.verdict == "ok"
    assert not report.details.partition_table.backup.present
    codes = {f.code: f for f in report.findings}
    assert "missing" in codes["gpt.backup_header"].message
    # gpt-cut.img is gpt-129m.img cut: sgdisk put the backup at that disk's last sector.
    sectors = int(re.search(r": (\d+) sectors", recorded(image("gpt-129m.img"), "sgdisk.txt")).group(1))
    full = sectors - 1
    missing = (full + 1) * 512 - image("gpt-cut.img").stat().st_size
    assert codes["gpt.backup_header"].message.startswith(
        f"the backup GPT header is missing: the primary header puts it at LBA {full}, past the end of the file"
    )
    assert f"so {missing} bytes of the disk are missing" in codes["gpt.backup_header"].message
    assert "partition(s) 4 end past the end" in codes["raw.partition_beyond_end"].message


def test_bad_header_crc_is_a_warning(tmp_path):
    """Change the header's Reserved field (covered by HeaderCRC32) without fixing the CRC."""
    disk = copy("gpt-129m.img", tmp_path)
    offset = partitions.PRIMARY_HEADER_LBA * 512
    header = partitions.GptHeaderFields.unpack(read(disk, offset, partitions.GptHeaderFields.SIZE))
    patch(disk, offset, repack(header, reserved=1))
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert not report.details.partition_table.header.header_crc32_valid
    [finding] = [f for f in report.findings if f.code == "gpt.header_crc"]
    assert finding.severity == "warn" and "CRC32 does not match" in finding.message
    assert len(report.details.partition_table.partitions) == len(sfdisk("gpt-129m.img")["partitions"])


def test_bad_entry_array_crc_is_a_warning(tmp_path):
    """Name the last (unused) entry of the array: its CRC no longer matches the header's."""
    disk = copy("gpt-129m.img", tmp_path)
    table = table_of(disk)
    size = table.header.size_of_partition_entry
    offset = table.header.partition_entry_lba * 512 + (table.header.number_of_partition_entries - 1) * size
    entry = partitions.GptPartitionEntry.unpack(read(disk, offset, size))
    name = "x".encode("utf-16-le").ljust(len(entry.partition_name), b"\0")
    patch(disk, offset, repack(entry, partition_name=name))
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert report.details.partition_table.header.partition_entry_array_crc32_valid is False
    assert "gpt.entries_crc" in {f.code for f in report.findings}
    # the backup header still records the intact array's CRC: it is where firmware turns
    assert report.details.partition_table.backup.valid


def rewrite_header(disk: Path, **changes: int) -> None:
    """Change header fields and recompute HeaderCRC32, as a (hostile) tool would."""
    offset = partitions.PRIMARY_HEADER_LBA * 512
    block = read(disk, offset, 512)
    header = dataclasses.replace(partitions.GptHeaderFields.unpack(block), header_crc32=0, **changes)
    packed = pack(header) + block[header.SIZE :]
    crc = partitions.header_crc32(packed, header.header_size)
    patch(disk, offset, repack(header, header_crc32=crc))


def test_entry_count_beyond_cap_is_clamped(tmp_path):
    disk = copy("gpt-129m.img", tmp_path)
    rewrite_header(disk, number_of_partition_entries=1 << 31)
    report = introspect.inspect(disk)
    table = report.details.partition_table
    assert report.verdict == "ok"
    assert table.header.header_crc32_valid and table.header.partition_entry_array_crc32_valid is None
    assert len(table.partitions) == len(sfdisk("gpt-129m.img")["partitions"])
    assert report.bytes_read <= 66048 + partitions.MAX_PARTITION_ENTRIES * partitions.MAX_PARTITION_ENTRY_SIZE
    assert has_finding(report, "gpt.out_of_spec", "more than the 1024 read")


def test_entry_size_out_of_spec_lists_nothing(tmp_path):
    disk = copy("gpt-129m.img", tmp_path)
    rewrite_header(disk, size_of_partition_entry=7)
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert report.details.partition_table.partitions == []
    assert has_finding(report, "gpt.out_of_spec", "SizeOfPartitionEntry is 7")


# --- MBR -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MBR_DISKS)
def test_mbr_matches_sfdisk(name):
    expected = sfdisk(name)
    table = table_of(image(name))
    assert expected["label"] == "dos"
    assert isinstance(table, Mbr)
    assert table.unique_mbr_disk_signature == int(expected["id"], 16)
    assert not table.protective
    assert [(p.number, p.starting_lba, p.size_in_lba, p.os_type, p.bootable) for p in table.partitions] == [
        (partition_number(p["node"]), p["start"], p["size"], int(p["type"], 16), p.get("bootable", False))
        for p in expected["partitions"]
    ]
    # sfdisk numbers logical partitions from 5
    logical = [partition_number(p["node"]) > 4 for p in expected["partitions"]]
    assert [p.logical for p in table.partitions] == logical


@pytest.mark.parametrize("name", MBR_DISKS)
def test_mbr_chs_matches_file(name):
    """file(1): 'partition 1 : ID=0xc, active, start-CHS (0x0,32,33), end-CHS (0x8,73,1), ...'."""
    text = recorded(image(name), "file.txt")
    described = re.findall(
        r"partition (\d) : ID=0x([0-9a-f]+),(?: active,)? start-CHS \((0x[0-9a-f]+),(\d+),(\d+)\), "
        r"end-CHS \((0x[0-9a-f]+),(\d+),(\d+)\), startsector (\d+), (\d+) sectors",
        text,
    )
    primaries = [p for p in table_of(image(name)).partitions if not p.logical]
    assert len(described) == len(primaries) == 4
    for (n, kind, sc, sh, ss, ec, eh, es, start, size), part in zip(described, primaries, strict=True):
        assert (part.number, part.os_type, part.starting_lba, part.size_in_lba) == (
            int(n),
            int(kind, 16),
            int(start),
            int(size),
        )
        assert (part.starting_chs.cylinder, part.starting_chs.head, part.starting_chs.sector) == (
            int(sc, 16),
            int(sh),
            int(ss),
        )
        assert (part.ending_chs.cylinder, part.ending_chs.head, part.ending_chs.sector) == (
            int(ec, 16),
            int(eh),
            int(es),
        )


def test_mbr_type_names():
    table = table_of(image("mbr.img"))
    names = {p.os_type: p.type_name for p in table.partitions}
    assert names[0x83] == "Linux" and names[0x05] == "Extended" and names[0x8E] == "Linux LVM"


def test_mbr_with_boot_code_is_bios_bootable():
    """The fixture wrote syslinux's mbr.bin into the bootstrap area and sfdisk marked partition 1
    bootable: a BIOS boots it. Without boot code (sfdisk writes none), nothing is claimed."""
    syslinux = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440]
    assert read(image("mbr-boot.img"), 0, 440) == syslinux
    assert read(image("mbr.img"), 0, 440) == bytes(440)
    assert sfdisk("mbr-boot.img")["partitions"][0]["bootable"]
    boot = introspect.inspect(image("mbr-boot.img")).details
    assert boot.partition_table.boot_code
    assert boot.firmware.bios and not boot.firmware.uefi
    assert boot.firmware.evidence == ["MBR partition 1 is active and the MBR holds boot code"]
    plain = introspect.inspect(image("mbr.img")).details
    assert not plain.partition_table.boot_code and plain.firmware is None


def test_mbr_reads_one_sector_per_logical_partition():
    report = introspect.inspect(image("mbr.img"))
    logical = [p for p in sfdisk("mbr.img")["partitions"] if partition_number(p["node"]) > 4]
    assert report.reads == 2 + len(logical)
    assert report.bytes_read <= 66048 + 512 * len(logical)


def ebr_link_offset(disk: Path) -> tuple[int, partitions.PartitionRecord]:
    """The second record of the first EBR (at the extended partition's start): its link."""
    extended = next(p for p in sfdisk("mbr.img")["partitions"] if p["type"] == "5")
    offset = extended["start"] * 512 + partitions.PARTITION_RECORDS_OFFSET + partitions.PartitionRecord.SIZE
    return offset, partitions.PartitionRecord.unpack(read(disk, offset, partitions.PartitionRecord.SIZE))


def test_ebr_chain_loop_is_cut(tmp_path):
    disk = copy("mbr.img", tmp_path)
    offset, link = ebr_link_offset(disk)
    patch(disk, offset, repack(link, starting_lba=0))
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert [p.number for p in report.details.partition_table.partitions] == [1, 2, 3, 4, 5]
    [finding] = [f for f in report.findings if f.code == "mbr.ebr_chain"]
    assert finding.severity == "warn" and "loops back" in finding.message


def test_ebr_chain_to_nowhere(tmp_path):
    disk = copy("mbr.img", tmp_path)
    offset, link = ebr_link_offset(disk)
    patch(disk, offset, repack(link, starting_lba=0xFFFFFFF0))
    report = introspect.inspect(disk)
    assert [p.number for p in report.details.partition_table.partitions] == [1, 2, 3, 4, 5]
    assert has_finding(report, "mbr.ebr_chain", "missing or invalid")


def test_read_budget_stops_the_ebr_walk():
    report = introspect.inspect(image("mbr.img"), budget=Budget(max_reads=3))
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "image.read_budget"
    assert finding.message.startswith("reading the extended boot record would exceed the inspection budget")


def test_fat_boot_sector_is_not_a_partition_table():
    """A FAT boot sector ends in 0x55AA too; file(1) calls it a boot sector with no partitions."""
    assert "partition 1" not in recorded(image("vfat.img"), "file.txt")
    assert table_of(image("vfat.img")) is None


def test_ebr_chain_is_capped(tmp_path):
    """A chain longer than MAX_LOGICAL_PARTITIONS: consecutive one-sector EBRs, each linking on."""
    disk = copy("mbr.img", tmp_path)
    extended = next(p for p in sfdisk("mbr.img")["partitions"] if p["type"] == "5")
    for k in range(partitions.MAX_LOGICAL_PARTITIONS + 8):
        logical = partitions.PartitionRecord(0, bytes(3), 0x83, bytes(3), 1, 1)
        link = partitions.PartitionRecord(0, bytes(3), 0x05, bytes(3), k + 1, 1)
        records = b"".join(map(pack, (logical, link))).ljust(64, b"\0")
        ebr = pack(partitions.LegacyMbr(bytes(440), 0, 0, records, partitions.MBR_SIGNATURE))
        patch(disk, (extended["start"] + k) * 512, ebr)
    report = introspect.inspect(disk)
    logical = [p for p in report.details.partition_table.partitions if p.logical]
    assert len(logical) == partitions.MAX_LOGICAL_PARTITIONS
    assert report.reads <= 2 + partitions.MAX_LOGICAL_PARTITIONS
    assert has_finding(report, "mbr.ebr_chain", f"more than {partitions.MAX_LOGICAL_PARTITIONS} logical")


def test_a_hybrid_mbr_is_a_named_info_finding():
    """`sgdisk -h 1` lists the ESP in the MBR beside the 0xEE record (fixtures/make/partitioned.sh);
    fdisk's MBR view recorded which records BIOS sees. A plain protective MBR gets no finding."""
    group = fixture_group("partitioned")
    fdisk = recorded(group / "gpt-hybrid.raw", "fdisk-dos.txt")
    rows = [line.split() for line in fdisk.splitlines() if line.startswith("gpt-hybrid.raw")]
    report = introspect.inspect(group / "gpt-hybrid.raw")
    assert report.verdict == "ok"
    assert [(f.code, f.severity) for f in report.findings] == [("gpt.hybrid_mbr", "info")]
    mbr = report.details.partition_table.mbr
    assert [(p.number, f"{p.os_type:x}", p.starting_lba, p.size_in_lba) for p in mbr.partitions] == [
        (partition_number(device), kind, int(start), int(sectors)) for device, start, sectors, kind in rows
    ]
    hybrid = [(n, k) for n, k in ((partition_number(r[0]), r[3]) for r in rows) if k != "ee"]
    assert report.findings[0].message.startswith(
        f"the GPT disk has a hybrid MBR: MBR partition(s) {hybrid[0][0]} (type 0x{hybrid[0][1]})"
    )
    assert introspect.inspect(group / "gpt.raw").findings == []
