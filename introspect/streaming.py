"""Images that arrive as a stream (standard input, a pipe: `curl ... | introspect inspect -`),
read once, front to back, keeping only bounded windows of it.

A stream cannot seek, and a parser reads where the header says. `StreamSource` reads the whole
stream once and keeps:

- its first `KEEP_HEAD` bytes (every format's header, a compressed image's input head) and its
  last `KEEP_TAIL` bytes (a fixed VHD's footer, a DMG's koly block, a GPT's backup header);
- when the head is a tar (an OVA), what the OVA container and its members' parsers read, found by
  walking the tar headers as they stream by: each header block and pax/GNU extension data, the
  OVF descriptor and the manifest whole (to their caps), and the first `MEMBER_HEAD` and last
  `MEMBER_TAIL` bytes of every other member (a disk's header, and a streamOptimized VMDK's
  footer). OVAs stream natively: an OVA inspection reads nothing else.

With `digests=True` (`--verify-manifest`), every tar member is also hashed (SHA1, SHA256, SHA512:
what ovftool and VirtualBox manifests use) as it passes, so the manifest is verified in the same
single pass (`introspect.containers.ova.HashedAsItPassed`).

A read outside what was kept raises `StreamPassed`, an `ImageError` with the rule
`stream.partial`: the Report says which bytes its facts lacked (they were in the stream, and are
gone), never a wrong answer. Memory is bounded: at most `KEEP_HEAD + KEEP_TAIL` plus, for a tar,
`ova.MAX_ENTRIES` members' windows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO

from introspect.containers import ova, ovf
from introspect.decode import KIB, MIB
from introspect.errors import BytesNotKept, ImageError
from introspect.model import Severity
from introspect.safety import rule
from introspect.sources import ByteSource

STREAM_PARTIAL = rule(
    "stream.partial",
    Severity.WARN,
    "the image came as a stream and a parser needed bytes the stream had already passed",
)

KEEP_HEAD = 4 * MIB
KEEP_TAIL = 1 * MIB
MEMBER_HEAD = 256 * KIB
MEMBER_TAIL = 64 * KIB
CHUNK = 1 * MIB
BLOCK = ova.BLOCK


class StreamPassed(BytesNotKept):
    """A read of bytes the stream did not keep."""

    def __init__(self, offset: int, length: int, head: int = KEEP_HEAD, tail: int = KEEP_TAIL) -> None:
        super().__init__(
            STREAM_PARTIAL,
            f"bytes {offset}..{offset + length} of the stream were passed and not kept (introspect keeps the "
            f"first {head}, the last {tail}, and an OVA's headers and its disks' heads and tails): "
            "facts that need them are unknown; inspect the file itself (a path or URL) for all of them",
            offset=offset,
        )


@dataclass
class _Window:
    start: int
    end: int
    data: bytearray = field(default_factory=bytearray)

    @property
    def filled(self) -> int:
        return self.start + len(self.data)

    def take(self, position: int, chunk: bytes) -> None:
        """Keep what `chunk` (at `position`) holds of this window, in stream order."""
        low, high = max(self.filled, position), min(self.end, position + len(chunk))
        if low < high and low == self.filled:
            self.data += chunk[low - position : high - position]


class StreamSource(ByteSource):
    """A stream read once at construction; `size` is its length, `pread` serves the kept windows.

    `StreamSource.fed(...)` makes one that is given the bytes instead (`feed`, then `finish`), so
    a pass that reads the stream for another purpose (an upload into the store) keeps the same
    windows and digests on the way (`member_digests`)."""

    def __init__(
        self,
        stream: IO[bytes] | None,
        name: str = "<stdin>",
        *,
        digests: bool = False,
        keep_head: int = KEEP_HEAD,
        keep_tail: int = KEEP_TAIL,
    ) -> None:
        self.name = name
        self.digests = digests
        self._keep = (keep_head, keep_tail)
        self._windows: list[_Window] = []
        self._open: list[_Window] = []
        self._hashing: list[_Hashing] = []
        self._hashed: dict[int, _Hashing] = {}
        self._want(0, keep_head)
        self._tail = bytearray()
        self._tar: _TarWatch | None = None
        self._first = bytearray()  # the stream's first block, until it is whole (a tar or not)
        self._position = 0
        self._size = -1
        if stream is not None:
            while chunk := _read(stream, CHUNK):
                self.feed(chunk)
            self.finish()

    @classmethod
    def fed(
        cls, name: str, *, digests: bool = False, keep_head: int = KEEP_HEAD, keep_tail: int = KEEP_TAIL
    ) -> StreamSource:
        """One to be given the stream's bytes in order with `feed`, and `finish`ed at its end."""
        return cls(None, name, digests=digests, keep_head=keep_head, keep_tail=keep_tail)

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the stream."""
        if self._size >= 0:
            raise ValueError("the stream was finished")
        if self._position == 0 and len(self._first) + len(chunk) < BLOCK:
            self._first += chunk  # whether it is a tar shows in its first whole block
            return
        if self._first:
            chunk, self._first = bytes(self._first) + chunk, bytearray()
        position = self._position
        if position == 0 and ova.sniff_ova(chunk[:BLOCK]):
            self._tar = _TarWatch(self)
        for window in self._open:
            window.take(position, chunk)
        # Each header read asks for windows (its entry's data, the next header) that may start
        # inside this very chunk: keep taking until no header is left to read in it.
        while self._tar is not None and self._tar.step():
            for window in self._open:
                window.take(position, chunk)
        self._open = [w for w in self._open if w.filled < w.end]
        for hashing in self._hashing:
            hashing.take(position, chunk)
        self._hashing = [h for h in self._hashing if h.fed < h.end]
        self._tail += chunk
        del self._tail[: max(0, len(self._tail) - self._keep[1])]
        self._position += len(chunk)

    def finish(self) -> None:
        """The stream ended: what it held is now what `size` and `pread` serve."""
        if self._size >= 0:
            return
        if self._first:
            first, self._first = bytes(self._first), bytearray()
            for window in self._open:
                window.take(0, first)
            self._tail += first
            self._position = len(first)
        self._size = self._position
        self._windows.append(_Window(self._size - len(self._tail), self._size, self._tail))

    def member_digests(self) -> dict[int, dict[str, str]]:
        """Each tar member hashed whole as it passed (`digests=True`): its data offset -> the
        hex digest by algorithm. What a catalog keeps so a later inspection verifies an OVA's
        manifest without reading it again (`DigestedSource`)."""
        return {
            start: {name: digest.hexdigest() for name, digest in hashing.hashes.items()}
            for start, hashing in self._hashed.items()
            if hashing.fed >= hashing.end
        }

    @property
    def size(self) -> int:
        return self._size

    def _want(self, start: int, end: int) -> _Window:
        window = _Window(start, end)
        self._windows.append(window)
        self._open.append(window)
        return window

    def _hash(self, start: int, end: int) -> None:
        hashing = _Hashing(start, end)
        self._hashing.append(hashing)
        self._hashed[start] = hashing

    def member_digest(self, data_offset: int, algorithm: str) -> str | None:
        """The digest of the tar member whose data starts at `data_offset`, hashed as it passed."""
        hashing = self._hashed.get(data_offset)
        if hashing is None or hashing.fed < hashing.end or algorithm.lower() not in hashing.hashes:
            return None
        return hashing.hashes[algorithm.lower()].hexdigest()

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        for window in self._windows:
            if window.start <= offset and offset + length <= window.filled:
                return bytes(window.data[offset - window.start : offset - window.start + length])
        raise StreamPassed(offset, length, *self._keep)


#: The manifest algorithms (DSP0243 §5.1; ovftool writes SHA256, older SHA1, some SHA512).
MANIFEST_ALGORITHMS = ("sha1", "sha256", "sha512")


class _Hashing:
    """A tar member's data hashed as it passes, in stream order."""

    def __init__(self, start: int, end: int) -> None:
        self.end = end
        self.fed = start
        self.hashes = {name: hashlib.new(name) for name in MANIFEST_ALGORITHMS}

    def take(self, position: int, chunk: bytes) -> None:
        low, high = max(self.fed, position), min(self.end, position + len(chunk))
        if low < high and low == self.fed:
            piece = memoryview(chunk)[low - position : high - position]
            for digest in self.hashes.values():
                digest.update(piece)
            self.fed = high


