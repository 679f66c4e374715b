"""A byte range of the guest's disk (the whole disk, a partition, a logical volume), read through
one block cache over the format's guest view.

Everything the guest layer reads (partition tables, LVM metadata, superblocks, inodes, files)
comes through a `Disk`. `Disk` is a `Reader` (so `Structure.read`, `read_partition_table` and every
parser written for the header pass read a guest disk unchanged), but it keeps no budget of its own:
the guest view reads through the guest pass's own metered `Reader`, which counts every byte
against the guest budget. What `Disk` adds is the cache: filesystems re-read the same blocks
(superblock, inode table block, the root directory) many times, and each re-read must be free.

The cache holds aligned blocks of `BLOCK` bytes, at most `MAX_CACHED_BLOCKS` of them, evicting the
least recently used: its memory is bounded whatever the image, and a read of several blocks is
one read of the view (which itself coalesces what is contiguous in the file).
"""

from __future__ import annotations

from introspect.errors import TruncatedImage
from introspect.formats.base import GuestView
from introspect.lru import Lru
from introspect.sources import BytesSource, Reader

#: The cache's block: the page size of every filesystem here, and a multiple of every sector size.
BLOCK = 4096
#: At most this many cached blocks (4 MiB, the default guest budget: the cache never holds more
#: than the pass may read, and a larger budget only costs re-reads).
MAX_CACHED_BLOCKS = 1024


class BlockCache:
    """Blocks of the guest's disk already read, shared by every `Disk` over the same view."""

    def __init__(self, view: GuestView, max_blocks: int = MAX_CACHED_BLOCKS) -> None:
        self.view = view
        self._blocks: Lru[int, bytes] = Lru(max_blocks)

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes of the view from `offset` (the caller has clamped both)."""
        if length == 0:
            return b""
        first = offset // BLOCK
        last = (offset + length - 1) // BLOCK
        if first == last:  # most reads: an inode, an entry, a sector, inside one block
            kept = self._blocks.get(first)
            if kept is not None:
                skip = offset - first * BLOCK
                return kept[skip : skip + length]
        parts: list[bytes] = []
        block = first
        while block <= last:
            cached = self._blocks.get(block)
            if cached is not None:
                parts.append(cached)
                block += 1
                continue
            # The run of blocks not cached, read with one call to the view.
            end = block
            while end + 1 <= last and end + 1 not in self._blocks:
                end += 1
            start_byte = block * BLOCK
            end_byte = min((end + 1) * BLOCK, self.view.size)
            data = self.view.read(start_byte, end_byte - start_byte)
            for index in range(block, end + 1):
                piece = data[(index - block) * BLOCK : (index - block + 1) * BLOCK]
                self._blocks.put(index, piece)
                parts.append(piece)
            block = end + 1
        joined = b"".join(parts)
        skip = offset - first * BLOCK
        return joined[skip : skip + length]


class Disk(Reader):
    """`size` bytes of the guest's disk from `start` (see the module docstring). `read` returns
    exactly what was asked or raises `TruncatedImage` (a structure of the guest runs past its
    volume); `read_upto` stops at the volume's end."""

    def __init__(
        self, cache: BlockCache, start: int = 0, size: int | None = None, name: str = "disk"
    ) -> None:
        super().__init__(BytesSource(b"", name))
        self.cache = cache
        self.start = start
        whole = cache.view.size
        self.size = max(0, min(whole - start, whole if size is None else size))
        self.name = name

    @classmethod
    def of(cls, view: GuestView, name: str = "disk") -> Disk:
        """The whole disk a view presents, with a fresh cache."""
        return cls(BlockCache(view), name=name)

    def read_upto(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0:
            raise TruncatedImage(what, offset=offset, length=length, size=self.size)
        length = max(0, min(length, self.size - offset))
        return self.cache.read(self.start + offset, length)

    def block_span(self, offset: int) -> tuple[int, int]:
        """The bytes of this disk (start, end) that share the cache's block holding `offset`:
        reading any of them reads the whole block, so a parser may take them all at no further
        cost (a FAT is decoded that way)."""
        low = (self.start + offset) // BLOCK * BLOCK - self.start
        return max(0, low), min(self.size, low + BLOCK)

    def slice(self, start: int, size: int, name: str) -> Disk:
        """A volume inside this one (a partition, a logical volume), clamped to this one's end."""
        start = max(0, min(start, self.size))
        return Disk(self.cache, self.start + start, max(0, min(size, self.size - start)), name)
