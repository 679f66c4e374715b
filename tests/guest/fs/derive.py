"""Filesystem images as the guest pass reads them, and hostile images derived from real ones.

The fixture images are 32 to 128 MiB (sparse): a derived image is not copied, it is the real
file read through `Derived`, with a few byte ranges replaced (packed from the declared
structures) and perhaps cut short. The guest pass's budget applies unless a test raises it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from introspect.decode import MIB
from introspect.formats.raw import RawGuestView
from introspect.guest.disk import Disk
from introspect.sources import Budget, ByteSource, FileSource, Reader

#: The guest pass's default budget.
GUEST_BUDGET = Budget(max_reads=512, max_bytes=4 * MIB)
#: Enough to read a fixture's whole tree back.
WHOLE_TREE = Budget(max_reads=100_000, max_bytes=1 << 30)


class Derived(ByteSource):
    """The bytes of the image at `path`, with `patches` ({offset: bytes}) written over them, and
    only its first `size` bytes when given. `reads` lists the (offset, length) of each read."""

    def __init__(self, path: Path, patches: dict[int, bytes] | None = None, size: int | None = None) -> None:
        self._file = FileSource(path)
        self._patches = patches or {}
        self._size = self._file.size if size is None else size
        self.name = f"{path.name} (derived)"
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        self.reads.append((offset, length))
        data = bytearray(self._file.pread(offset, length))
        for at, patch in self._patches.items():
            low, high = max(at, offset), min(at + len(patch), offset + length)
            if low < high:
                data[low - offset : high - offset] = patch[low - at : high - at]
        return bytes(data)

    def close(self) -> None:
        self._file.close()


@contextmanager
def guest_disk(source: ByteSource, budget: Budget = GUEST_BUDGET) -> Iterator[tuple[Disk, Reader]]:
    """A `Disk` over the raw image `source`, as the guest pass builds it, and its metered reader."""
    with source:
        reader = Reader(source, budget)
        yield Disk.of(RawGuestView(reader)), reader


def read_words(path: Path, suffix: str, separator: str) -> dict[str, str]:
    """`key SEPARATOR value` lines a tool recorded beside an image (xfs_db's `=`, blkid's `=`,
    dump-super's tabs), stripped."""
    words: dict[str, str] = {}
    for line in path.with_name(f"{path.name}.{suffix}").read_text().splitlines():
        key, found, value = line.partition(separator)
        if found:
            words.setdefault(key.strip(), value.strip())
    return words
