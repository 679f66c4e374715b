"""ISO 9660, Joliet, El Torito, UDF and hybrid ISOs, checked against isoinfo, xorriso, blkid and
sfdisk (fixtures/make/iso.sh). Damaged ISOs are made here from copies of real fixtures, by
repacking one field with the structure declarations of `introspect.formats.iso`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import uuid
from datetime import datetime
from pathlib import Path

import pytest

import introspect
from introspect.formats import iso
from introspect.formats.partitions import Gpt, Mbr
from introspect.sources import Budget
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded

ISOS = [
    "plain.iso",
    "bios.iso",
    "floppy.iso",
    "biosefi.iso",
    "udf.iso",
    "hybrid-mbr.iso",
    "hybrid-gpt.iso",
    "hybrid-esp.iso",
]
HYBRIDS = ["hybrid-mbr.iso", "hybrid-gpt.iso", "hybrid-esp.iso"]
#: isoinfo -d's labels for the primary volume descriptor's identifiers.
ISOINFO_IDS = {
    "system_id": "System id",
    "volume_id": "Volume id",
    "volume_set_id": "Volume set id",
    "publisher_id": "Publisher id",
    "data_preparer_id": "Data preparer id",
    "application_id": "Application id",
}
ISOINFO_DATES = {
    "creation_date": "Creation Date",
    "modification_date": "Modification Date",
    "expiration_date": "Expiration Date",
    "effective_date": "Effective Date",
}
#: xorriso -report_el_torito's words: platform (El Torito platform ID) and emulation.
XORRISO_PLATFORMS = {"BIOS": 0x00, "PPC": 0x01, "Mac": 0x02, "UEFI": 0xEF}
XORRISO_EMULATIONS = {
    "none": "no_emulation",
    "fd1.2": "floppy_1.2m",
    "fd1.4": "floppy_1.44m",
    "fd2.8": "floppy_2.88m",
    "hd": "hard_disk",
}
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def image(name: str) -> Path:
    return fixture_group("iso") / name


def isoinfo(name: str) -> dict[str, str]:
    """isoinfo -d -debug: 'Label: value' and 'Label is: value' lines."""
    fields = {}
    for line in recorded(image(name), "isoinfo.txt").splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            fields[key.removesuffix(" is").strip()] = value.strip()
    return fields


def blkid(name: str) -> dict[str, str]:
    lines = recorded(image(name), "blkid.txt").splitlines()
    return {k: v.replace("\\ ", " ") for k, _, v in (line.partition("=") for line in lines)}


def xorriso_boot_images(name: str) -> list[tuple[str, ...]]:
    """'El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4          97'."""
    return re.findall(
        r"^El Torito boot img :\s+(\d+)\s+(\S+)\s+([yn])\s+(\S+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)"
        r"\s+(\d+)\s+(\d+)$",
        recorded(image(name), "eltorito.txt"),
        re.MULTILINE,
    )


def sysarea_gpt(name: str) -> dict[int, dict[str, str]]:
    """xorriso -report_system_area's 'GPT <what> : N value' lines, by partition number."""
    parts: dict[int, dict[str, str]] = {}
    for what, n, value in re.findall(
        r"^GPT (partname local|type GUID|start and size|partition [a-zA-Z]+)\s*:\s+(\d+)\s+(.+)$",
        recorded(image(name), "sysarea.txt"),
        re.MULTILINE,
    ):
        parts.setdefault(int(n), {})[what] = value.strip()
    return parts


def sysarea_mbr(name: str) -> list[tuple[int, int, int, int, int]]:
    """'MBR partition      :   1   0x80  0x00            0         2048': N, status, type, start, blocks."""
    rows = re.findall(
        r"^MBR partition\s+:\s+(\d+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\d+)\s+(\d+)$",
        recorded(image(name), "sysarea.txt"),
        re.MULTILINE,
    )
    return [
        (int(n), int(status, 16), int(kind, 16), int(start), int(blocks))
        for n, status, kind, start, blocks in rows
    ]


def xorriso_guid(raw_hex: str) -> str:
    """xorriso prints GUIDs as their on-disk bytes (mixed-endian), in hex."""
    return str(uuid.UUID(bytes_le=bytes.fromhex(raw_hex)))


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copyfile(image(name), target)
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
    return pack(dataclasses.replace(record, **changes))


@pytest.mark.parametrize("name", ISOS)
def test_iso_is_one_format_and_sized_as_qemu_says(name):
    report = introspect.inspect(image(name))
    assert report.format == "iso"
    assert report.verdict == "ok", report.findings
    assert "image.polyglot" not in {f.code for f in report.findings}
    assert report.virtual_size == qemu_info(image(name))["virtual-size"]
    assert report.reads <= 3
    assert report.bytes_read <= 64 * 1024 + 512 + 2048


