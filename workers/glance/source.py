"""An image's bytes in Glance, read with single-range GETs, and the cache of what was fetched.

`GlanceSource` is a `ByteSource` over `GET /v2/images/{id}/file`: each `pread` the parsers make
(through the metered Reader) becomes at most one `Range` request, widened to whole blocks so
that the next few small reads nearby (a header, then the table it points at) are served from what
was already fetched. The block starts at `block` bytes and doubles with each request, up to
`max_block`: the header pass's few reads stay small, and the guest pass's, spread over the disk
(a partition table, then superblocks, inodes, directories and files wherever the filesystem put
them), take fewer requests (on the guest fixtures, a median of 14 requests and 6 MiB an image
with 64 KiB growing to 512 KiB, against 23 requests and 1.6 MiB with 64 KiB blocks throughout). A read that reaches the end of the image is asked as
a suffix range (`bytes=-N`). Glance refuses multi-range requests (400), so none is ever sent.
The size comes from the image record; the data is never downloaded whole.

`RangeCache` keeps fetched ranges on disk, keyed like Nova's image cache names its base images
(sha1 of the image id, here with the data's checksum, so new data under the same id can never
be served from old ranges), within a byte cap: the least recently used images are evicted
first. A re-run over unchanged images then costs no data requests at all.

Several worker processes share one cache directory. A range is written to a temporary file and
renamed into place, so a reader sees a whole range or none; writers hold a shared `flock` on
DIR/.lock, an eviction an exclusive one, so no eviction removes a directory a writer is about to
fill or a temporary file it is still writing. Readers take no lock: a range evicted while they
list an image is one they fetch again.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from introspect.sources import ByteSource
from workers.glance.client import GlanceClient

#: One cached range file is named by its start offset, in hex, zero-padded so names sort by offset.
RANGE_SUFFIX = ".range"
#: Most ranges kept for one image: parsers make at most Budget.max_reads (64) reads.
MAX_RANGES_PER_IMAGE = 256
#: The lock file in the cache directory: shared by writers, exclusive for an eviction.
LOCK_NAME = ".lock"


def cache_key(image_id: str, checksum: str) -> str:
    """sha1(image id + checksum), hex: Nova's cache naming with the data's identity added."""
    return hashlib.sha1(f"{image_id}{checksum}".encode(), usedforsecurity=False).hexdigest()


class RangeCache:
    """Fetched ranges of image data on disk, at most `max_bytes` in all (LRU by image)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    @contextlib.contextmanager
    def _locked(self, operation: int) -> Iterator[None]:
        """flock on DIR/.lock (a file opened per call, so threads of one process exclude each other
        as processes do); closing it releases the lock, whatever happens."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / LOCK_NAME).open("ab") as lock:
            fcntl.flock(lock, operation)
            yield

    def _dir(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def ranges(self, key: str) -> list[tuple[int, bytes]]:
        """Every cached range of one image, by offset (and the image marked as just used)."""
        directory = self._dir(key)
        found: list[tuple[int, bytes]] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(directory.iterdir())[:MAX_RANGES_PER_IMAGE]:
                if entry.name.endswith(RANGE_SUFFIX):
                    with contextlib.suppress(FileNotFoundError, ValueError):
                        found.append((int(entry.name.removesuffix(RANGE_SUFFIX), 16), entry.read_bytes()))
            os.utime(directory)
        return found

    def put(self, key: str, start: int, data: bytes) -> None:
        """Keep one fetched range (atomically: a reader never sees half a file)."""
        if not data or len(data) > self.max_bytes:
            return
        directory = self._dir(key)
        with self._locked(fcntl.LOCK_SH):
            directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                Path(temporary).replace(directory / f"{start:016x}{RANGE_SUFFIX}")
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        self.evict()

    def size(self) -> int:
        return sum(size for _, size in self._images())

    def _images(self) -> list[tuple[Path, int]]:
        images: list[tuple[Path, int]] = []
        for shard in self.directory.glob("??"):
            for directory in shard.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    images.append((directory, sum(entry.stat().st_size for entry in directory.iterdir())))
        return images

    def evict(self) -> None:
        """Drop whole images, least recently used first, until the cache fits its cap. Looked at
        without the lock first: under the cap (the usual case) writers are never held up."""
        if self.size() <= self.max_bytes:
            return
        with self._locked(fcntl.LOCK_EX):
            images = self._images()
            total = sum(size for _, size in images)
            if total <= self.max_bytes:
                return
            images.sort(key=lambda item: _mtime(item[0]))
            for directory, size in images:
                if total <= self.max_bytes:
                    break
                for entry in list(directory.iterdir()):
                    entry.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    directory.rmdir()
                total -= size


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


@dataclass
class FetchStats:
    """What one source cost: range requests sent, bytes received, reads served from cache."""

    requests: int = 0
    bytes: int = 0
    cache_hits: int = 0


class GlanceSource(ByteSource):
    """One Glance image's data as random access, fetched in whole blocks and only where read."""

    def __init__(
        self,
        client: GlanceClient,
        image_id: str,
        *,
        size: int,
        checksum: str | None,
        cache: RangeCache | None = None,
        block: int = 64 * 1024,
        max_block: int = 512 * 1024,
    ) -> None:
        self.client = client
        self.image_id = image_id
        self.name = f"glance:{image_id}"
        self._size = size
        self._block = block
        self._max_block = max(block, max_block)
        self._cache = cache if checksum else None
        self._key = cache_key(image_id, checksum) if checksum else ""
        self.stats = FetchStats()
        #: Fetched ranges, sorted by start, never overlapping.
        self._starts: list[int] = []
        self._data: list[bytes] = []
        if self._cache is not None:
            for start, data in self._cache.ranges(self._key):
                self._remember(start, data)

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if length == 0 or offset < 0:
            return b""
        if not self._missing(offset, offset + length):
            self.stats.cache_hits += 1
        else:
            start = offset // self._block * self._block
            stop = min(-(-(offset + length) // self._block) * self._block, self._size)
            for gap_start, gap_stop in self._missing(start, stop):
                data = self.client.read_range(self.image_id, gap_start, gap_stop - gap_start, self._size)
                self.stats.requests += 1
                self.stats.bytes += len(data)
                self._remember(gap_start, data)
                if self._cache is not None:
                    self._cache.put(self._key, gap_start, data)
            self._block = min(self._max_block, self._block * 2)
        return self._slice(offset, length)

    def _remember(self, start: int, data: bytes) -> None:
        """Add a range, merging it with the ranges it touches so lookups stay one bisect."""
        stop = start + len(data)
        index = bisect.bisect_left(self._starts, start)
        if index > 0 and self._starts[index - 1] + len(self._data[index - 1]) >= start:
            index -= 1
        merged_start, merged = start, data
        while index < len(self._starts) and self._starts[index] <= stop:
            old_start, old = self._starts[index], self._data[index]
            low = min(old_start, merged_start)
            buffer = bytearray(max(old_start + len(old), merged_start + len(merged)) - low)
            buffer[old_start - low : old_start - low + len(old)] = old
            buffer[merged_start - low : merged_start - low + len(merged)] = merged
            merged_start, merged = low, bytes(buffer)
            stop = merged_start + len(merged)
            del self._starts[index], self._data[index]
        self._starts.insert(index, merged_start)
        self._data.insert(index, merged)

    def _missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of [start, stop) not fetched yet."""
        gaps: list[tuple[int, int]] = []
        position = start
        index = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while position < stop and index < len(self._starts):
            range_start, range_stop = self._starts[index], self._starts[index] + len(self._data[index])
            if range_stop <= position:
                index += 1
                continue
            if range_start > position:
                gaps.append((position, min(range_start, stop)))
            position = max(position, range_stop)
            index += 1
        if position < stop:
            gaps.append((position, stop))
        return gaps

    def _slice(self, offset: int, length: int) -> bytes:
        index = bisect.bisect_right(self._starts, offset) - 1
        start, data = self._starts[index], self._data[index]
        return data[offset - start : offset - start + length]
