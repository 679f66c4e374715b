"""VHDX: every qemu-img-built fixture against what `qemu-img info` recorded, and corrupted copies
made by rewriting fields through the structures declared in the parser (offsets come from there)."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path

import google_crc32c
import pytest

import introspect
from introspect.formats import vhdx
from introspect.model import Verdict
from introspect.structure import pack, unpack_array
from tests.conftest import fixture_group
from tests.tools import put, qemu_info, rewrite

GROUP = fixture_group("vhd")
IMAGES = sorted(GROUP.glob("*.vhdx"))
IDS = [p.name for p in IMAGES]
ZERO_GUID = str(uuid.UUID(int=0))


def codes(report: introspect.Report) -> list[str]:
    return [f.code for f in report.findings]


def message(report: introspect.Report, code: str) -> str:
    return next(f.message for f in report.findings if f.code == code)


class Image:
    """A writable copy of a fixture, edited through the parser's own structure declarations."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.path = tmp_path / name
        shutil.copyfile(GROUP / name, self.path)
        self.data = bytearray(self.path.read_bytes())

    def save(self) -> Path:
        self.path.write_bytes(bytes(self.data))
        return self.path

    def fix_crc(self, offset: int, size: int, checksum_offset: int) -> None:
        self.data[offset + checksum_offset : offset + checksum_offset + 4] = bytes(4)
        crc = google_crc32c.value(bytes(self.data[offset : offset + size]))
        self.data[offset + checksum_offset : offset + checksum_offset + 4] = crc.to_bytes(4, "little")

    def flip(self, offset: int) -> None:
        self.data[offset] ^= 0xFF

    def header(self, index: int, **fields) -> None:
        at = vhdx.HEADER_OFFSETS[index]
        rewrite(self.data, vhdx.VhdxHeaderRecord, at, **fields)
        self.fix_crc(at, vhdx.HEADER_SIZE, vhdx.HEADER_CHECKSUM_OFFSET)

    def region_table(self) -> tuple[vhdx.RegionTableHeader, list[vhdx.RegionTableEntry]]:
        at = vhdx.REGION_TABLE_1_OFFSET
        table = vhdx.RegionTableHeader.unpack(self.data, at)
        return table, unpack_array(vhdx.RegionTableEntry, self.data, table.entry_count, at + table.SIZE)

    def write_region_table(self, table: vhdx.RegionTableHeader, entries: list[vhdx.RegionTableEntry]) -> None:
        at = vhdx.REGION_TABLE_1_OFFSET
        put(self.data, table, at)
        for i, entry in enumerate(entries):
            put(self.data, entry, at + table.SIZE + i * entry.SIZE)
        self.fix_crc(at, vhdx.REGION_TABLE_SIZE, vhdx.REGION_TABLE_CHECKSUM_OFFSET)

    @property
    def metadata_offset(self) -> int:
        _, entries = self.region_table()
        guid = uuid.UUID(vhdx.METADATA_REGION_GUID).bytes_le
        return next(e.file_offset for e in entries if e.guid == guid)

    def metadata(self) -> tuple[vhdx.MetadataTableHeader, list[vhdx.MetadataTableEntry]]:
        at = self.metadata_offset
        table = vhdx.MetadataTableHeader.unpack(self.data, at)
        return table, unpack_array(vhdx.MetadataTableEntry, self.data, table.entry_count, at + table.SIZE)

    def add_metadata_item(self, item_id: str, payload: bytes, flags: int) -> None:
        """Append a table entry and put its payload after the last item (the table has no CRC)."""
        at = self.metadata_offset
        table, entries = self.metadata()
        free = max(e.offset + e.length for e in entries)
        entry = vhdx.MetadataTableEntry(uuid.UUID(item_id).bytes_le, free, len(payload), flags)
        put(self.data, entry, at + table.SIZE + len(entries) * entry.SIZE)
        rewrite(self.data, vhdx.MetadataTableHeader, at, entry_count=table.entry_count + 1)
        self.data[at + free : at + free + len(payload)] = payload

    def file_parameters(self, flags: int) -> None:
        _, entries = self.metadata()
        guid = uuid.UUID(vhdx.FILE_PARAMETERS_GUID).bytes_le
        item = next(e for e in entries if e.item_id == guid)
        at = self.metadata_offset + item.offset
        old = vhdx.FileParameters.unpack(self.data, at).flags
        rewrite(self.data, vhdx.FileParameters, at, flags=old | flags)