@pytest.mark.parametrize("name", ISOS)
def test_primary_volume_matches_isoinfo(name):
    expected = isoinfo(name)
    details = introspect.inspect(image(name)).details
    for ours, theirs in ISOINFO_IDS.items():
        assert (getattr(details, ours) or "") == expected[theirs], ours
    assert details.block_size == int(expected["Logical block size"])
    assert details.volume_space_size == int(expected["Volume size"])
    assert details.volume_size == details.volume_space_size * details.block_size
    assert details.descriptors[0] == "primary" and details.descriptors[-1] == "terminator"


@pytest.mark.parametrize("name", ISOS)
def test_dates_match_isoinfo(name):
    """isoinfo prints 'Creation Date:     2026 11 29 16:21:18.00'; all zeros means not specified."""
    expected = isoinfo(name)
    details = introspect.inspect(image(name)).details
    for ours, theirs in ISOINFO_DATES.items():
        value = getattr(details, ours)
        if expected[theirs].startswith("0000"):
            assert value is None, ours
        else:
            assert datetime.fromisoformat(value).strftime("%Y %m %d %H:%M:%S.%f")[:-4] == expected[theirs]


@pytest.mark.parametrize("name", ISOS)
def test_joliet_matches_isoinfo_and_blkid(name):
    """isoinfo: 'Joliet with UCS level 3 found'; blkid's LABEL is the Joliet volume id when it
    reports VERSION=Joliet Extension."""
    level = re.search(r"Joliet with UCS level (\d) found", recorded(image(name), "isoinfo.txt"))
    details = introspect.inspect(image(name)).details
    assert details.joliet_level == (int(level.group(1)) if level else None)
    tags = blkid(name)
    if tags.get("VERSION") == "Joliet Extension":
        assert details.joliet_volume_id == tags["LABEL"]


@pytest.mark.parametrize("name", ISOS)
def test_el_torito_matches_xorriso(name):
    details = introspect.inspect(image(name)).details
    report = recorded(image(name), "eltorito.txt")
    catalog = re.search(r"^El Torito catalog\s+:\s+(\d+)", report, re.MULTILINE)
    if catalog is None:
        assert details.el_torito is None
        assert "El Torito" not in recorded(image(name), "isoinfo.txt")
        return
    assert details.el_torito.boot_catalog_sector == int(catalog.group(1))
    assert f"boot catalog is in sector {catalog.group(1)}" in recorded(image(name), "isoinfo.txt")
    assert details.el_torito.checksum_valid
    assert [
        (e.platform_id, e.bootable, e.emulation, e.load_segment, e.system_type, e.sector_count, e.load_rba)
        for e in details.el_torito.entries
    ] == [
        (
            XORRISO_PLATFORMS[platform],
            bootable == "y",
            XORRISO_EMULATIONS[emulation],
            int(segment, 16),
            int(system, 16),
            int(count),
            int(lba),
        )
        for _, platform, bootable, emulation, segment, system, count, lba in xorriso_boot_images(name)
    ]


@pytest.mark.parametrize("name", ISOS)
def test_firmware_from_el_torito_and_partitions(name):
    """xorriso's BIOS entries mean BIOS, its UEFI entries and sfdisk's EFI System partitions UEFI;
    an isohybrid MBR (xorriso: 'MBR isohybrid') with sfdisk's bootable partition also means BIOS."""
    boot = [(platform, bootable) for _, platform, bootable, *_ in xorriso_boot_images(name)]
    bios = sum(1 for platform, bootable in boot if platform == "BIOS" and bootable == "y")
    uefi = sum(1 for platform, bootable in boot if platform == "UEFI" and bootable == "y")
    sfdisk_path = image(name).with_name(name + ".sfdisk.json")
    table = json.loads(sfdisk_path.read_text())["partitiontable"] if sfdisk_path.exists() else None
    if table and table["label"] == "gpt":
        uefi += sum(1 for p in table["partitions"] if p["type"] == ESP)
    elif (
        table
        and "MBR isohybrid" in recorded(image(name), "sysarea.txt")
        and " GPT" not in recorded(image(name), "sysarea.txt")
    ):
        bios += sum(1 for p in table["partitions"] if p.get("bootable"))
    firmware = introspect.inspect(image(name)).details.firmware
    if not bios and not uefi:
        assert firmware is None
        return
    assert (firmware.bios, firmware.uefi) == (bios > 0, uefi > 0)
    assert len(firmware.evidence) == bios + uefi


