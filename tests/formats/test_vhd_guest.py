"""The guest view of a dynamic and a differencing VHD, against the raw disk qemu-img converted the
dynamic one from, and what libvhdi read of the differencing one (fixtures/make/views2.sh)."""

from __future__ import annotations

import re
import struct

import pytest

import introspect
from introspect.formats.vhd import DynamicDiskHeader, HardDiskFooter
from introspect.safety import TRUNCATED
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
from tests.tools import qemu_info, recorded

#: What qemu-io wrote into the differencing disk before it was made one (views2.sh): 125 sectors
#: of 0xcd from 15 MiB + 3 sectors. fixtures/views2_vhd_diff.py checked, with libvhdi, that the
#: disk over its parent reads the parent's bytes with these; without the parent, the rest is zeros.
WRITTEN = (15 * MIB + 3 * SECTOR, 125 * SECTOR)


def test_the_view_reads_the_dynamic_disk_qemu_img_converted():
    path = group() / "disk.vhd"
    view, reader = open_view(path)
    # qemu-img rounds the disk up to whole CHS cylinders: the view is the disk qemu presents.
    assert view.size == qemu_info(path)["virtual-size"] > layout().size
    assert view.incomplete is None
    assert_reads_like_source(view)
    assert view.read(layout().size, view.size - layout().size) == bytes(view.size - layout().size)
    # A page of the BAT, a sector bitmap a block, the blocks' data.
    assert reader.reads <= 24
    assert reader.bytes_read <= 2 * MIB


def test_a_block_the_bat_does_not_allocate_reads_as_zeros_without_reading_it():
    view, reader = open_view(group() / "disk.vhd")
    start = 32 * MIB  # block 16: past the end of the ext4 filesystem's data
    assert view.read(start, 2 * MIB) == bytes(2 * MIB) == source()[start : start + 2 * MIB]
    assert reader.reads == 1  # the BAT's first page


def test_a_differencing_disk_reads_its_own_sectors_and_zeros_for_its_parents():
    path = group() / "diff.vhd"
    parent = re.search(r"Parent filename\s*:\s*(\S+)", recorded(path, "vhdiinfo.txt")).group(1)
    view, reader = open_view(path)
    assert parent in view.incomplete
    offset, length = WRITTEN
    block_start = offset // (2 * MIB) * (2 * MIB)
    expected = bytearray(2 * MIB)
    expected[offset - block_start : offset - block_start + length] = b"\xcd" * length
    # The block the child holds: its bitmap's set bits (the sectors written) start 3 sectors in.
    assert view.read(block_start, 2 * MIB) == expected
    assert view.read(offset - SECTOR, 2 * SECTOR) == bytes(SECTOR) + b"\xcd" * SECTOR
    assert view.read(0, 4 * MIB) == bytes(4 * MIB)  # blocks the child does not hold
    assert reader.reads <= 4  # the BAT's page, the bitmap, the sectors written


# --- Hostile images, derived from the real ones ----------------------------------------------------


def bat_entry(data: bytes, block: int) -> int:
    """The file offset of the BAT entry of `block`, by the footer at offset 0 and the dynamic header."""
    footer = HardDiskFooter.unpack(data)
    header = DynamicDiskHeader.unpack(data, footer.data_offset)
    return header.table_offset + 4 * block


def test_a_block_past_the_end_of_the_file_is_truncation():
    data = bytearray((group() / "disk.vhd").read_bytes())
    at = bat_entry(data, 0)
    data[at : at + 4] = struct.pack(">I", len(data) // SECTOR + 100)
    view, _ = open_view("hostile.vhd", source=BytesSource(bytes(data), "hostile.vhd"))
    with pytest.raises(introspect.TruncatedImage, match="sector bitmap") as raised:
        view.read(0, SECTOR)
    assert raised.value.rule is TRUNCATED


def test_a_block_whose_data_runs_past_the_end_of_the_file_is_truncation():
    """Block 0 placed at the footer: its bitmap is the footer's first sector ("conectix": 'o' sets
    the bit of sector 1), its data past the end of the file."""
    data = bytearray((group() / "disk.vhd").read_bytes())
    at = bat_entry(data, 0)
    data[at : at + 4] = struct.pack(">I", len(data) // SECTOR - 1)
    view, _ = open_view("hostile.vhd", source=BytesSource(bytes(data), "hostile.vhd"))
    with pytest.raises(introspect.TruncatedImage, match="guest data"):
        view.read(SECTOR, SECTOR)


def test_mutated_tables_give_bytes_or_an_image_error():
    """Words of the BAT (after the footer copy and the dynamic header) overwritten."""
    data = (group() / "disk.vhd").read_bytes()
    start = bat_entry(data, 0)
    assert survives_mutations("disk.vhd", start, start + 4 * 25) > 0
