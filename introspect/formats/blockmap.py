"""What every table-mapped guest view shares: the guest's disk cut into blocks of one size (qcow
and qcow2 clusters or subclusters, qed clusters, VDI blocks, Parallels clusters, VMDK grains, VHD
and VHDX blocks) that tables map to the file, the one read loop over them, and the table pages
their lookups read through.

A format's view subclasses `BlockMappedView` and says, for one block of the guest's disk, where
each part of it is (`spans`): a run of the file (`Span.file_offset`), bytes already in memory
(`Span.data`: a compressed cluster or grain, decompressed), or, where no span covers it, zeros
(unallocated, a zero cluster, a sector a backing file or a parent disk would hold). Most formats
map a block whole (one span or none); VHD and VHDX map a partially present block sector by sector
through its bitmap (`bitmap_runs`).

`BlockMappedView.read` checks the range against the disk's size and against the budget's largest
read (before anything is allocated for it), walks the blocks the read covers, and reads the parts
that lie one after the other in the file with one read of the metered `Reader`: a disk whose
blocks the writer laid out in order (qemu-img does) costs one read however many blocks a read
spans. A read costs the bytes asked for, plus the table pages and compressed blocks not already
cached.

Mapping tables (L1 and L2 tables, grain directories and grain tables, block maps, BATs, sector
bitmaps) are read a page of `TABLE_PAGE` bytes at a time, the first time an entry of that page is
needed, and kept in `Pages`, an LRU of at most `MAX_CACHED_PAGES` pages: a lookup costs one small
read at most, whatever size the header gives a table (a qcow2 L2 table is a whole cluster of up to
2 MiB, a qed table up to 16 clusters of up to 64 MiB), and the memory a view holds does not grow
with the image.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from introspect.decode import KIB
from introspect.errors import BudgetExceeded, TruncatedImage
from introspect.lru import Lru
from introspect.sources import Reader

#: A table is read this much at a time: a file system page, 1024 32-bit or 512 64-bit entries (32
#: MiB of the guest's disk in qcow2's 64 KiB clusters, 1 GiB in VDI's 1 MiB blocks).
TABLE_PAGE = 4 * KIB
#: Pages kept (at most 256 KiB): far more than the pages of L2 tables, grain tables, BATs and
#: bitmaps that a filesystem's superblock, inodes and directories need, so a guest pass reads each
#: page about once; a pass that walks more re-reads, never holds more.
MAX_CACHED_PAGES = 64


class Pages:
    """Pages of a file's mapping tables, each read once through the Reader while it stays cached."""

    def __init__(self, reader: Reader, max_pages: int = MAX_CACHED_PAGES) -> None:
        self.reader = reader
        self._cache: Lru[tuple[int, int], bytes] = Lru(max_pages)

    def read(self, offset: int, length: int, what: str) -> bytes:
        """`length` bytes at `offset` (at most a page): TruncatedImage when the file stops first."""
        return self._cache.get_or_make((offset, length), lambda: self.reader.read(offset, length, what))


@dataclass(frozen=True, slots=True)
class Table:
    """`count` entries of `entry` (a struct of unsigned numbers, with its byte order) at file offset
    `offset`, read through `Pages` one page at a time. The caller clamps `count` and the index."""

    offset: int
    count: int
    entry: struct.Struct
    what: str

    def get(self, pages: Pages, index: int) -> tuple[int, ...]:
        """Entry `index`'s fields. The page is read whole, to the table's end at most: a table that
        runs past the end of the file is TruncatedImage, named `what`."""
        per_page = TABLE_PAGE // self.entry.size
        page, slot = divmod(index, per_page)
        start = page * per_page
        data = pages.read(
            self.offset + start * self.entry.size,
            min(per_page, self.count - start) * self.entry.size,
            self.what,
        )
        fields: tuple[int, ...] = self.entry.unpack_from(data, slot * self.entry.size)
        return fields


