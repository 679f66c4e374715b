"""Compression wrappers around an image (gzip, xz, zstd, bzip2): named from the head, and
decompressed only as far as a bounded head, so that the image inside can be inspected.

A container (see `introspect.containers`), not a probed format: one `Container` per wrapper kind
is declared at the end of this module. Its one member is the decompressed head of the image (a
`DecompressedHead`, from `open_decompressed()`), inspected instead of the file.

Specs (the signatures below are declared beside them):
- gzip: RFC 1952 §2.3.1, the member header: ID1 ID2 CM FLG MTIME XFL OS (little-endian).
- xz: "The .xz File Format" 1.1.0 §2.1.1.1, the stream header magic bytes.
- zstd: RFC 8878 §3.1.1, the frame magic number 0xFD2FB528 (little-endian).
- bzip2: no formal spec; the stream header "BZh" and a level digit, then the first block header's
  48-bit magic 0x314159265359 (the BCD digits of pi), as bzip2's own decompress.c checks them.

Decompression bombs: at most `max_output` bytes come out (4 MiB by default: a head, not the
image) from at most `max_input` bytes read through the metered `Reader`, in a bounded number of
steps, members and reads; xz and zstd decoders are also held to a memory limit.

The guest's disk, where the cost stays bounded: every wrapper here (gzip, xz, zstd, and bz2; zstd
only where `zstandard` is installed) gives the guest pass what it gave the header pass, the
decompressed head and nothing more: nothing is decompressed again, or further. The member's
format reads its guest view over `guest_source(member)`:

- an image of at most `DECOMPRESSED_HEAD_SIZE` (4 MiB) decompressed is whole in its head: its
  view reads every byte, as over a file;
- a larger one is read as far as its first 4 MiB go: a raw disk's partition table and what of its
  first partition lies there; a sparse format's (VMDK monolithicSparse, VHD, VHDX, qcow2) tables
  and the blocks its writer put first. Any read past the head raises `NotDecompressed` (a
  `BytesNotKept` of the rule `compressed.partial`): the guest layer reports facts as partial, never
  zeros for bytes it did not see. A stream-optimized VMDK whose grain directory is in its footer,
  at the end, has no view at all (its header pass cannot reach the footer).
"""

from __future__ import annotations

import bz2
import functools
import importlib
import lzma
import zlib
from collections.abc import Callable
from typing import Any, Literal, Protocol

from introspect.containers.base import Container, Member, Unpacked
from introspect.decode import MIB
from introspect.errors import BadField, BytesNotKept, TruncatedImage
from introspect.model import Finding, Severity
from introspect.safety import Policy, rule
from introspect.sources import HEAD_SIZE, ByteSource, Reader
from introspect.structure import BigEndianStructure, LittleEndianStructure, char, chars, u8, u32

CORRUPT = rule("compressed.corrupt", Severity.REJECT, "the compressed stream around the image is damaged")
PARTIAL = rule("compressed.partial", Severity.INFO, "only the head of a compressed image was decompressed")
UNSUPPORTED = rule(
    "compressed.unsupported",
    Severity.REJECT,
    "the image is compressed with a method this installation cannot decompress",
)

Compression = Literal["gzip", "xz", "zstd", "bz2"]

#: How much of the image a head holds: every format's metadata sits well within it.
DECOMPRESSED_HEAD_SIZE = 4 * MIB
#: The most compressed input read to fill a head (incompressible data needs about as much).
MAX_COMPRESSED_INPUT = 4 * MIB
#: Compressed input is read in chunks this size (after the first HEAD_SIZE, which is cached).
INPUT_CHUNK = 1 * MIB
#: Bounds on the decoding loop: concatenated members/streams, and decoder calls.
MAX_MEMBERS = 1024
MAX_STEPS = 8192
#: Decoder memory: xz -9 needs 65 MiB (its 64 MiB dictionary); zstd's own default refuses windows
#: beyond 2^27 (ZSTD_WINDOWLOG_LIMIT_DEFAULT) unless told --long.
MAX_DECODER_MEMORY = 128 * MIB
MAX_ZSTD_WINDOW = 1 << 27
#: Input given to the zstd decoder per call, which bounds its output per call (see `_Unzstd`).
ZSTD_FEED = 256

ADVICE = "the compressed file is damaged: compress the image again and upload it"


