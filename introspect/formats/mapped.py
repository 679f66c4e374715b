"""What the guest views of qcow, qcow2, qed, VDI and Parallels share: the guest's disk mapped to
the file through tables, read with one read per run of units that are contiguous in the file.

Each of these formats cuts the guest's disk into units of one size (clusters, subclusters,
blocks) and keeps, in tables, where each unit is. A format's view is a `MappedView` that says,
for one unit, where it is (`locate`): an offset in the file, the unit's own bytes (a compressed
cluster, decompressed), or None when it reads as zeros. `MappedView.read` does the rest the same
way for all of them: it checks the range against the disk's size, and reads each run of units
that follow one another in the file with one read of the metered `Reader`. A read costs the
bytes asked for, plus the table slices and compressed clusters not already cached.

The tables themselves (an L1 or L2 table, a block map, a BAT) are read through `TableSlices`:
TABLE_SLICE bytes at a time, only the slice that holds the entry a lookup needs, kept in an LRU
of MAX_CACHED_SLICES slices. A lookup costs one small read at most, whatever size the header
gives a table (a qcow2 L2 table is a whole cluster of up to 2 MiB, a qed table up to 16 clusters
of up to 64 MiB), and the memory held stays bounded whatever the image.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from introspect.decode import KIB
from introspect.errors import TruncatedImage
from introspect.sources import Reader

#: Tables are read this many bytes at a time: a page. One slice holds 512 qcow2 L2 entries (32 MiB
#: of the guest's disk in 64 KiB clusters) or 1024 VDI block pointers (1 GiB in 1 MiB blocks).
TABLE_SLICE = 4 * KIB
#: At most this many table slices are kept (256 KiB): far more than the L2 slices a filesystem's
#: superblock, inodes and directories need, so a guest pass reads each slice about once.
MAX_CACHED_SLICES = 64

#: Where a unit of the guest's disk is: an offset in the file, the unit's bytes, or None for zeros.
Location = int | bytes | None

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most `capacity` values; the least recently used one goes first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        if len(self._values) > self.capacity:
            self._values.popitem(last=False)


class TableSlices:
    """Entries of a format's mapping tables, read a slice at a time as lookups need them."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._slices: Lru[tuple[int, int, int], bytes] = Lru(MAX_CACHED_SLICES)

    def entry(self, table: int, length: int, index: int, layout: struct.Struct, what: str) -> tuple[int, ...]:
        """Entry `index` of the table of `length` bytes at file offset `table`, whose entries are
        `layout` (unsigned numbers); the caller keeps `index` within the table. The slice is read
        whole: a table that runs past the end of the file is TruncatedImage, named `what`."""
        at = index * layout.size
        start = at - at % TABLE_SLICE
        key = (table, length, start)
        data = self._slices.get(key)
        if data is None:
            data = self._reader.read(table + start, min(TABLE_SLICE, length - start), what)
            self._slices.put(key, data)
        values: tuple[int, ...] = layout.unpack_from(data, at - start)
        return values


class MappedView(ABC):
    """A guest view over units of `unit` bytes that `locate` finds in the file (see the module
    docstring). `what` names the units in errors ("qcow2 data cluster"); `incomplete` says what
    holds the ranges the image leaves to another file (which read as zeros here)."""

    def __init__(
        self, reader: Reader, *, size: int, unit: int, what: str, incomplete: str | None = None
    ) -> None:
        self.reader = reader
        self.size = size
        self.unit = unit
        self.what = what
        self.incomplete = incomplete

    @abstractmethod
    def locate(self, index: int) -> Location:
        """Where unit `index` of the guest's disk is: its offset in the file, its bytes (exactly
        `unit` of them), or None when it reads as zeros (unallocated, or a zero cluster)."""

    def read(self, guest_offset: int, length: int) -> bytes:
        if guest_offset < 0 or length < 0 or guest_offset + length > self.size:
            raise TruncatedImage("guest data", offset=guest_offset, length=length, size=self.size)
        out = bytearray()
        run_start = run_length = 0  # the run of the file to read next, not yet read
        position, end = guest_offset, guest_offset + length
        while position < end:
            index, within = divmod(position, self.unit)
            take = min(self.unit - within, end - position)
            where = self.locate(index)
            if isinstance(where, int):
                if run_length and run_start + run_length == where + within:
                    run_length += take
                else:
                    out += self._read_run(run_start, run_length)
                    run_start, run_length = where + within, take
            else:
                out += self._read_run(run_start, run_length)
                run_length = 0
                out += bytes(take) if where is None else where[within : within + take]
            position += take
        out += self._read_run(run_start, run_length)
        return bytes(out)

    def _read_run(self, start: int, length: int) -> bytes:
        return self.reader.read(start, length, self.what) if length else b""