def parent_locator(pairs: dict[str, str]) -> bytes:
    """A parent locator item ([MS-VHDX] 2.6.2.6) holding `pairs`, strings in UTF-16LE."""
    header = vhdx.ParentLocatorHeader(uuid.UUID(vhdx.VHDX_PARENT_LOCATOR_TYPE).bytes_le, len(pairs))
    strings = bytearray()
    base = header.SIZE + len(pairs) * vhdx.ParentLocatorEntry.SIZE
    entries = bytearray()
    for key, value in pairs.items():
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        entries += pack(
            vhdx.ParentLocatorEntry(base + len(strings), base + len(strings) + len(k), len(k), len(v))
        )
        strings += k + v
    return pack(header) + bytes(entries) + bytes(strings)


# --- what qemu-img says about the fixtures -----------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_what_qemu_img_reports(image):
    info = qemu_info(image)
    report = introspect.inspect(image)
    assert report.format == "vhdx"
    assert report.verdict == Verdict.OK, report.findings
    assert report.findings == []
    assert report.virtual_size == info["virtual-size"] == report.details.virtual_disk_size
    assert report.details.block_size == info["cluster-size"]


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_structures_are_valid(image):
    d = introspect.inspect(image).details
    assert d.version == 1
    assert d.creator.startswith("QEMU v")
    assert all(h.valid and h.checksum_valid and h.signature == "head" for h in d.headers)
    assert [h.offset for h in d.headers] == [64 * 1024, 128 * 1024]
    sequences = [h.sequence_number for h in d.headers]
    assert d.current_header == sequences.index(max(sequences))
    assert all(t.valid and t.checksum_valid and t.signature == "regi" for t in d.region_tables)
    assert sorted(r.name for r in d.regions) == ["bat", "metadata"]
    assert d.metadata_entry_count == len(d.metadata_items) == 5
    assert {i.name for i in d.metadata_items} == set(vhdx.KNOWN_METADATA.values()) - {"parent_locator"}
    assert all(i.is_required for i in d.metadata_items)
    assert d.logical_sector_size == 512 and d.physical_sector_size in vhdx.SECTOR_SIZES
    assert d.uuid == d.virtual_disk_id != ZERO_GUID
    assert not d.has_parent and d.parent_locator is None and d.backing_file is None
    assert all(h.log_guid == ZERO_GUID for h in d.headers)
    # subformat=fixed sets LeaveBlockAllocated; dynamic images do not
    assert d.leave_blocks_allocated == image.name.startswith("fixed")


def test_log_size_option_is_the_log_length():
    d = introspect.inspect(GROUP / "log-2M-129M.vhdx").details
    assert d.headers[d.current_header].log_length == 2 * 1024 * 1024


def test_reads_are_bounded_and_independent_of_the_virtual_size():
    small, big = (introspect.inspect(GROUP / n) for n in ("dynamic-129M+3.vhdx", "dynamic-1T.vhdx"))
    assert big.virtual_size > 1000 * small.virtual_size
    # ...and one read of the BAT, whose entries say which blocks the file must hold (at most
    # MAX_BAT_READ: the 1 TiB disk's 32 Ki entries take 256 KiB).
    assert small.reads == big.reads <= 5
    assert (
        small.bytes_read
        <= big.bytes_read
        <= (64 * 1024 + 512 + vhdx.HEADERS_READ_LENGTH + 128 * 1024 + vhdx.MAX_BAT_READ)
    )