def test_firmware_evidence_names_the_entries():
    firmware = introspect.inspect(image("biosefi.iso")).details.firmware
    rows = xorriso_boot_images("biosefi.iso")
    assert firmware.evidence == [
        f"El Torito entry 1 (platform 0x00, load RBA {rows[0][7]}) is a bootable x86 BIOS image",
        f"El Torito entry 2 (platform 0xef, load RBA {rows[1][7]}) is a bootable EFI image",
    ]
    assert firmware.hw_firmware_type is None  # both: say nothing
    assert introspect.inspect(image("bios.iso")).details.firmware.hw_firmware_type == "bios"


@pytest.mark.parametrize("name", ISOS)
def test_udf_recognition_sequence_matches_blkid(name):
    """blkid: TYPE=udf VERSION=1.02 for genisoimage -udf. UDF 1.02-2.00 record NSR02 (ECMA-167
    2nd edition), 2.01 and later NSR03."""
    tags = blkid(name)
    details = introspect.inspect(image(name)).details
    if tags["TYPE"] != "udf":
        assert details.udf == []
        return
    nsr = "NSR02" if float(tags["VERSION"]) < 2.01 else "NSR03"
    assert details.udf == ["BEA01", nsr, "TEA01"]


@pytest.mark.parametrize("name", ["plain.iso", "bios.iso", "floppy.iso", "biosefi.iso", "udf.iso"])
def test_plain_isos_have_no_partition_table(name):
    """sfdisk finds no table in these (the build records none); the system area is zeros."""
    assert recorded(image(name), "sysarea.txt") == ""
    assert introspect.inspect(image(name)).details.partition_table is None


@pytest.mark.parametrize("name", HYBRIDS)
def test_hybrid_partition_table_matches_xorriso_and_sfdisk(name):
    report = introspect.inspect(image(name))
    table = report.details.partition_table
    gpt_rows = sysarea_gpt(name)
    assert isinstance(table, Gpt) == bool(gpt_rows)
    mbr = table.mbr if isinstance(table, Gpt) else table
    assert isinstance(mbr, Mbr)
    mbr_rows = [
        (p.number, p.boot_indicator, p.os_type, p.starting_lba, p.size_in_lba) for p in mbr.partitions
    ]
    assert mbr_rows == sysarea_mbr(name)
    if isinstance(table, Gpt):
        ours = [
            (
                p.number,
                p.starting_lba,
                p.ending_lba - p.starting_lba + 1,
                p.partition_type_guid,
                p.partition_name,
            )
            for p in table.partitions
        ]
        assert ours == [
            (
                n,
                *map(int, row["start and size"].split()),
                xorriso_guid(row["type GUID"]),
                row["partname local"],
            )
            for n, row in sorted(gpt_rows.items())
        ]
    expected = json.loads(recorded(image(name), "sfdisk.json"))["partitiontable"]
    seen = table if expected["label"] == "gpt" else mbr
    assert len(seen.partitions) == len(expected["partitions"])
    for ours, theirs in zip(seen.partitions, expected["partitions"], strict=True):
        assert ours.starting_lba == theirs["start"]
        if expected["label"] == "gpt":
            assert ours.partition_type_guid == theirs["type"].lower()
            assert ours.partition_name == theirs["name"]
        else:
            assert (ours.size_in_lba, ours.os_type, ours.bootable) == (
                theirs["size"],
                int(theirs["type"], 16),
                theirs.get("bootable", False),
            )


def test_gpt_basdat_partition_outside_usable_is_info():
    """xorriso -isohybrid-gpt-basdat puts partition 1 at LBA 0, before the first usable LBA (sgdisk
    calls the table invalid): reported, not held against the ISO."""
    gpt = sysarea_gpt("hybrid-gpt.iso")
    sysarea = recorded(image("hybrid-gpt.iso"), "sysarea.txt")
    first_usable = int(re.search(r"^GPT lba range\s+:\s+(\d+)", sysarea, re.MULTILINE).group(1))
    assert int(gpt[1]["start and size"].split()[0]) < first_usable
    report = introspect.inspect(image("hybrid-gpt.iso"))
    assert report.verdict == "ok"
    [finding] = report.findings
    assert (finding.code, finding.severity) == ("gpt.partition_outside_usable", "info")
    assert finding.message.startswith(f"GPT partition(s) 1 lie outside the usable LBAs {first_usable}..")


# --- Damaged ISOs ------------------------------------------------------------------------------


