"""Where an image's bytes come from, and the one metered reader every parser goes through.

A `ByteSource` is random access to bytes: a local file (`os.pread`, no seek state), an open file,
bytes in memory, a slice of another source, or an HTTP(S) URL read with Range requests.
Parsers never touch a source directly: they get a `Reader`, which enforces the inspection's
`Budget`, counts reads and bytes for the report, serves repeated reads of the head and tail
from memory, and raises `TruncatedImage` when a structure runs past the end of the file.
"""

from __future__ import annotations

import io
import os
import re
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import IO, TYPE_CHECKING, NamedTuple, Self

from introspect.decode import KIB, MIB
from introspect.errors import BudgetExceeded, SourceError, TruncatedImage, UsageError

if TYPE_CHECKING:
    import httpx

#: Every probe sees the first HEAD_SIZE bytes: enough for the ISO 9660 primary volume descriptor
#: (at 32 KiB), a GPT and its 128 entries, a LUKS2 header with its default 12 KiB JSON area, a
#: VMDK sparse header with its embedded descriptor, and every other format's header.
HEAD_SIZE = 64 * KIB
#: ...and the last TAIL_SIZE bytes: a fixed VHD's footer, a DMG's koly block.
TAIL_SIZE = 512
#: The longest one HttpSource may take from its first request to its last byte, whatever the
#: server does: a stalled or trickling server is a SourceError then, never an endless inspection.
DEFAULT_HTTP_DEADLINE = 120.0