class GzipMemberHeader(LittleEndianStructure):
    """RFC 1952 §2.3.1, the fixed part of a gzip member header."""

    id1: int = u8()
    id2: int = u8()
    cm: int = u8()
    flg: int = u8()
    mtime: int = u32()
    xfl: int = u8()
    os: int = u8()


#: RFC 1952 §2.3.1: ID1, ID2; CM 8 is deflate (the only method gzip defines); FLG bits 5-7 are
#: reserved and must be zero.
GZIP_ID1 = 0x1F
GZIP_ID2 = 0x8B
GZIP_CM_DEFLATE = 8
GZIP_RESERVED_BITS = (5, 6, 7)
GZIP_FLG_RESERVED = sum(1 << bit for bit in GZIP_RESERVED_BITS)
#: zlib's window bits for "a gzip member, with its header and trailer checked".
GZIP_WBITS = 16 + zlib.MAX_WBITS
#: .xz §2.1.1.1 Header Magic Bytes.
XZ_MAGIC = b"\xfd7zXZ\x00"
#: RFC 8878 §3.1.1 Magic_Number 0xFD2FB528, little-endian.
ZSTD_MAGIC = (0xFD2FB528).to_bytes(4, "little")


class Bzip2StreamHeader(BigEndianStructure):
    """bzip2's stream header ("BZh", the level '1'-'9') and the first block header's magic."""

    magic: bytes = chars(3)
    level: bytes = char()
    block_magic: bytes = chars(6)


BZIP2_MAGIC = b"BZh"
BZIP2_LEVELS = b"123456789"
BZIP2_BLOCK_MAGIC = bytes.fromhex("314159265359")


def sniff(head: bytes) -> Compression | None:
    """The compression wrapper whose signature starts the head, if any."""
    if len(head) >= GzipMemberHeader.SIZE:
        gzip = GzipMemberHeader.unpack(head)
        if (gzip.id1, gzip.id2, gzip.cm) == (GZIP_ID1, GZIP_ID2, GZIP_CM_DEFLATE) and not (
            gzip.flg & GZIP_FLG_RESERVED
        ):
            return "gzip"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if len(head) >= Bzip2StreamHeader.SIZE:
        bzip2 = Bzip2StreamHeader.unpack(head)
        if (
            bzip2.magic == BZIP2_MAGIC
            and bzip2.level in BZIP2_LEVELS
            and (bzip2.block_magic == BZIP2_BLOCK_MAGIC)
        ):
            return "bz2"
    return None


class DecompressedHead(ByteSource):
    """The first bytes of the image inside a compressed file, decompressed once and held in memory.

    `size` is the number of bytes held. When `complete` is False the image goes on past them (the
    output cap was reached, or the input cap), so a parser cannot know the image's real end.
    """

    def __init__(
        self, data: bytes, *, name: str, kind: Compression, complete: bool, compressed_read: int
    ) -> None:
        self._data = data
        self.name = name
        self.kind = kind
        self.complete = complete
        self.compressed_read = compressed_read

    @property
    def size(self) -> int:
        return len(self._data)

    def pread(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]


#: The size a head whose image goes on claims: past any offset a table can name, so that reads of
#: the image's unknown end are reads past the head (`NotDecompressed`), never the end of the file.
UNKNOWN_END = 1 << 62


class NotDecompressed(BytesNotKept):
    """A read past the decompressed head of an image whose stream goes on."""

    def __init__(self, offset: int, length: int, head: int) -> None:
        super().__init__(
            PARTIAL,
            f"bytes {offset}..{offset + length} of the compressed image lie past the {head} bytes "
            "decompressed (introspect decompresses a head, never the whole image): facts that need them "
            "are unknown; decompress the image and upload it to inspect it whole",
            offset=offset,
        )


class EndUnknown(ByteSource):
    """A member whose end is unknown (a decompressed head whose image goes on), as the header pass
    reads it: it claims the largest size (`UNKNOWN_END`), and a read past the head comes back short,
    which a header parser checking a table against the end of the file reports."""

    def __init__(self, head: ByteSource) -> None:
        self._head = head
        self.name = head.name

    @property
    def size(self) -> int:
        return UNKNOWN_END

    def pread(self, offset: int, length: int) -> bytes:
        return self._head.pread(offset, length)

    def unmetered(self) -> ByteSource:
        """The guest pass reads the head as `HeadOfStream`: a read past it is refused, never short."""
        return HeadOfStream(self._head.unmetered())


