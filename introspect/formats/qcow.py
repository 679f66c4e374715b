"""QEMU copy-on-write version 1: a 48-byte header, then the backing file name and the L1 table.

qcow v1 has no written spec; its header is `QCowHeader` in qemu's block/qcow.c, and the limits
below are the ones qemu's `qcow_open()` enforces (the image is judged as qemu would judge it).
It shares its magic and leading version field with qcow2 (declared there): version 1 is qcow.

The guest view maps the disk as qemu's `get_cluster_offset()` does: the L1 table (`l1_size`
entries) points to L2 tables of 2^l2_bits entries, each the offset of a data cluster, or with
bit 63 set, a compressed cluster (zlib, raw deflate) and its size. Both tables are big-endian
64-bit entries, read a page at a time as lookups need them (`introspect.formats.blockmap`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field

from introspect.decode import c_string
from introspect.errors import BadField, ImageError, TruncatedImage
from introspect.formats.base import Format, Head, Inspection, backing_file_finding
from introspect.formats.blockmap import BlockMappedView, Span, Table
from introspect.formats.qcow2 import (
    QCOW1_VERSION,
    QCOW_MAGIC,
    TABLE_ENTRY,
    MagicVersion,
    cached_clusters,
    decompress,
)
from introspect.lru import Lru
from introspect.model import Finding, Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import GUEST_ENCRYPTED, Policy, rule
from introspect.sources import Reader
from introspect.structure import BigEndianStructure, chars, pad, u8, u32, u64

BAD_HEADER = rule("qcow.bad_header", Severity.REJECT, "a qcow header field holds a value qemu refuses")
BACKING_FILE = rule("qcow.backing_file", Severity.REJECT, "the image names a backing file", names_files=True)
AES_ENCRYPTION = rule("qcow.aes_encryption", Severity.REJECT, "the image uses qcow's AES-CBC encryption")
BAD_MAPPING = rule(
    "qcow.bad_mapping",
    Severity.REJECT,
    "an L2 table entry, or the compressed cluster it points to, is malformed",
)

CONVERT = "qemu cannot open such an image; re-export it from its source, e.g. as qcow2"
#: What qemu does when a read meets a malformed table entry, and the fix.
CORRUPT_MAPPING = "qemu fails every read of that cluster; re-export the disk from its source, e.g. as qcow2"

#: qemu's bounds: clusters of 512 bytes to 64 KiB, L2 tables of 512 bytes to 64 KiB (8-byte
#: entries, so 2^6 to 2^13 of them), an L1 table of at most INT_MAX bytes.
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 16
L2E_SIZE = 8
L1E_SIZE = 8
MIN_L2_BITS = MIN_CLUSTER_BITS - 3
MAX_L2_BITS = MAX_CLUSTER_BITS - 3
MAX_L1_ENTRIES = (2**31 - 1) // L1E_SIZE
#: The unit of qcow's sector counts (block/qcow.c BDRV_SECTOR_SIZE).
SECTOR_SIZE = 512
#: qemu refuses images of 0 or 1 byte ("must be at least 2 bytes").
MIN_SIZE = 2
#: The backing file name is read into qemu's 1024-byte buffer, NUL included.
MAX_BACKING_FILE_SIZE = 1023
CRYPT_METHODS: dict[int, Literal["none", "aes"]] = {0: "none", 1: "aes"}


class QCowHeader(BigEndianStructure):
    """The qcow version 1 header (block/qcow.c `QCowHeader`)."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(4)
    version: int = u32()
    backing_file_offset: int = u64()
    backing_file_size: int = u32()
    mtime: int = u32()
    size: int = u64()
    cluster_bits: int = u8()
    l2_bits: int = u8()
    padding: None = pad(2)
    crypt_method: int = u32()
    l1_table_offset: int = u64()


class QcowDetails(Frozen):
    """A qcow version 1 header, as the image states it."""

    format: Literal["qcow"] = "qcow"
    version: int
    size: int = Field(description="the header's virtual disk size field, in bytes")
    cluster_bits: int
    cluster_size: int
    l2_bits: int = Field(description="log2 of the entries in an L2 table")
    encryption: Literal["none", "aes"]
    mtime: int = Field(description="the header's mtime field (qemu writes the backing file's, or 0)")
    l1_table_offset: int
    l1_size: int = Field(description="entries in the L1 table, from the size, cluster and L2 bits")
    backing_file: str | None
    backing_file_offset: int
    backing_file_size: int