class ByteSource(ABC):
    """Random access to an image's bytes. Implementations need not count or bound anything."""

    name: str

    @property
    @abstractmethod
    def size(self) -> int:
        """Length in bytes."""

    @abstractmethod
    def pread(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`; fewer only at the end of the data."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing
        """Release what the source holds."""

    def unmetered(self) -> ByteSource:
        """The same bytes without the meters in between: a member's slice read straight from the
        file rather than through the archive's Reader, so that a second pass over it (the guest
        pass, with its own budget) is counted by its own Reader only."""
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FileSource(ByteSource):
    """A local file or block device, read with `os.pread` so that nothing depends on a file
    position. Anything else is refused before it is opened: opening a FIFO blocks until a writer
    comes, and a socket or character device has no size to inspect."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        try:
            _refuse_special(self.name, os.stat(self.name).st_mode)  # noqa: PTH116  # a Path costs ~5 µs an image
            # O_NONBLOCK: a FIFO swapped in after the stat still cannot block the open.
            self._fd = os.open(self.name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise UsageError(f"{self.name}: no such file") from None
        except PermissionError:
            raise UsageError(f"{self.name}: permission denied") from None
        except OSError as error:
            raise UsageError(f"{self.name}: {error.strerror}") from None
        try:
            opened = os.fstat(self._fd)
            _refuse_special(self.name, opened.st_mode)
        except UsageError:
            os.close(self._fd)
            raise
        # A block device's size is its end; a regular file's is in the stat already.
        self._size = opened.st_size if stat.S_ISREG(opened.st_mode) else os.lseek(self._fd, 0, os.SEEK_END)

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        first = os.pread(self._fd, length, offset) if length > 0 else b""
        if len(first) == length or not first:
            return first  # all of it in one read, as a regular file gives it, or the end
        chunks = [first]
        offset += len(first)
        length -= len(first)
        while length > 0:
            chunk = os.pread(self._fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


#: What a path may name besides a regular file or a block device, as said in a refusal.
_SPECIAL = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a FIFO (named pipe), not an image file"),
    (stat.S_ISSOCK, "is a socket, not an image"),
    (stat.S_ISCHR, "is a character device, not an image"),
)


def _refuse_special(name: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return  # what nearly every path names: asked first
    for test, what in _SPECIAL:
        if test(mode):
            raise UsageError(f"{name}: {what}")
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise UsageError(f"{name}: not a regular file or block device")


class BytesSource(ByteSource):
    """Bytes in memory (tests, fuzzing, decompressed heads)."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self._data = data
        self.name = name

    @property
    def size(self) -> int:
        return len(self._data)

    def pread(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]


class OpenFileSource(ByteSource):
    """An open binary file the caller owns (we never close it): read with `os.pread` when it has
    a descriptor, else with seek and read (io.BytesIO, a spooled upload), restoring its position."""

    def __init__(self, file: IO[bytes], name: str | None = None) -> None:
        self._file = file
        self.name = name or str(getattr(file, "name", "<file>"))
        try:
            self._fd: int | None = file.fileno()
        except (OSError, AttributeError, io.UnsupportedOperation):
            self._fd = None
        if self._fd is not None:
            self._size = os.fstat(self._fd).st_size
        elif file.seekable():
            position = file.tell()
            self._size = file.seek(0, os.SEEK_END)
            file.seek(position)
        else:
            raise UsageError(f"{self.name}: cannot seek in this file; pass a path or a ByteSource")

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, length, offset)
        position = self._file.tell()
        try:
            self._file.seek(offset)
            return self._file.read(length)
        finally:
            self._file.seek(position)


class SliceSource(ByteSource):
    """`length` bytes of another source from `start`: one member of an archive, seen as a file."""

    def __init__(self, parent: ByteSource, start: int, length: int, name: str) -> None:
        self._parent = parent
        self._start = start
        self._length = max(0, min(length, parent.size - start))
        self.name = name

    @property
    def size(self) -> int:
        return self._length

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._length - offset))
        return self._parent.pread(self._start + offset, length) if length else b""

    def unmetered(self) -> SliceSource:
        return SliceSource(self._parent.unmetered(), self._start, self._length, self.name)


class HttpSource(ByteSource):
    """An image served over HTTP(S), read with `Range: bytes=a-b` requests (RFC 9110 §14): only
    the bytes the parsers ask for cross the network, never the image. The size comes from HEAD
    (or a one-byte range). A server that cannot say its size or serve ranges is a UsageError
    (nothing to retry); a transport failure or a 5xx/429 is a SourceError (retry later).

    What a server cannot make us do: follow a redirect to another origin (unless
    `cross_origin_redirects`) or more than MAX_REDIRECTS of them; decode a content encoding we did
    not ask for (its encoded bytes would be inspected as the image); keep reading past `deadline`
    seconds from the first request, however slowly it trickles (each read also has `timeout`).
    """

    #: Answers that may pass on their own: the caller should retry, not judge the image.
    TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
    CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")
    #: RFC 9110 §15.4: the redirections a client may follow with the same method.
    REDIRECTS = frozenset({301, 302, 303, 307, 308})
    MAX_REDIRECTS = 5

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        deadline: float = DEFAULT_HTTP_DEADLINE,
        cross_origin_redirects: bool = False,
        client: httpx.Client | None = None,
    ) -> None:
        import httpx  # here, not at the top: only URLs pay its 0.2 s of import

        self.name = url
        self._url = httpx.URL(url)
        self._deadline = deadline
        self._cross_origin = cross_origin_redirects
        self._started: float | None = None
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        try:
            self._size = self._measure()
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int:
        return self._size

    def _remaining(self) -> float:
        """Seconds left before the deadline; a SourceError once it has passed."""
        now = time.monotonic()
        if self._started is None:
            self._started = now
        left = self._deadline - (now - self._started)
        if left <= 0:
            raise SourceError(
                f"{self.name} did not deliver the bytes asked for within {self._deadline:g} s: "
                "the server is too slow or stalled; try again later"
            )
        return left

    @contextmanager
    def _request(self, method: str, headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """One request whose body is left unread: the caller reads what it asked for and no more
        (a server that ignores a range, or lies in one, would otherwise send us the image)."""
        import httpx

        try:
            for _ in range(self.MAX_REDIRECTS + 1):
                left = self._remaining()
                timeout = httpx.Timeout(min(left, self._client.timeout.read or left))
                with self._client.stream(method, self._url, headers=headers, timeout=timeout) as response:
                    if response.status_code in self.REDIRECTS:
                        self._url = self._redirected(response)
                        continue
                    if response.status_code in self.TRANSIENT_STATUS:
                        raise SourceError(
                            f"{self.name} answered {response.status_code} {response.reason_phrase}"
                        )
                    if response.status_code >= 400:
                        raise UsageError(
                            f"{self.name} answered {response.status_code} {response.reason_phrase}"
                        )
                    encoding = response.headers.get("content-encoding", "identity").strip().lower()
                    if encoding not in ("", "identity"):
                        raise UsageError(
                            f"{self.name} sent its bytes {encoding}-encoded although identity was "
                            "asked: serve the image as stored, without a content encoding"
                        )
                    yield response
                    return
            raise UsageError(f"{self.name} redirects more than {self.MAX_REDIRECTS} times (a loop?)")
        except httpx.TimeoutException as error:
            self._remaining()  # past the deadline: say so rather than "timed out"
            raise SourceError(f"cannot read {self.name}: {error or 'timed out'}") from error
        except httpx.TransportError as error:
            raise SourceError(f"cannot read {self.name}: {error}") from error
        except httpx.HTTPError as error:
            raise UsageError(f"cannot read {self.name}: {error}") from error

    def _redirected(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise UsageError(f"{self.name} answered {response.status_code} without a Location")
        target = self._url.join(location)
        same_origin = (target.scheme, target.host, target.port) == (
            self._url.scheme,
            self._url.host,
            self._url.port,
        )
        if not same_origin and not self._cross_origin:
            raise UsageError(
                f"{self.name} redirects to another origin ({target.scheme}://{target.host}"
                f"{f':{target.port}' if target.port else ''}): inspect that URL itself if you trust it"
            )
        return target

    def _measure(self) -> int:
        with self._request("HEAD") as head:
            length = head.headers.get("content-length")
            if head.status_code == 200 and length is not None and length.isdigit():
                return int(length)
        with self._request("GET", {"Range": "bytes=0-0", **_AS_STORED}) as probe:
            match = self.CONTENT_RANGE.fullmatch(probe.headers.get("content-range", ""))
            if probe.status_code != 206 or match is None:
                raise UsageError(f"{self.name} says neither its size nor serves byte ranges")
            return int(match.group(1))

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        with self._request(
            "GET", {"Range": f"bytes={offset}-{offset + length - 1}", **_AS_STORED}
        ) as response:
            if response.status_code != 206:
                raise UsageError(
                    f"{self.name} ignored a byte range request ({response.status_code}): serve it with "
                    "Range support, so that images are not downloaded whole"
                )
            return self._read_at_most(response, length)

    def _read_at_most(self, response: httpx.Response, limit: int) -> bytes:
        """The first `limit` bytes of a streamed body. A body of the size asked is read to its end
        (so the connection can serve the next range); past `limit`, reading stops within a chunk.
        The deadline is checked between chunks: a server trickling a byte at a time stops there."""
        import httpx

        received = bytearray()
        try:
            for chunk in response.iter_raw():
                if len(received) == limit:
                    break  # more than was asked for: the rest stays unread
                received += chunk[: limit - len(received)]
                if len(received) < limit:
                    self._remaining()
        except httpx.TimeoutException as error:
            self._remaining()
            raise SourceError(f"cannot read {self.name}: {error or 'timed out'}") from error
        except httpx.TransportError as error:
            raise SourceError(f"cannot read {self.name}: {error}") from error
        return bytes(received)

    def close(self) -> None:
        if self._own_client:
            self._client.close()


#: Ranges of the bytes as stored: a compressed body could expand past any cap in one chunk.
_AS_STORED = {"Accept-Encoding": "identity"}


def is_url(name: str) -> bool:
    """http:// and https:// names are read with HttpSource; anything else is a local path."""
    return name.startswith(("http://", "https://"))


class Budget(NamedTuple):
    """How much one inspection may read. A well-formed image of any format needs far less."""

    max_bytes: int = 8 * MIB
    max_reads: int = 64
    max_read_size: int = 4 * MIB


#: The header pass's budget, made once (a frozen dataclass made for every Reader cost ~1 µs).
HEADER_BUDGET = Budget()
#: The guest pass's own budget (the header pass keeps `HEADER_BUDGET`): room for a partition table, LVM
#: metadata, a few filesystems' superblocks and inodes, os-release, an ELF header and a hive's cells.
GUEST_BUDGET = Budget(max_bytes=4 * MIB, max_reads=512)


class Reader:
    """The one metered way to read an image: budgeted, counted, cached for head and tail.

    `read` returns exactly the bytes asked for or raises `TruncatedImage`; `read_upto` may
    return fewer at the end of the file. Both raise `BudgetExceeded` past the budget.
    """

    def __init__(self, source: ByteSource, budget: Budget | None = None) -> None:
        self.source = source
        self.budget = budget or HEADER_BUDGET
        self.size = source.size
        self.bytes_read = 0
        self.reads = 0
        self._cache: list[tuple[int, bytes]] = []

    def read(self, offset: int, length: int, what: str) -> bytes:
        data = self.read_upto(offset, length, what)
        if len(data) < length:
            raise TruncatedImage(what, offset=offset, length=length, size=self.size)
        return data

    def read_upto(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0:
            raise TruncatedImage(what, offset=offset, length=length, size=self.size)
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        for start, data in self._cache:
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start : offset - start + length]
        if length > self.budget.max_read_size:
            raise BudgetExceeded(
                what, limit=f"{length} bytes in one read, at most {self.budget.max_read_size}"
            )
        if self.reads + 1 > self.budget.max_reads:
            raise BudgetExceeded(what, limit=f"at most {self.budget.max_reads} reads")
        if self.bytes_read + length > self.budget.max_bytes:
            raise BudgetExceeded(what, limit=f"at most {self.budget.max_bytes} bytes")
        data = self.source.pread(offset, length)
        self.reads += 1
        self.bytes_read += len(data)
        return data

    def keep(self, offset: int, data: bytes) -> None:
        """Remember bytes already read (the head, the tail) so parsers re-read them for free."""
        if not any(start == offset and len(kept) == len(data) for start, kept in self._cache):
            self._cache.append((offset, data))

    def head(self) -> bytes:
        """The first HEAD_SIZE bytes (or the whole file), read once."""
        data = self.read_upto(0, HEAD_SIZE, "head")
        self.keep(0, data)
        return data

    def tail(self) -> bytes:
        """The last TAIL_SIZE bytes, read once (free when the head already covers them)."""
        start = max(0, self.size - TAIL_SIZE)
        data = self.read_upto(start, self.size - start, "tail")
        self.keep(start, data)
        return data