def bitmap_runs(
    pages: Pages, offset: int, length: int, first: int, end: int, *, lsb_first: bool, what: str
) -> Iterator[tuple[int, int, bool]]:
    """Runs `(start, stop, set)` of the bits `first`..`end` of the `length`-byte bitmap at file
    offset `offset`, read a page at a time; `lsb_first`: bit 0 of byte 0 is the first bit (VHDX),
    else its most significant bit is (VHD). Bits past the bitmap's end are not walked: every page
    read holds at least one bit, so the walk ends."""
    end = min(end, length * 8)
    run_start, run_set = first, None
    bit = first
    while bit < end:
        page_start = bit // 8 // TABLE_PAGE * TABLE_PAGE
        data = pages.read(offset + page_start, min(TABLE_PAGE, length - page_start), what)
        page_end = min(end, (page_start + len(data)) * 8)
        while bit < page_end:
            byte = data[bit // 8 - page_start]
            if bit % 8 == 0 and page_end - bit >= 8 and byte in (0, 0xFF):
                value, step = byte == 0xFF, 8  # a whole byte: runs of set or clear sectors are long
            else:
                shift = bit % 8 if lsb_first else 7 - bit % 8
                value, step = bool(byte >> shift & 1), 1
            if value != run_set:
                if run_set is not None:
                    yield run_start, bit, run_set
                run_start, run_set = bit, value
            bit += step
    if run_set is not None:
        yield run_start, end, run_set


class Span(NamedTuple):
    """`length` bytes of a block from `start` (offsets within the block; the defaults: the whole
    block): in the file at `file_offset`, or `data[start:start + length]` when `data` holds the
    block's bytes (a decompressed cluster), or zeros when neither is given."""

    start: int = 0
    length: int | None = None
    file_offset: int | None = None
    data: bytes | None = None


class BlockMappedView(ABC):
    """A `GuestView` (see `introspect.formats.base`) of `size` bytes, mapped in blocks of `unit`
    bytes (see the module docstring). Subclasses give `spans`; what a span does not cover reads as
    zeros. `what` names the file's data in errors ("qcow2 data cluster"); `incomplete` says what
    holds the ranges the image leaves to another file (which read as zeros here)."""

    def __init__(
        self,
        reader: Reader,
        *,
        size: int,
        unit: int,
        what: str = "guest data",
        incomplete: str | None = None,
    ) -> None:
        self.reader = reader
        self.size = size
        self.unit = unit
        self.what = what
        self.incomplete = incomplete
        self.pages = Pages(reader)

    @abstractmethod
    def spans(self, block: int, start: int, end: int) -> Iterable[Span]:
        """Where the bytes `start`..`end` of block number `block` are, in order."""

    def read(self, guest_offset: int, length: int) -> bytes:
        if guest_offset < 0 or length < 0 or guest_offset + length > self.size:
            raise TruncatedImage("guest data", offset=guest_offset, length=length, size=self.size)
        largest = self.reader.budget.max_read_size
        if length > largest:
            # As the Reader refuses one read that large, before anything is allocated for it.
            raise BudgetExceeded("guest data", limit=f"{length} bytes in one read, at most {largest}")
        out = bytearray(length)
        run = _Run(self.reader, out, self.what)
        position, end = guest_offset, guest_offset + length
        while position < end:
            block, within = divmod(position, self.unit)
            stop = min(self.unit, within + end - position)
            base = block * self.unit - guest_offset
            for span in self.spans(block, within, stop):
                low = max(span.start, within)
                high = stop if span.length is None else min(span.start + span.length, stop)
                if low >= high:
                    continue
                if span.file_offset is not None:
                    run.add(span.file_offset + low - span.start, base + low, high - low)
                elif span.data is not None:
                    out[base + low : base + high] = span.data[low:high].ljust(high - low, b"\0")
            position = block * self.unit + stop
        run.flush()
        return bytes(out)


class _Run:
    """File bytes waiting to be read into `out`: extended while the next part follows in the file
    (and in `out`), read in one Reader call when it does not."""

    def __init__(self, reader: Reader, out: bytearray, what: str) -> None:
        self.reader = reader
        self.out = out
        self.what = what
        self.file_offset = self.at = self.length = 0

    def add(self, file_offset: int, at: int, length: int) -> None:
        if self.length and file_offset == self.file_offset + self.length and at == self.at + self.length:
            self.length += length
            return
        self.flush()
        self.file_offset, self.at, self.length = file_offset, at, length

    def flush(self) -> None:
        if self.length:
            data = self.reader.read(self.file_offset, self.length, self.what)
            self.out[self.at : self.at + self.length] = data
            self.length = 0
