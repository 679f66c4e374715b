"""QEMU copy-on-write version 1: a 48-byte header, then the backing file name and the L1 table.

qcow v1 has no written spec; its header is `QCowHeader` in qemu's block/qcow.c, and the limits
below are the ones qemu's `qcow_open()` enforces (the image is judged as qemu would judge it).
It shares its magic and leading version field with qcow2 (declared there): version 1 is qcow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field

from introspect.decode import c_string
from introspect.errors import BadField, TruncatedImage
from introspect.formats.base import Format, Head, Inspection, backing_file_finding
from introspect.formats.qcow2 import QCOW1_VERSION, QCOW_MAGIC, MagicVersion
from introspect.model import Finding, Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import Policy, rule
from introspect.sources import Reader
from introspect.structure import BigEndianStructure, chars, pad, u8, u32, u64

BAD_HEADER = rule("qcow.bad_header", Severity.REJECT, "a qcow header field holds a value qemu refuses")
BACKING_FILE = rule("qcow.backing_file", Severity.REJECT, "the image names a backing file", names_files=True)
AES_ENCRYPTION = rule("qcow.aes_encryption", Severity.REJECT, "the image uses qcow's AES-CBC encryption")

CONVERT = "qemu cannot open such an image; re-export it from its source, e.g. as qcow2"

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


FORMAT = Format(
    name="qcow",
    qemu_name="qcow",
    probe=probe,
    inspect=inspect,
    checks=(check_backing_file, check_aes_encryption),
    details=QcowDetails,
    properties=properties,
)