class HeadOfStream(EndUnknown):
    """A decompressed head whose image goes on, as the guest pass reads it: its head is served, and
    a read past it raises `NotDecompressed` where the header pass's view (`EndUnknown`) is short."""

    def pread(self, offset: int, length: int) -> bytes:
        data = self._head.pread(offset, length)
        if len(data) < length:
            raise NotDecompressed(offset, length, self._head.size)
        return data


def guest_source(member: Member) -> ByteSource:
    """What a format's guest view of `member` reads: the member itself when it is whole, else its
    head, past which reads raise `NotDecompressed` (see the module docstring)."""
    return member.source if member.complete else HeadOfStream(member.source)


def zstd_available() -> bool:
    """Python 3.11 has no zstd in its standard library; `zstandard` may be installed."""
    return _zstandard() is not None


def cannot_decompress(kind: Compression) -> Finding:
    """The finding for a wrapper that was named but cannot be opened here."""
    return UNSUPPORTED.finding(
        f"the image is {kind}-compressed and this installation cannot decompress {kind} (Python 3.11 "
        "has no zstd and the `zstandard` package is not installed): decompress it and upload the image itself"
    )


def open_decompressed(
    reader: Reader,
    kind: Compression,
    *,
    max_output: int = DECOMPRESSED_HEAD_SIZE,
    max_input: int = MAX_COMPRESSED_INPUT,
) -> DecompressedHead | None:
    """Decompress the head of the image inside `reader`'s file; None when `kind` is unavailable.

    Raises TruncatedImage when the compressed stream stops before its end, BadField (CORRUPT) when
    it is damaged, and BudgetExceeded when the reader's budget runs out first.
    """
    zstandard = _zstandard()
    if kind == "zstd" and zstandard is None:
        return None
    corrupt: tuple[type[Exception], ...] = (OSError, zlib.error, lzma.LZMAError)
    if zstandard is not None:
        corrupt = (*corrupt, zstandard.ZstdError)
    source = _CompressedInput(reader, max_input, f"{kind} stream")
    # One byte past the cap tells a head that fills it exactly from one that goes on.
    limit = max_output + 1
    try:
        new_decoder = functools.partial(_Unzstd, zstandard) if kind == "zstd" else _DECODERS[kind]
        data, ended = _decode(new_decoder, source, limit)
    except EOFError:
        raise TruncatedImage(f"{kind} stream", offset=reader.size, length=1, size=reader.size) from None
    except corrupt as error:
        raise BadField(
            CORRUPT, f"the {kind} stream", str(error), f"valid {kind} data", advice=ADVICE
        ) from None
    return DecompressedHead(
        data[:max_output],
        name=reader.source.name,
        kind=kind,
        complete=ended and len(data) <= max_output,
        compressed_read=source.offset,
    )


class _CompressedInput:
    """The compressed bytes, in a bounded number of metered reads: the cached head, then chunks."""

    def __init__(self, reader: Reader, max_input: int, what: str) -> None:
        self.reader = reader
        self.max_input = max_input
        self.what = what
        self.offset = 0
        self.capped = False

    def chunk(self) -> bytes:
        """The next bytes of input; b"" at the end of the file or of the input allowance."""
        if self.offset >= self.reader.size:
            return b""
        if self.offset >= self.max_input:
            self.capped = True
            return b""
        length = min(HEAD_SIZE if self.offset == 0 else INPUT_CHUNK, self.max_input - self.offset)
        data = self.reader.read_upto(self.offset, length, self.what)
        self.offset += len(data)
        return data


class _Decoder(Protocol):
    """What lzma's and bz2's decompressors offer, and `_Gunzip` imitates."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class _Gunzip:
    """One gzip member through zlib (header and CRC checked), with the lzma/bz2 decoder interface."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(GZIP_WBITS)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    @property
    def needs_input(self) -> bool:
        return not self._tail

    @property
    def unused_data(self) -> bytes:
        return self._zlib.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._zlib.decompress(self._tail + data, max_length)
        self._tail = self._zlib.unconsumed_tail
        return out