@pytest.mark.parametrize("name", ["gpt.vhdx", "mbr.vhdx"])
@pytest.mark.parametrize("keep", ["half", "-512", "-1MiB"])
def test_a_cut_vhdx_is_truncated_where_its_bat_places_blocks(tmp_path, name, keep):
    """qemu-img convert of partitioned disks (fixtures/make/partitioned.sh): blocks hold the
    partition tables at both ends of the disk; cut the file, and the BAT places one past its end."""
    data = (fixture_group("partitioned") / name).read_bytes()
    size = {"half": len(data) // 2, "-512": len(data) - 512, "-1MiB": len(data) - (1 << 20)}[keep]
    path = tmp_path / "cut.vhdx"
    path.write_bytes(data[:size])
    report = introspect.inspect(path)
    assert report.verdict == Verdict.REJECTED
    assert [f.code for f in report.findings] == ["image.truncated"]
    assert report.findings[0].message.startswith("the VHDX block allocation table places a block at bytes ")
    assert f"but the file ends at {size}" in report.findings[0].message


# --- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("corrupt", [0, 1])
def test_one_corrupt_header_picks_the_other_with_a_warning(tmp_path, corrupt):
    image = Image("dynamic-1G+3M.vhdx", tmp_path)
    image.flip(vhdx.HEADER_OFFSETS[corrupt] + vhdx.HEADER_CHECKSUM_OFFSET)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.OK
    assert codes(report) == ["vhdx.header_checksum"]
    assert message(report, "vhdx.header_checksum").startswith(
        f"the VHDX header at offset {vhdx.HEADER_OFFSETS[corrupt]} is corrupt (bad signature, version or "
        "CRC-32C) and the other one is used"
    )
    assert report.details.current_header == 1 - corrupt
    assert not report.details.headers[corrupt].checksum_valid
    assert report.virtual_size == qemu_info(GROUP / "dynamic-1G+3M.vhdx")["virtual-size"]


def test_both_headers_corrupt_is_an_error(tmp_path):
    image = Image("dynamic-1G+3M.vhdx", tmp_path)
    for offset in vhdx.HEADER_OFFSETS:
        image.flip(offset + vhdx.HEADER_CHECKSUM_OFFSET)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.ERROR
    assert report.details is None
    assert codes(report) == ["vhdx.invalid"]
    assert message(report, "vhdx.invalid") == (
        "headers is 'both corrupt', expected at least one header with signature 'head', version 1 and a "
        "valid CRC-32C: no valid VHDX header was found; the image is corrupt, re-export it from Hyper-V "
        "(at offset 65536)"
    )


def test_identical_headers_are_accepted_like_disk2vhd_writes_them(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    first, second = vhdx.HEADER_OFFSETS
    image.data[first : first + vhdx.HEADER_SIZE] = image.data[second : second + vhdx.HEADER_SIZE]
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.OK and report.findings == []
    assert report.details.current_header == 0


def test_equal_sequence_numbers_in_different_headers_are_an_error(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    current = vhdx.VhdxHeaderRecord.unpack(image.data, vhdx.HEADER_2_OFFSET)
    image.header(0, sequence_number=current.sequence_number, data_write_guid=bytes(range(16)))
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.ERROR
    assert message(report, "vhdx.invalid").startswith(
        f"header sequence numbers is {current.sequence_number}, expected different in the two headers"
    )


def test_active_log_warns(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    for index in (0, 1):
        image.header(index, log_guid=uuid.UUID("0123456789abcdef0123456789abcdef").bytes_le)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.OK
    # The log must be replayed before the disk is read: the guest pass does not read it either.
    assert codes(report) == ["vhdx.log_pending", "guest.no_view"]
    assert message(report, "vhdx.log_pending") == (
        "the VHDX log is active, so the image was not closed cleanly; open it once in Hyper-V or run "
        "`qemu-img check -r all` on it, then upload it again"
    )
    assert report.details.headers[0].log_guid == "01234567-89ab-cdef-0123-456789abcdef"


# --- region table --------------------------------------------------------------------------------


def test_corrupt_second_region_table_warns(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    image.flip(vhdx.REGION_TABLE_2_OFFSET + vhdx.REGION_TABLE_CHECKSUM_OFFSET)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.OK
    assert codes(report) == ["vhdx.region_table_copy"]
    assert not report.details.region_tables[1].checksum_valid


def test_corrupt_first_region_table_is_an_error(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    image.flip(vhdx.REGION_TABLE_1_OFFSET + vhdx.REGION_TABLE_CHECKSUM_OFFSET)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.ERROR
    assert message(report, "vhdx.invalid") == (
        "region table is \"signature 'regi', 2 entries, wrong CRC-32C\", expected signature 'regi', at most "
        "2047 entries and a valid CRC-32C: qemu reads only this copy and refuses the image; open and close "
        "it once in Hyper-V to repair it from the second copy, then upload it again (at offset 196608)"
    )


def test_region_entry_count_beyond_the_spec_is_an_error(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    table, entries = image.region_table()
    image.write_region_table(dataclasses.replace(table, entry_count=0xFFFFFFFF), entries)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.ERROR
    assert "4294967295 entries, valid CRC-32C" in message(report, "vhdx.invalid")


def test_unknown_required_region_is_rejected(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    table, entries = image.region_table()
    guid = uuid.UUID("11111111-2222-3333-4444-555555555555")
    end = max(e.file_offset + e.length for e in entries)
    extra = vhdx.RegionTableEntry(guid.bytes_le, end, 1024 * 1024, vhdx.REGION_ENTRY_REQUIRED)
    image.write_region_table(dataclasses.replace(table, entry_count=3), [*entries, extra])
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["vhdx.unknown_required_region"]
    assert str(guid) in message(report, "vhdx.unknown_required_region")
    assert report.details.regions[-1].required and report.details.regions[-1].name is None


def test_overlapping_regions_are_an_error(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    table, entries = image.region_table()
    bat = next(e for e in entries if e.guid == uuid.UUID(vhdx.BAT_GUID).bytes_le)
    image.write_region_table(table, [dataclasses.replace(e, file_offset=bat.file_offset) for e in entries])
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.ERROR
    assert "regions overlap; the image is corrupt" in message(report, "vhdx.invalid")


# --- metadata --------------------------------------------------------------------------------------


def test_unknown_required_metadata_item_is_rejected(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    item = "99999999-8888-7777-6666-555555555555"
    image.add_metadata_item(item, bytes(8), vhdx.IS_REQUIRED | vhdx.IS_VIRTUAL_DISK)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["vhdx.unknown_required_metadata"]
    assert message(report, "vhdx.unknown_required_metadata").startswith(
        f"the VHDX has a required metadata item {item} that no reader but its maker understands"
    )


def test_differencing_disk_is_rejected_and_its_parent_recorded(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    pairs = {
        "parent_linkage": "{83ed1fcd-7ec2-4a2b-a8e3-5e58c7f6c1b9}",
        "relative_path": "..\\base\\parent.vhdx",
        "absolute_win32_path": "\\\\?\\C:\\VMs\\base\\parent.vhdx",
    }
    image.add_metadata_item(vhdx.PARENT_LOCATOR_GUID, parent_locator(pairs), vhdx.IS_REQUIRED)
    image.file_parameters(vhdx.HAS_PARENT)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["vhdx.differencing"]
    assert message(report, "vhdx.differencing").startswith(
        "the VHDX is a differencing disk whose parent is '..\\\\base\\\\parent.vhdx', which is not uploaded"
    )
    d = report.details
    assert d.has_parent and d.backing_file == pairs["relative_path"]
    assert d.parent_locator.locator_type == vhdx.VHDX_PARENT_LOCATOR_TYPE
    assert {e.key: e.value for e in d.parent_locator.entries} == pairs


def test_has_parent_without_a_locator_is_an_error(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    image.file_parameters(vhdx.HAS_PARENT)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.ERROR
    assert message(report, "vhdx.invalid").startswith(
        "parent locator is 'missing', expected a parent locator when HasParent is set"
    )


def test_metadata_entry_count_beyond_the_spec_is_an_error(tmp_path):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    rewrite(image.data, vhdx.MetadataTableHeader, image.metadata_offset, entry_count=0xFFFF)
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.ERROR
    assert message(report, "vhdx.invalid").startswith(
        "metadata table entry count is 65535, expected at most 2047"
    )


@pytest.mark.parametrize(
    ("block_size", "ok"), [(1024 * 1024, True), (3 * 1024 * 1024, False), (512 << 20, False)]
)
def test_block_size_must_be_a_power_of_two_in_range(tmp_path, block_size, ok):
    image = Image("dynamic-129M+3.vhdx", tmp_path)
    _, entries = image.metadata()
    item = next(e for e in entries if e.item_id == uuid.UUID(vhdx.FILE_PARAMETERS_GUID).bytes_le)
    at = image.metadata_offset + item.offset
    rewrite(image.data, vhdx.FileParameters, at, block_size=block_size)
    report = introspect.inspect(image.save())
    if ok:
        assert report.verdict == Verdict.OK and report.details.block_size == block_size
    else:
        assert report.verdict == Verdict.ERROR
        assert message(report, "vhdx.invalid").startswith(f"file parameters block size is {block_size}")


def test_truncated_header_section(tmp_path):
    image = Image("dynamic-1T.vhdx", tmp_path)
    image.data = image.data[: 200 * 1024]
    report = introspect.inspect(image.save())
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["image.truncated"]
    assert message(report, "image.truncated") == (
        "the header section needs bytes 65536..327680 but the file ends at 204800: the image was cut short; "
        "upload it again (at offset 65536)"
    )
