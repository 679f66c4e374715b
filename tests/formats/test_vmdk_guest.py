"""The guest view of a VMDK, against the raw disk qemu-img (and VMDKstream) converted each image
from (fixtures/make/views2.sh); hostile variants derived from those images in the tests."""

from __future__ import annotations

import re
import struct

import pytest

import introspect
from introspect.formats import vmdk
from introspect.formats.vmdk import GrainMarker, SparseExtentHeader
from introspect.safety import GUEST_NO_VIEW, TRUNCATED
from introspect.sources import BytesSource
from tests.conftest import fixture_group
from tests.formats.views2_disk import (
    SECTOR,
    assert_reads_like_source,
    group,
    layout,
    open_view,
    source,
    survives_mutations,
)
from tests.tools import put, recorded

#: qemu-img's monolithicSparse, qemu-img's streamOptimized (grain directory after the grains,
#: gdOffset in the header), VMDKstream's (GD_AT_END: the footer at the end holds gdOffset).
SPARSE = ["disk.vmdk", "disk-stream.vmdk", "disk-vmdkstream.vmdk"]


@pytest.mark.parametrize("name", SPARSE)
def test_the_view_reads_the_disk_qemu_img_converted(name):
    view, reader = open_view(group() / name)
    assert view.size == layout().size == introspect.inspect(group() / name).virtual_size
    assert view.incomplete is None
    assert_reads_like_source(view)
    # The tables once (a page of the directory, a grain table or two), then grains: a few dozen
    # reads for 1.5 MiB of checks, of which the 1 MiB random file is 16 grains.
    assert reader.reads <= 48
    assert reader.bytes_read <= 2 * 1024 * 1024


@pytest.mark.parametrize("name", SPARSE)
def test_unallocated_grains_read_as_zeros_without_reading_them(name):
    view, reader = open_view(group() / name)
    esp_start, esp_end = layout().partitions["ESP"]
    assert view.read(esp_start, esp_end - esp_start) == bytes(esp_end - esp_start)
    assert reader.bytes_read <= 2 * 4096  # a page of the grain directory, a grain table


def test_contiguous_grains_are_one_read():
    """qemu-img writes a monolithicSparse extent's grains in the disk's order: the 1 MiB random
    file, 16 grains, is one read once the tables are cached."""
    view, reader = open_view(group() / "disk.vmdk")
    start, end = layout().random_file
    view.read(start, SECTOR)
    before = reader.reads
    assert view.read(start, end - start) == source()[start:end]
    assert reader.reads - before == 1


def test_a_compressed_grain_read_piece_by_piece_is_decompressed_once():
    view, reader = open_view(group() / "disk-stream.vmdk")
    start = layout().random_file[0] // 65536 * 65536 + 65536
    view.read(start, SECTOR)
    before = (reader.reads, reader.bytes_read)
    for offset in range(start, start + 65536, 4096):
        assert view.read(offset, 4096) == source()[offset : offset + 4096]
    assert (reader.reads, reader.bytes_read) == before


def test_a_zeroed_grain_reads_as_zeros_without_reading_it():
    """disk-zeroed.vmdk: qemu-io zeroed the grain at 15 MiB ("write -z"), which with the zeroed-grain
    flag is a grain table entry of 1, no data; the grains around it are the source's."""
    view, reader = open_view(group() / "disk-zeroed.vmdk")
    start = 15 * 1024 * 1024
    expected = bytearray(source()[start - 65536 : start + 2 * 65536])
    expected[65536 : 2 * 65536] = bytes(65536)
    assert expected[:65536] != bytes(65536)  # the random file is on both sides
    view.read(start, SECTOR)
    before = reader.bytes_read
    assert view.read(start, 65536) == bytes(65536)
    assert reader.bytes_read == before
    assert view.read(start - 65536, 3 * 65536) == expected


def test_a_read_larger_than_the_budget_s_largest_is_refused_before_it_is_allocated():
    view, reader = open_view(group() / "disk.vmdk")
    with pytest.raises(introspect.BudgetExceeded, match="at most 4194304"):
        view.read(0, view.size)
    assert reader.reads == 0


def test_past_the_end_of_the_disk_is_truncation():
    view, _ = open_view(group() / "disk.vmdk")
    with pytest.raises(introspect.TruncatedImage, match="the guest data needs bytes"):
        view.read(view.size - SECTOR, 2 * SECTOR)


@pytest.mark.parametrize(
    ("fixtures", "name", "named"),
    [
        ("views2", "disk-flat.vmdk", "FLAT 'disk-flat-flat.vmdk'"),
        ("views2", "disk-split.vmdk", "SPARSE 'disk-split-s001.vmdk'"),
        ("views2", "disk-split-s001.vmdk", "one extent of a split disk"),
        ("vmdk", "cowd.vmdk", "ESX sparse"),
    ],
)
def test_a_disk_whose_data_is_in_other_files_has_no_view(fixtures, name, named):
    with pytest.raises(introspect.ImageError, match=named) as raised:
        open_view(fixture_group(fixtures) / name)
    assert raised.value.rule is GUEST_NO_VIEW