class _Unzstd:
    """One zstd frame through `zstandard`'s decompressobj, with the lzma/bz2 decoder interface.

    That decompressobj has no output limit, so it is fed ZSTD_FEED bytes at a time: a zstd block
    takes at least 4 bytes (an RLE block) for at most 128 KiB out, so one call yields at most 8 MiB.
    """

    def __init__(self, zstandard: Any) -> None:
        self._zstd = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).decompressobj()
        self._input = b""
        self._position = 0
        self._extra = b""

    @property
    def eof(self) -> bool:
        return bool(self._zstd.eof) and not self._extra

    @property
    def needs_input(self) -> bool:
        return self._position >= len(self._input) and not self._extra

    @property
    def unused_data(self) -> bytes:
        return bytes(self._zstd.unused_data) + self._input[self._position :]

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if data:
            self._input, self._position = self._input[self._position :] + data, 0
        out = bytearray(self._extra)
        view = memoryview(self._input)
        while len(out) < max_length and self._position < len(self._input) and not self._zstd.eof:
            piece = view[self._position : self._position + ZSTD_FEED]
            self._position += len(piece)
            out += self._zstd.decompress(piece)
        self._extra = bytes(out[max_length:])
        return bytes(out[:max_length])


_DECODERS: dict[str, Callable[[], _Decoder]] = {
    "gzip": _Gunzip,
    "xz": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=MAX_DECODER_MEMORY),
    "bz2": bz2.BZ2Decompressor,
}


def _decode(new_decoder: Callable[[], _Decoder], source: _CompressedInput, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes, across concatenated members; and whether the input ended there."""
    decoder: _Decoder | None = new_decoder()
    out = bytearray()
    pending = b""  # input read but not yet given to a decoder
    members = 1
    for _ in range(MAX_STEPS):
        room = limit - len(out)
        if not room:
            return bytes(out), False
        if decoder is None:
            # Between members: NUL padding may follow (gzip and xz allow it), then another member.
            pending = pending.lstrip(b"\0")
            if not pending:
                pending = source.chunk()
                if not pending:
                    return bytes(out), not source.capped
                continue
            if members >= MAX_MEMBERS:
                return bytes(out), False
            decoder = new_decoder()
            members += 1
        if decoder.needs_input and not pending:
            pending = source.chunk()
            if not pending:
                produced = decoder.decompress(b"", room)
                if produced:
                    out += produced
                    continue
                if source.capped:
                    return bytes(out), False
                raise EOFError("the compressed stream ends before its end marker")
        out += decoder.decompress(pending, room)
        pending = b""
        if decoder.eof:
            pending = decoder.unused_data
            decoder = None
    return bytes(out), False


def _zstandard() -> Any:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        return None


# --- The containers ----------------------------------------------------------------------------


def partial(member: Member, needed: str | None) -> Finding:
    """A head that does not reach the image's end: what is unknown, and what to do."""
    return PARTIAL.finding(
        f"only the first {member.source.size} decompressed bytes were read"
        + (f" and the image needs more ({needed})" if needed else "")
        + "; facts that need the end of the image (a raw disk's size, a trailing footer) are "
        "unknown: decompress it to inspect it whole"
    )


def _sniffer(kind: Compression, magic: bytes) -> Callable[[bytes], bool]:
    """`sniff()` for one kind, asked only of heads that start with its first magic bytes."""

    def sniff_kind(head: bytes) -> bool:
        return head.startswith(magic) and sniff(head) == kind

    return sniff_kind


def _opener(kind: Compression) -> Callable[[Reader, Policy], Unpacked]:
    """One member, the decompressed head; none (and a finding) when `kind` is unavailable here."""

    def open_kind(reader: Reader, policy: Policy) -> Unpacked:
        head = open_decompressed(reader, kind)
        if head is None:
            return Unpacked(findings=[cannot_decompress(kind)])
        return Unpacked(members=(Member(head.name, head, complete=head.complete),), boot=0)

    return open_kind


GZIP = Container(
    name="gzip", sniff=_sniffer("gzip", bytes((GZIP_ID1, GZIP_ID2))), open=_opener("gzip"), partial=partial
)
XZ = Container(name="xz", sniff=_sniffer("xz", XZ_MAGIC), open=_opener("xz"), partial=partial)
ZSTD = Container(name="zstd", sniff=_sniffer("zstd", ZSTD_MAGIC), open=_opener("zstd"), partial=partial)
BZ2 = Container(name="bz2", sniff=_sniffer("bz2", BZIP2_MAGIC), open=_opener("bz2"), partial=partial)