def test_truncated_volume_is_a_warning(tmp_path):
    """Cut the ISO below the volume space size isoinfo reports, past the boot catalog."""
    disk = copy("bios.iso", tmp_path)
    blocks = int(isoinfo("bios.iso")["Volume size"])
    with disk.open("r+b") as file:
        file.truncate((blocks - 8) * 2048)
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    [finding] = report.findings
    assert (finding.code, finding.severity) == ("iso.truncated_volume", "warn")
    assert finding.message == (
        f"the primary volume descriptor says the volume is {blocks * 2048} bytes but the file has "
        f"{(blocks - 8) * 2048}: the ISO was probably cut short; download it again and check its checksum"
    )


def test_cut_inside_first_descriptor_is_an_error(tmp_path):
    disk = copy("plain.iso", tmp_path)
    with disk.open("r+b") as file:
        file.truncate(33000)
    report = introspect.inspect(disk)
    assert report.format == "iso" and report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "image.truncated"
    assert finding.message == (
        "the first volume descriptor needs bytes 32768..34816 but the file ends at 33000: "
        "the image was cut short; upload it again (at offset 32768)"
    )


def test_no_primary_volume_descriptor_is_an_error(tmp_path):
    """Turn the primary volume descriptor (ECMA-119 §8.1 type 1) into a partition descriptor."""
    disk = copy("plain.iso", tmp_path)
    offset = iso.VOLUME_DESCRIPTOR_SET_SECTOR * iso.SECTOR_SIZE
    descriptor = iso.VolumeDescriptor.unpack(read(disk, offset, iso.VolumeDescriptor.SIZE))
    assert descriptor.volume_descriptor_type == iso.TYPE_PRIMARY
    patch(disk, offset, repack(descriptor, volume_descriptor_type=iso.TYPE_PARTITION))
    report = introspect.inspect(disk)
    assert report.verdict == "error"
    [finding] = report.findings
    assert (finding.code, finding.severity) == ("iso.no_primary_volume", "reject")
    assert finding.message == (
        "volume descriptor set is ['partition', 'supplementary', 'terminator'], expected a primary volume "
        "descriptor (type 1): no system can mount this ISO; rebuild it with xorriso or genisoimage "
        "(at offset 32768)"
    )


def catalog_sector(name: str) -> int:
    """isoinfo: 'El Torito VD version 1 found, boot catalog is in sector 32'."""
    return int(re.search(r"boot catalog is in sector (\d+)", recorded(image(name), "isoinfo.txt")).group(1))


def validation_entry(disk: Path, name: str) -> tuple[int, iso.ValidationEntry]:
    offset = catalog_sector(name) * iso.SECTOR_SIZE
    return offset, iso.ValidationEntry.unpack(read(disk, offset, iso.ValidationEntry.SIZE))


def test_bad_catalog_checksum_is_a_warning(tmp_path):
    disk = copy("biosefi.iso", tmp_path)
    offset, entry = validation_entry(disk, "biosefi.iso")
    patch(disk, offset, repack(entry, id_string=b"tampered".ljust(24, b"\0")))
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert not report.details.el_torito.checksum_valid
    assert len(report.details.el_torito.entries) == len(xorriso_boot_images("biosefi.iso"))
    [finding] = report.findings
    assert (finding.code, finding.severity) == ("iso.boot_catalog_checksum", "warn")
    assert "checksum is wrong" in finding.message


def test_catalog_without_key_bytes_lists_no_entry(tmp_path):
    disk = copy("bios.iso", tmp_path)
    offset, entry = validation_entry(disk, "bios.iso")
    patch(disk, offset, repack(entry, key_55=0))
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert report.details.el_torito.entries == [] and report.details.firmware is None
    assert [f.code for f in report.findings] == ["iso.boot_catalog_invalid"]


def test_endless_descriptor_set_is_capped(tmp_path):
    """Copy the Joliet supplementary descriptor over every sector after it (a set with no
    terminator): the walk stops after MAX_VOLUME_DESCRIPTORS sectors and one extra read."""
    disk = copy("plain.iso", tmp_path)
    descriptors = introspect.inspect(image("plain.iso")).details.descriptors
    svd_sector = iso.VOLUME_DESCRIPTOR_SET_SECTOR + descriptors.index("supplementary")
    svd = read(disk, svd_sector * iso.SECTOR_SIZE, iso.SECTOR_SIZE)
    for sector in range(svd_sector, iso.VOLUME_DESCRIPTOR_SET_SECTOR + iso.MAX_VOLUME_DESCRIPTORS + 4):
        patch(disk, sector * iso.SECTOR_SIZE, svd)
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert len(report.details.descriptors) == iso.MAX_VOLUME_DESCRIPTORS
    # Its filesystem, read by the guest pass, stops at the same endless set (warn, not a rejection).
    assert [f.code for f in report.findings] == ["iso.descriptor_cap", "guest.unreadable"]
    assert report.reads == 3  # head, tail, the rest of the capped sequence


