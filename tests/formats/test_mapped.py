"""The table cache every table-mapped guest view reads through: slices read as lookups need them,
never past the table, and an LRU whose size does not grow with the image."""

from __future__ import annotations

import struct

import pytest

import introspect
from introspect.formats.mapped import MAX_CACHED_SLICES, TABLE_SLICE, Lru, TableSlices
from introspect.sources import Budget, BytesSource, Reader

ENTRY = struct.Struct(">Q")
PER_SLICE = TABLE_SLICE // ENTRY.size


def table(entries, at=0):
    """A file holding `entries` 64-bit entries numbered from 0, from offset `at`."""
    data = bytes(at) + b"".join(ENTRY.pack(i) for i in range(entries))
    return Reader(BytesSource(data), Budget(max_reads=512))


def test_a_lookup_reads_the_one_slice_that_holds_the_entry():
    reader = table(4 * PER_SLICE)
    tables = TableSlices(reader)
    assert tables.entry(0, 4 * TABLE_SLICE, 2 * PER_SLICE + 5, ENTRY, "table") == (2 * PER_SLICE + 5,)
    assert (reader.reads, reader.bytes_read) == (1, TABLE_SLICE)
    assert tables.entry(0, 4 * TABLE_SLICE, 3 * PER_SLICE - 1, ENTRY, "table") == (3 * PER_SLICE - 1,)
    assert reader.reads == 1


def test_a_table_shorter_than_a_slice_is_read_to_its_end_only():
    reader = table(3, at=100)  # the table ends where the file does
    assert TableSlices(reader).entry(100, 3 * ENTRY.size, 2, ENTRY, "table") == (2,)
    assert reader.bytes_read == 3 * ENTRY.size


def test_a_table_past_the_end_of_the_file_is_truncation():
    reader = table(PER_SLICE)
    with pytest.raises(introspect.TruncatedImage, match=r"the L2 table needs bytes 4096\.\.8192"):
        TableSlices(reader).entry(TABLE_SLICE, TABLE_SLICE, 0, ENTRY, "L2 table")


def test_the_cache_keeps_the_most_recently_used_slices_only():
    slices = MAX_CACHED_SLICES + 1
    reader = table(slices * PER_SLICE)
    tables = TableSlices(reader)
    for index in range(slices):
        tables.entry(0, slices * TABLE_SLICE, index * PER_SLICE, ENTRY, "table")
    assert reader.reads == slices
    tables.entry(0, slices * TABLE_SLICE, slices * PER_SLICE - 1, ENTRY, "table")  # the newest: kept
    assert reader.reads == slices
    tables.entry(0, slices * TABLE_SLICE, 0, ENTRY, "table")  # the oldest: dropped, read again
    assert reader.reads == slices + 1


def test_lru_drops_the_least_recently_used():
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