def test_an_embedded_descriptor_naming_another_file_has_no_view():
    """qemu-img's own extent line rewritten to a FLAT extent in another file: the data is there."""
    data = bytearray((group() / "disk.vmdk").read_bytes())
    line = re.search(rb'RW (\d+) SPARSE "disk.vmdk"', data)
    other = b'RW %s FLAT "other.img" 0' % line.group(1)
    data[line.start() : line.start() + len(other)] = other
    with pytest.raises(introspect.ImageError, match=r"FLAT 'other\.img'") as raised:
        open_view("other.vmdk", source=BytesSource(bytes(data), "other.vmdk"))
    assert raised.value.rule is GUEST_NO_VIEW


def test_a_delta_disk_names_its_parent_and_reads_zeros_for_it():
    """qemu-img's delta of base.vmdk (fixtures/make/vmdk.sh): no grain of its own yet."""
    path = fixture_group("vmdk") / "delta.vmdk"
    hint = re.search(r'parentFileNameHint="([^"]+)"', recorded(path, "descriptor.txt")).group(1)
    view, reader = open_view(path)
    assert f"the parent disk {hint!r}" in view.incomplete
    assert view.read(0, 64 * 1024) == bytes(64 * 1024)
    assert reader.reads == 2  # the directory's page and the grain table


# --- Hostile images, derived from the real ones ----------------------------------------------------


def first_grain_table_entry(data: bytes) -> int:
    """The file offset of the grain table entry of grain 0 (the protective MBR's grain)."""
    header = SparseExtentHeader.unpack(data)
    if header.gd_offset == vmdk.GD_AT_END:
        header = SparseExtentHeader.unpack(data, len(data) - vmdk.FOOTER_FROM_END)
    (table,) = struct.unpack_from("<I", data, header.gd_offset * SECTOR)
    return table * SECTOR


def hostile_view(name, change):
    data = bytearray((group() / name).read_bytes())
    change(data, first_grain_table_entry(data))
    return open_view(name, source=BytesSource(bytes(data), name))[0]


def test_a_grain_past_the_end_of_the_file_is_truncation():
    def past_the_end(data, entry):
        data[entry : entry + 4] = struct.pack("<I", len(data) // SECTOR + 100)

    view = hostile_view("disk.vmdk", past_the_end)
    with pytest.raises(introspect.TruncatedImage) as raised:
        view.read(0, SECTOR)
    assert raised.value.rule is TRUNCATED


def test_a_grain_table_past_the_end_of_the_file_is_truncation():
    def directory_past_the_end(data, entry):
        header = SparseExtentHeader.unpack(data)
        at = header.gd_offset * SECTOR
        data[at : at + 4] = struct.pack("<I", len(data) // SECTOR + 100)

    view = hostile_view("disk.vmdk", directory_past_the_end)
    with pytest.raises(introspect.TruncatedImage, match="grain table"):
        view.read(0, SECTOR)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ({"size": 0xFFFFFFFF}, "grain marker size is 4294967295, expected 1 to 131060 bytes"),
        ({"size": 0}, "grain marker size is 0"),
        ({"val": 12345}, "grain marker LBA is 12345, expected 0"),
        ({"size": 8}, "compressed grain"),  # the deflate stream cut short
    ],
)
def test_a_hostile_grain_marker_is_refused(marker, message):
    def rewrite_marker(data, entry):
        (sector,) = struct.unpack_from("<I", data, entry)
        old = GrainMarker.unpack(data, sector * SECTOR)
        fields = {"val": old.val, "size": old.size, **marker}
        put(data, GrainMarker(**fields), sector * SECTOR)

    view = hostile_view("disk-stream.vmdk", rewrite_marker)
    with pytest.raises(introspect.ImageError, match=message) as raised:
        view.read(0, SECTOR)
    assert raised.value.rule is vmdk.BAD_HEADER


def test_a_grain_that_is_not_deflate_data_is_refused():
    def garble(data, entry):
        (sector,) = struct.unpack_from("<I", data, entry)
        at = sector * SECTOR + GrainMarker.SIZE
        data[at : at + 16] = bytes(range(16))

    view = hostile_view("disk-stream.vmdk", garble)
    with pytest.raises(introspect.ImageError, match=r"compressed grain is .*expected deflate"):
        view.read(0, SECTOR)


@pytest.mark.parametrize("name", ["disk.vmdk", "disk-stream.vmdk"])
def test_mutated_tables_give_bytes_or_an_image_error(name):
    """Words of the grain directory and grain tables (qemu-img puts them from sector 21, before
    the overHead's end) overwritten with hostile values."""
    header = SparseExtentHeader.unpack((group() / name).read_bytes()[:SECTOR])
    assert survives_mutations(name, header.rgd_offset * SECTOR, header.over_head * SECTOR) > 0
