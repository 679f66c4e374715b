"""The guest view of a VHDX, against the raw disk qemu-img converted each image from
(fixtures/make/views2.sh); hostile variants derived from those images in the tests."""

from __future__ import annotations

import struct
import uuid

import google_crc32c
import pytest

import introspect
from introspect.formats import vhdx
from introspect.formats.vhdx import RegionTableEntry, RegionTableHeader, VhdxHeaderRecord
from introspect.safety import GUEST_NO_VIEW, TRUNCATED
from introspect.sources import BytesSource
from tests.formats.views2_disk import (
    MIB,
    SECTOR,
    assert_reads_like_source,
    group,
    layout,
    open_view,
    source,
    survives_mutations,
)
from tests.tools import qemu_info, recorded, rewrite

IMAGES = ["disk.vhdx", "disk-fixed.vhdx", "disk-1m.vhdx"]


@pytest.mark.parametrize("name", IMAGES)
def test_the_view_reads_the_disk_qemu_img_converted(name):
    path = group() / name
    view, reader = open_view(path)
    assert view.size == qemu_info(path)["virtual-size"] == layout().size
    assert view.incomplete is None
    assert_reads_like_source(view)
    # A page of the BAT, then the blocks' bytes: qemu-img lays out blocks in the disk's order.
    assert reader.reads <= 16
    assert reader.bytes_read <= 2 * MIB


def test_blocks_in_the_files_order_are_one_read():
    """A fixed VHDX holds every block, one after the other; disk-1m's 1 MiB blocks, which qemu-img
    wrote in the disk's order, make the random file (across the 15 MiB boundary) one read too."""
    for name in ("disk-fixed.vhdx", "disk-1m.vhdx"):
        view, reader = open_view(group() / name)
        start, end = layout().random_file
        view.read(0, SECTOR)
        before = reader.reads
        assert view.read(start, end - start) == source()[start:end]
        assert reader.reads - before == 1, name


def test_a_block_not_present_reads_as_zeros_without_reading_it():
    view, reader = open_view(group() / "disk-1m.vhdx")
    start = 40 * MIB  # past the filesystem's data: qemu-img left these blocks NOT_PRESENT
    assert view.read(start, 2 * MIB) == bytes(2 * MIB) == source()[start : start + 2 * MIB]
    assert reader.reads == 1


#: What qemu-io wrote into the differencing disk before it was made one (views2.sh): 125 sectors
#: of 0xcd from 15 MiB + 3 sectors. fixtures/views2_vhdx_diff.py checked, with libvhdi, that the
#: disk over its parent reads the parent's bytes with these; without the parent, the rest is zeros.
WRITTEN = (15 * MIB + 3 * SECTOR, 125 * SECTOR)


def test_a_differencing_disk_reads_its_sectors_through_the_bitmap_and_zeros_for_its_parents():
    path = group() / "diff.vhdx"
    assert "Disk type\t\t: Differential" in recorded(path, "vhdiinfo.txt")
    view, reader = open_view(path)
    assert view.incomplete is not None
    assert "'disk-1m.vhdx'" in view.incomplete
    offset, length = WRITTEN
    block = offset // MIB * MIB
    expected = bytearray(MIB)
    expected[offset - block : offset - block + length] = b"\xcd" * length
    assert view.read(block, MIB) == expected
    assert view.read(offset - SECTOR, 2 * SECTOR) == bytes(SECTOR) + b"\xcd" * SECTOR
    assert view.read(0, 4 * MIB) == bytes(4 * MIB)  # blocks not present: the parent's
    # Two pages of the BAT (the block's entry, its chunk's bitmap entry 4096 entries on), a page of
    # the sector bitmap, and the sectors written, once for each read that asked for them.
    assert reader.reads == 5


# --- Hostile images, derived from the real ones ----------------------------------------------------


def bat_offset(data: bytes) -> int:
    """Where the BAT starts, by the first region table (its entry with the BAT's GUID)."""
    header = RegionTableHeader.unpack(data, vhdx.REGION_TABLE_1_OFFSET)
    for index in range(header.entry_count):
        entry = RegionTableEntry.unpack(
            data, vhdx.REGION_TABLE_1_OFFSET + RegionTableHeader.SIZE + index * RegionTableEntry.SIZE
        )
        if entry.guid == uuid.UUID(vhdx.BAT_GUID).bytes_le:
            return entry.file_offset
    raise AssertionError("no BAT region")


def with_first_entry(entry: int) -> BytesSource:
    """disk-1m.vhdx with the BAT entry of payload block 0 (the GPT's block) replaced."""
    data = bytearray((group() / "disk-1m.vhdx").read_bytes())
    at = bat_offset(data)
    data[at : at + 8] = struct.pack("<Q", entry)
    return BytesSource(bytes(data), "hostile.vhdx")


FULLY_PRESENT = 6


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (FULLY_PRESENT, "BAT entry file offset is 0, expected at least 1048576"),  # in the header section
        (4, "payload BAT entry state is 4"),
        (7 | 2 << 20, "payload BAT entry state is 7, expected 0, 1, 2, 3, 6, or 7 in a differencing disk"),
    ],
)
def test_a_hostile_bat_entry_is_refused(entry, message):
    view, _ = open_view("hostile.vhdx", source=with_first_entry(entry))
    with pytest.raises(introspect.ImageError, match=message) as raised:
        view.read(0, SECTOR)
    assert raised.value.rule is vhdx.INVALID


def test_a_block_past_the_end_of_the_file_is_truncation():
    source = with_first_entry(FULLY_PRESENT | (1 << 30) << 20)  # 1 TiB into a 15 MiB file
    view, _ = open_view("hostile.vhdx", source=source)
    with pytest.raises(introspect.TruncatedImage) as raised:
        view.read(0, SECTOR)
    assert raised.value.rule is TRUNCATED


def test_an_active_log_is_not_replayed_and_there_is_no_view():
    """[MS-VHDX] 2.3.3: a log MUST be replayed before the image is read; qemu refuses it read-only."""
    data = bytearray((group() / "disk-1m.vhdx").read_bytes())
    for offset in vhdx.HEADER_OFFSETS:
        rewrite(data, VhdxHeaderRecord, offset, log_guid=uuid.UUID(int=0x1234).bytes_le)
        block = bytearray(data[offset : offset + vhdx.HEADER_SIZE])
        block[vhdx.HEADER_CHECKSUM_OFFSET : vhdx.HEADER_CHECKSUM_OFFSET + 4] = bytes(4)
        checksum = struct.pack("<I", google_crc32c.value(bytes(block)))
        data[offset + vhdx.HEADER_CHECKSUM_OFFSET : offset + vhdx.HEADER_CHECKSUM_OFFSET + 4] = checksum
    source = BytesSource(bytes(data), "log.vhdx")
    assert "vhdx.log_pending" in [f.code for f in introspect.inspect(source).findings]
    with pytest.raises(introspect.ImageError, match="log is active") as raised:
        open_view("log.vhdx", source=source)
    assert raised.value.rule is GUEST_NO_VIEW


def test_mutated_tables_give_bytes_or_an_image_error():
    """Words of the BAT's first entries (the disk's 49 blocks) overwritten."""
    start = bat_offset((group() / "disk-1m.vhdx").read_bytes())
    assert survives_mutations("disk-1m.vhdx", start, start + 8 * 49) > 0
