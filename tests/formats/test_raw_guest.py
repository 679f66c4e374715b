"""The guest view of a raw disk (the identity), read through a metered Reader and checked
against what sfdisk says of partition tables sfdisk made (fixtures/make/partitions.sh)."""

from __future__ import annotations

import json

import pytest

import introspect
from introspect.formats import every_format, partitions, raw
from introspect.sources import Budget, FileSource, Reader
from tests.conftest import fixture_group
from tests.tools import recorded

SECTOR = 512


def file_bytes(path, offset, length):
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(length)


def open_view(path, budget=None):
    details = introspect.inspect(path).details
    assert isinstance(details, raw.RawDetails)
    source = FileSource(path)
    reader = Reader(source, budget or Budget(max_reads=512, max_bytes=4 << 20))
    view = raw.FORMAT.guest(reader, details)
    return view, reader, source


@pytest.mark.parametrize("image", ["mbr.img", "mbr-boot.img"])
def test_the_mbr_read_through_the_view_is_the_one_sfdisk_wrote(image):
    path = fixture_group("partitions") / image
    table = json.loads(recorded(path, "sfdisk.json"))["partitiontable"]
    view, reader, source = open_view(path)
    with source:
        mbr = view.read(0, SECTOR)
        assert mbr == file_bytes(path, 0, SECTOR)
        primaries = [p for p in table["partitions"] if int(p["node"].removeprefix(path.name)) <= 4]
        records = partitions.LegacyMbr.unpack(mbr).partition_records()
        for record, partition in zip(records, primaries, strict=False):
            start = record.starting_lba
            assert start == partition["start"]
            first = view.read(start * table["sectorsize"], SECTOR)
            assert first == file_bytes(path, start * SECTOR, SECTOR)
        assert view.size == introspect.inspect(path).virtual_size
        assert reader.reads == 1 + len(primaries)
        assert reader.bytes_read == SECTOR * (1 + len(primaries))


def test_the_last_partial_sector_reads_as_zeros_and_past_the_end_is_truncation(tmp_path):
    """qemu presents a raw file rounded up to whole sectors: the view does too."""
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(SECTOR) + b"\xab" * 100)
    view, _, source = open_view(path)
    with source:
        assert view.size == 2 * SECTOR
        assert view.read(SECTOR, SECTOR) == b"\xab" * 100 + bytes(SECTOR - 100)
        with pytest.raises(introspect.TruncatedImage, match=r"the guest data needs bytes 1024\.\.1025"):
            view.read(2 * SECTOR, 1)


def test_the_view_reads_within_the_guest_budget(tmp_path):
    path = fixture_group("partitions") / "mbr.img"
    view, _, source = open_view(path, Budget(max_reads=2))
    with source:
        view.read(0, SECTOR)
        view.read(SECTOR, SECTOR)
        with pytest.raises(introspect.BudgetExceeded):
            view.read(2 * SECTOR, SECTOR)


def test_every_format_that_maps_its_data_has_a_guest_view():
    """Those without one cannot be read block by block: bochs, cloop and dmg (compressed chunks
    indexed by tables the header pass does not parse); luks has an opener that says why not."""
    assert {f.name for f in every_format() if f.guest is None} == {"bochs", "cloop", "dmg"}
