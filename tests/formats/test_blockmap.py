"""The table pages every table-mapped guest view reads through: pages read as lookups need them,
never past the table, and a cache whose size does not grow with the image."""

from __future__ import annotations

import struct

import pytest

import introspect
from introspect.formats.blockmap import MAX_CACHED_PAGES, TABLE_PAGE, Pages, Table
from introspect.sources import Budget, BytesSource, Reader
from tests.formats.views1_disk import GUEST_BUDGET, group, opened

ENTRY = struct.Struct(">Q")
PER_PAGE = TABLE_PAGE // ENTRY.size


def table(entries, at=0):
    """A file holding `entries` 64-bit entries numbered from 0, from offset `at`."""
    data = bytes(at) + b"".join(ENTRY.pack(i) for i in range(entries))
    return Reader(BytesSource(data), Budget(max_reads=512))


def test_a_lookup_reads_the_one_page_that_holds_the_entry():
    reader = table(4 * PER_PAGE)
    pages, entries = Pages(reader), Table(0, 4 * PER_PAGE, ENTRY, "table")
    assert entries.get(pages, 2 * PER_PAGE + 5) == (2 * PER_PAGE + 5,)
    assert (reader.reads, reader.bytes_read) == (1, TABLE_PAGE)
    assert entries.get(pages, 3 * PER_PAGE - 1) == (3 * PER_PAGE - 1,)
    assert reader.reads == 1


def test_a_table_shorter_than_a_page_is_read_to_its_end_only():
    reader = table(3, at=100)  # the table ends where the file does
    assert Table(100, 3, ENTRY, "table").get(Pages(reader), 2) == (2,)
    assert reader.bytes_read == 3 * ENTRY.size


def test_an_entry_of_several_fields_is_read_whole():
    reader = table(4)
    pair = struct.Struct(">QQ")  # a qcow2 extended L2 entry: the entry, then its bitmap
    assert Table(0, 2, pair, "table").get(Pages(reader), 1) == (2, 3)


def test_a_table_past_the_end_of_the_file_is_truncation():
    reader = table(PER_PAGE)
    with pytest.raises(introspect.TruncatedImage, match=r"the L2 table needs bytes 4096\.\.8192"):
        Table(TABLE_PAGE, PER_PAGE, ENTRY, "L2 table").get(Pages(reader), 0)


def test_the_cache_keeps_the_most_recently_used_pages_only():
    count = MAX_CACHED_PAGES + 1
    reader = table(count * PER_PAGE)
    pages, entries = Pages(reader), Table(0, count * PER_PAGE, ENTRY, "table")
    for index in range(count):
        entries.get(pages, index * PER_PAGE)
    assert reader.reads == count
    entries.get(pages, count * PER_PAGE - 1)  # the newest: kept
    assert reader.reads == count
    entries.get(pages, 0)  # the oldest: dropped, read again
    assert reader.reads == count + 1


@pytest.mark.parametrize("name", ["v3.qcow2", "qcow.qcow", "qed.qed", "dynamic.vdi", "disk.hds"])
def test_a_read_larger_than_the_budget_s_largest_is_refused_before_it_is_allocated(name):
    """Every table-mapped view, as the Reader does: a hostile filesystem cannot make a view
    allocate a disk's worth of zeros."""
    with opened(group() / name) as (view, reader):
        largest = GUEST_BUDGET.max_read_size
        assert view.size > largest
        with pytest.raises(introspect.BudgetExceeded, match=f"at most {largest}"):
            view.read(0, largest + 1)
        assert reader.reads == 0
