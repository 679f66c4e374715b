"""Guest views of images that map the guest's disk in fixed-size blocks (VMDK grains, VHD and VHDX
blocks): the one read loop they share, and the bounded cache their tables are read through.

A format's view subclasses `BlockMappedView` and says, for one block of the guest's disk, where
each part of it is (`spans`): a run of the file (`Span.file_offset`), zeros (unallocated, or a
sector a parent disk would hold), or bytes already in memory (a decompressed grain).
`BlockMappedView.read` walks the blocks a read covers and reads the parts that lie one after the
other in the file with one read of the Reader: a disk whose blocks the writer laid out in order
(qemu-img does) costs one read however many blocks a read spans.

Mapping tables (grain directories and grain tables, BATs, sector bitmaps) are read a page of
`TABLE_PAGE` bytes at a time, the first time an entry of that page is needed, and kept in
`Pages`, an LRU of at most `MAX_CACHED_PAGES` pages: the memory a view holds does not grow with
the image, and a walk over many blocks of one table costs one read per page.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from introspect.decode import KIB
from introspect.errors import BudgetExceeded, TruncatedImage
from introspect.sources import Reader

#: A table is read this much at a time: a file system page, 1024 32-bit or 512 64-bit entries.
TABLE_PAGE = 4 * KIB
#: Pages kept (at most 256 KiB): the tables a guest pass's reads touch (a few grain tables, BAT
#: pages, bitmaps) fit many times over; a pass that walks more re-reads, never holds more.
MAX_CACHED_PAGES = 64


K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most `capacity` values, the least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)


class Pages:
    """Pages of a file's mapping tables, each read once through the Reader while it stays cached."""

    def __init__(self, reader: Reader, max_pages: int = MAX_CACHED_PAGES) -> None:
        self.reader = reader
        self._cache: Lru[tuple[int, int], bytes] = Lru(max_pages)

    def read(self, offset: int, length: int, what: str) -> bytes:
        """`length` bytes at `offset` (at most a page): TruncatedImage when the file stops first."""
        key = (offset, length)
        data = self._cache.get(key)
        if data is None:
            data = self.reader.read(offset, length, what)
            self._cache.put(key, data)
        return data


@dataclass(frozen=True, slots=True)
class Table:
    """`count` entries of `entry` (one struct code with its byte order) at file offset `offset`,
    read through `Pages` one page at a time. The caller clamps `count` and the index."""

    offset: int
    count: int
    entry: struct.Struct
    what: str

    def get(self, pages: Pages, index: int) -> int:
        per_page = TABLE_PAGE // self.entry.size
        page, slot = divmod(index, per_page)
        start = page * per_page
        data = pages.read(
            self.offset + start * self.entry.size,
            min(per_page, self.count - start) * self.entry.size,
            self.what,
        )
        (value,) = self.entry.unpack_from(data, slot * self.entry.size)
        return int(value)


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


@dataclass(frozen=True, slots=True)
class Span:
    """`length` bytes of a block from `start` (offsets within the block): in the file at
    `file_offset`, or `data[start:start + length]` when `data` holds the block's bytes (a
    decompressed grain), or zeros when neither is given."""

    start: int
    length: int
    file_offset: int | None = None
    data: bytes | None = None


class BlockMappedView(ABC):
    """A `GuestView` (see `introspect.formats.base`) over a disk mapped in blocks of `block_size`
    bytes. Subclasses give `spans`; what a span does not cover reads as zeros."""

    def __init__(self, reader: Reader, size: int, block_size: int, incomplete: str | None = None) -> None:
        self.reader = reader
        self.size = size
        self.block_size = block_size
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
        run = _Run(self.reader, out)
        position, end = guest_offset, guest_offset + length
        while position < end:
            block, within = divmod(position, self.block_size)
            stop = min(self.block_size, within + end - position)
            base = block * self.block_size - guest_offset
            for span in self.spans(block, within, stop):
                low, high = max(span.start, within), min(span.start + span.length, stop)
                if low >= high:
                    continue
                if span.file_offset is not None:
                    run.add(span.file_offset + low - span.start, base + low, high - low)
                elif span.data is not None:
                    out[base + low : base + high] = span.data[low:high].ljust(high - low, b"\0")
            position = block * self.block_size + stop
        run.flush()
        return bytes(out)


class _Run:
    """File bytes waiting to be read into `out`: extended while the next part follows in the file
    (and in `out`), read in one Reader call when it does not."""

    def __init__(self, reader: Reader, out: bytearray) -> None:
        self.reader = reader
        self.out = out
        self.file_offset = self.at = self.length = 0

    def add(self, file_offset: int, at: int, length: int) -> None:
        if self.length and file_offset == self.file_offset + self.length and at == self.at + self.length:
            self.length += length
            return
        self.flush()
        self.file_offset, self.at, self.length = file_offset, at, length

    def flush(self) -> None:
        if self.length:
            data = self.reader.read(self.file_offset, self.length, "guest data")
            self.out[self.at : self.at + self.length] = data
            self.length = 0