def probe(head: Head) -> bool:
    if len(head.data) < MagicVersion.SIZE:
        return False
    prefix = MagicVersion.unpack(head.data)
    return prefix.magic == QCOW_MAGIC and prefix.version == QCOW1_VERSION


def inspect(reader: Reader, policy: Policy) -> Inspection[QcowDetails]:
    header = QCowHeader.read(reader, "qcow header")
    if header.size < MIN_SIZE:
        raise BadField(BAD_HEADER, "size", header.size, f"at least {MIN_SIZE} bytes", advice=CONVERT)
    if not MIN_CLUSTER_BITS <= header.cluster_bits <= MAX_CLUSTER_BITS:
        raise BadField(
            BAD_HEADER,
            "cluster_bits",
            header.cluster_bits,
            f"{MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS} (512-byte to 64 KiB clusters)",
            advice=CONVERT,
        )
    if not MIN_L2_BITS <= header.l2_bits <= MAX_L2_BITS:
        raise BadField(
            BAD_HEADER,
            "l2_bits",
            header.l2_bits,
            f"{MIN_L2_BITS}..{MAX_L2_BITS} (512-byte to 64 KiB L2 tables)",
            advice=CONVERT,
        )
    encryption = CRYPT_METHODS.get(header.crypt_method)
    if encryption is None:
        raise BadField(BAD_HEADER, "crypt_method", header.crypt_method, "0 (none) or 1 (AES)", advice=CONVERT)
    bytes_per_l1_entry = 1 << (header.cluster_bits + header.l2_bits)
    l1_size = -(-header.size // bytes_per_l1_entry)
    if l1_size > MAX_L1_ENTRIES:
        raise BadField(
            BAD_HEADER,
            "size",
            header.size,
            f"at most {MAX_L1_ENTRIES * bytes_per_l1_entry} bytes with these cluster and L2 sizes",
            advice=CONVERT,
        )
    if header.l1_table_offset + l1_size * L1E_SIZE > reader.size:
        raise TruncatedImage(
            "qcow L1 table", offset=header.l1_table_offset, length=l1_size * L1E_SIZE, size=reader.size
        )
    details = QcowDetails(
        version=header.version,
        size=header.size,
        cluster_bits=header.cluster_bits,
        cluster_size=1 << header.cluster_bits,
        l2_bits=header.l2_bits,
        encryption=encryption,
        mtime=header.mtime,
        l1_table_offset=header.l1_table_offset,
        l1_size=l1_size,
        backing_file=_backing_file(reader, header),
        backing_file_offset=header.backing_file_offset,
        backing_file_size=header.backing_file_size,
    )
    # qemu counts the disk in whole 512-byte sectors (bs->total_sectors = size / 512).
    return Inspection(details, header.size - header.size % SECTOR_SIZE)


def _backing_file(reader: Reader, header: QCowHeader) -> str | None:
    """The backing file name: recorded, never opened."""
    if header.backing_file_offset == 0:
        return None
    if header.backing_file_size > MAX_BACKING_FILE_SIZE:
        raise BadField(
            BAD_HEADER,
            "backing_file_size",
            header.backing_file_size,
            f"at most {MAX_BACKING_FILE_SIZE} bytes",
            advice=CONVERT,
        )
    name = reader.read(header.backing_file_offset, header.backing_file_size, "qcow backing file name")
    return c_string(name)  # qemu copies the name as a C string


def check_backing_file(details: QcowDetails, policy: Policy) -> Iterable[Finding]:
    if details.backing_file is not None:
        yield backing_file_finding(BACKING_FILE, details.backing_file)


def check_aes_encryption(details: QcowDetails, policy: Policy) -> Iterable[Finding]:
    if details.encryption == "aes":
        yield AES_ENCRYPTION.finding(
            "the image uses qcow's AES-CBC encryption, which is insecure and which qemu's system "
            "emulators refuse: convert it with `qemu-img convert -O qcow2 -o encrypt.format=luks`"
        )


def properties(details: QcowDetails) -> dict[str, str]:
    """The header's version and cluster size."""
    return header_properties(version=details.version, cluster_size=details.cluster_size)


# --- The guest view (block/qcow.c `get_cluster_offset`, `decompress_cluster`, `qcow_co_preadv`) --

#: L2 entry bit 63: a compressed cluster, whose offset is in the bits below 63 - cluster_bits and
#: whose size in bytes in the cluster_bits bits above them (QCOW_OFLAG_COMPRESSED).
COMPRESSED_BIT = 63
QCOW_OFLAG_COMPRESSED = 1 << COMPRESSED_BIT


class QcowGuestView(BlockMappedView):
    """The guest's disk through the L1 and L2 tables (see the module docstring)."""

    def __init__(self, reader: Reader, details: QcowDetails) -> None:
        backing = f"the backing file {details.backing_file!r}" if details.backing_file is not None else None
        super().__init__(
            reader,
            # qemu counts the disk in whole 512-byte sectors, as `inspect` reports it.
            size=details.size - details.size % SECTOR_SIZE,
            unit=details.cluster_size,
            what="qcow data cluster",
            incomplete=backing,
        )
        self.cluster_bits = details.cluster_bits
        self.l2_bits = details.l2_bits
        self.l1_table = Table(details.l1_table_offset, details.l1_size, TABLE_ENTRY, "qcow L1 table")
        self._clusters: Lru[int, bytes] = Lru(cached_clusters(details.cluster_size))

    def spans(self, block: int, start: int, end: int) -> list[Span]:
        l1_index = block >> self.l2_bits
        l2_index = block & ((1 << self.l2_bits) - 1)
        if l1_index >= self.l1_table.count:
            return []
        (l2_offset,) = self.l1_table.get(self.pages, l1_index)
        if not l2_offset:
            return []
        l2_at = l2_offset + l2_index * L2E_SIZE
        l2_table = Table(l2_offset, 1 << self.l2_bits, TABLE_ENTRY, "qcow L2 table")
        (entry,) = l2_table.get(self.pages, l2_index)
        if entry & QCOW_OFLAG_COMPRESSED:
            return [Span(data=self._compressed(entry, l2_at))]
        if not entry:
            return []
        if entry % SECTOR_SIZE:  # qemu fails the read of a cluster not on a sector boundary
            raise BadField(
                BAD_MAPPING,
                f"L2 entry {l2_index}",
                f"{entry:#x}",
                f"a data cluster offset on a {SECTOR_SIZE}-byte sector boundary",
                offset=l2_at,
                advice=CORRUPT_MAPPING,
            )
        return [Span(file_offset=entry)]

    def _compressed(self, entry: int, l2_at: int) -> bytes:
        """A compressed cluster, decompressed: `size` bytes from `offset`, which must inflate to
        a whole cluster (qemu's `decompress_buffer`)."""
        offset_bits = COMPRESSED_BIT - self.cluster_bits
        offset = entry & ((1 << offset_bits) - 1)
        cached = self._clusters.get(offset)
        if cached is not None:
            return cached
        size = entry >> offset_bits & ((1 << self.cluster_bits) - 1)
        data = self.reader.read(offset, size, "qcow compressed cluster")
        cluster = decompress(data, "zlib", self.unit)
        if cluster is None or len(cluster) < self.unit:
            made = "not a valid stream" if cluster is None else f"a stream of {len(cluster)} bytes"
            raise BadField(
                BAD_MAPPING,
                f"compressed cluster at offset {offset}",
                made,
                f"a deflate stream of one {self.unit}-byte cluster",
                offset=l2_at,
                advice=CORRUPT_MAPPING,
            )
        self._clusters.put(offset, cluster)
        return cluster


def guest_view(reader: Reader, details: QcowDetails) -> QcowGuestView:
    """The guest's disk, unless it is encrypted."""
    if details.encryption != "none":
        raise ImageError(
            GUEST_ENCRYPTED,
            "the guest's disk is encrypted (AES): introspect holds no key, so the guest's own facts "
            "are not read; the image's facts stand",
        )
    return QcowGuestView(reader, details)


FORMAT = Format(
    name="qcow",
    qemu_name="qcow",
    probe=probe,
    inspect=inspect,
    checks=(check_backing_file, check_aes_encryption),
    details=QcowDetails,
    properties=properties,
    guest=guest_view,
)