def test_read_budget_is_enforced():
    report = introspect.inspect(image("bios.iso"), budget=Budget(max_reads=2))
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "image.read_budget"
    assert finding.message == (
        "reading the El Torito boot catalog would exceed the inspection budget (at most 2 reads); "
        "a well-formed image never needs this much, so the file is treated as hostile"
    )


def test_iso_declared_as_raw_is_not_a_mismatch():
    report = introspect.inspect(image("plain.iso"), expect="raw")
    assert report.verdict == "ok" and report.findings == []


def test_catalog_past_the_end_is_a_warning(tmp_path):
    """Cut the ISO just before the boot catalog isoinfo reports: the ISO still parses; the catalog
    finding is a warning, and the volume cut short (far more than its padding) a rejection."""
    disk = copy("bios.iso", tmp_path)
    sector = catalog_sector("bios.iso")
    with disk.open("r+b") as file:
        file.truncate(sector * iso.SECTOR_SIZE)
    report = introspect.inspect(disk)
    assert report.verdict == "rejected"
    assert report.details.el_torito.entries == []
    codes = {f.code: f.message for f in report.findings}
    assert set(codes) == {"image.truncated", "iso.boot_catalog_invalid"}
    assert codes["iso.boot_catalog_invalid"].startswith(
        f"the El Torito boot catalog at sector {sector} lies past the end of the file"
    )


def rewrite_primary(disk: Path, **changes) -> None:
    offset = iso.VOLUME_DESCRIPTOR_SET_SECTOR * iso.SECTOR_SIZE
    pvd = iso.VolumeDescriptorBody.unpack(read(disk, offset, iso.VolumeDescriptorBody.SIZE))
    patch(disk, offset, repack(pvd, **changes))


def test_byte_orders_that_disagree_are_a_warning(tmp_path):
    """ECMA-119 §7.3.3: the volume space size is stored little- then big-endian; make them differ."""
    disk = copy("plain.iso", tmp_path)
    blocks = int(isoinfo("plain.iso")["Volume size"])
    rewrite_primary(disk, volume_space_size_be=(blocks + 1).to_bytes(4, "big"))
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert report.details.volume_space_size == blocks  # the little-endian half, as Linux reads it
    [finding] = report.findings
    assert (finding.code, finding.severity) == ("iso.both_byte_orders", "warn")
    assert f"volume space size is {blocks} little-endian but {blocks + 1} big-endian" in finding.message


def test_logical_block_size_out_of_spec_is_a_warning(tmp_path):
    disk = copy("plain.iso", tmp_path)
    rewrite_primary(disk, logical_block_size=4096, logical_block_size_be=(4096).to_bytes(2, "big"))
    report = introspect.inspect(disk)
    assert report.verdict == "ok"
    assert report.details.block_size == 4096 and report.details.volume_size is None
    # A block size ECMA-119 does not allow is one the guest pass does not read a filesystem with.
    assert [f.code for f in report.findings] == ["iso.logical_block_size", "guest.unreadable"]


@pytest.mark.parametrize("name", ["bios.iso", "plain.iso", "hybrid-gpt.iso", "floppy.iso"])
@pytest.mark.parametrize("keep_blocks", [40, "half-of-floppy"])
def test_an_iso_cut_by_more_than_its_padding_is_truncated(tmp_path, name, keep_blocks):
    """isoinfo's volume size, and the file cut past its descriptors but more than the 150 blocks of
    padding genisoimage adds short of it: files are gone, so the ISO is rejected."""
    disk = copy(name, tmp_path)
    blocks = int(isoinfo(name)["Volume size"])
    keep = (40 if keep_blocks == 40 or blocks < 400 else blocks // 2) * 2048
    assert (blocks * 2048) - keep > iso.PADDING_BLOCKS * 2048
    with disk.open("r+b") as file:
        file.truncate(keep)
    report = introspect.inspect(disk)
    assert report.format == "iso"
    assert report.verdict == "rejected"
    truncated = [f for f in report.findings if f.code == "image.truncated"]
    assert truncated and truncated[0].message.startswith(
        f"the primary volume descriptor says the volume is {blocks * 2048} bytes but the file has {keep}: "
        "more is missing than the 150 blocks of padding"
    )