def _read(stream: IO[bytes], size: int) -> bytes:
    """`size` bytes, fewer only at the end: a pipe's read returns what has arrived so far."""
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class _TarWatch:
    """Walks an OVA's tar headers as the stream goes by, asking the source to keep what the OVA
    container and its members' parsers will read (see the module docstring)."""

    def __init__(self, source: StreamSource) -> None:
        self.source = source
        self.header = source._want(0, BLOCK)
        self.extension: _Window | None = None
        self.pax: dict[str, str] = {}
        self.long_name: str | None = None
        self.entries = 0
        self.done = False
        self.extension_flag = b""

    def step(self) -> bool:
        """Read the next header once its block (and any extension data before it) is kept; ask for
        what its entry needs. False: waiting for more of the stream, or done."""
        if self.done:
            return False
        if self.header.filled < self.header.end or (
            self.extension and self.extension.filled < self.extension.end
        ):
            return False
        if self.extension is not None:
            payload, flag, self.extension = bytes(self.extension.data), self.extension_flag, None
            try:
                if flag == ova.PAX_LOCAL:
                    self.pax.update(ova._pax_records(payload, 0))
                elif flag == ova.GNU_LONG_NAME:
                    self.long_name = ova._name(payload)
            except ImageError:
                return self._stop()
        block = bytes(self.header.data)
        if ova._zero(block) or self.entries > ova.MAX_ENTRIES * (ova.MAX_EXTENSIONS + 1):
            return self._stop()
        header = ova.TarHeader.unpack(block)
        try:
            size = ova.tar_number(header.size, "size", self.header.start)
        except ImageError:
            return self._stop()
        self.entries += 1
        data = self.header.start + BLOCK
        if header.typeflag in (ova.PAX_LOCAL, ova.PAX_GLOBAL, ova.GNU_LONG_NAME, ova.GNU_LONG_LINK):
            self.extension = self.source._want(data, data + min(size, ova.MAX_EXTENSION_SIZE))
            self.extension_flag = header.typeflag
        else:
            if self.pax.get("size", "").isdigit():
                size = int(self.pax["size"])
            name = (self.pax.get("path") or self.long_name or ova._name(header.name)).lower()
            cap = (
                ovf.MAX_OVF_SIZE
                if name.endswith(".ovf")
                else ova.MAX_MANIFEST_SIZE
                if name.endswith(".mf")
                else 0
            )
            if self.source.digests and header.typeflag in ova.FILES:
                self.source._hash(data, data + size)
            if cap:
                self.source._want(data, data + min(size, cap))
            else:
                self.source._want(data, data + min(size, MEMBER_HEAD))
                self.source._want(max(data, data + size - MEMBER_TAIL), data + size)
            self.pax, self.long_name = {}, None
        next_header = data + ova._blocks(size)
        self.header = self.source._want(next_header, next_header + BLOCK)
        return True

    def _stop(self) -> bool:
        """The end of the archive, or a header the OVA container will refuse: nothing more to keep."""
        self.done = True
        return False


class DigestedSource(ByteSource):
    """An image's bytes with the digests of its tar members taken when they passed once before
    (`StreamSource.member_digests`, kept by a catalog from the upload): an OVA's manifest is
    then verified against them, and nothing is read again for it. The digests must be of these
    very bytes: a catalog gives them only with the data they were taken from."""

    def __init__(self, data: ByteSource, digests: Mapping[int, Mapping[str, str]]) -> None:
        self.name = data.name
        self._data = data
        self._digests = digests

    @property
    def size(self) -> int:
        return self._data.size

    def pread(self, offset: int, length: int) -> bytes:
        return self._data.pread(offset, length)

    def unmetered(self) -> ByteSource:
        return self._data.unmetered()

    def member_digest(self, data_offset: int, algorithm: str) -> str | None:
        return self._digests.get(data_offset, {}).get(algorithm.lower())
