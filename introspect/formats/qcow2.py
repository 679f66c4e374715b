"""QEMU copy-on-write, versions 2 and 3: the header, its v3 fields and its header extensions, and
the guest view through the active L1 and L2 tables.

Spec: qemu docs/interop/qcow2.txt, sections "Header", "Additional fields (version 3 and
higher)", "Header extensions", "String header extensions", "Feature name table", "Bitmaps
extension" and "Full disk encryption header pointer"; for the guest view, "Cluster mapping",
"Compressed Clusters Descriptor" and "Extended L2 Entries". Where qemu refuses values the spec
leaves open (cluster sizes, table sizes, name lengths), the limit is named after qemu's own
(block/qcow2.h, block/qcow2.c) and the image is judged as qemu would judge it when opening it.

Everything the parse needs lies in the first cluster (header, extensions, backing file name),
which the reader already holds for any cluster of 64 KiB or less: a parse costs no reads beyond
the head, whatever the virtual size. The cut-image checks read the refcount table and a refcount
block, and, of a file that ends inside its last cluster in use (a compressed image), the L1 and L2
tables. The guest view reads the L1 and L2 tables a page at a time as lookups need them
(`introspect.formats.blockmap`); snapshot tables are never read.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar, Literal

from pydantic import Field

from introspect.decode import MIB, c_string, end_of_data
from introspect.errors import BadField, ImageError, TruncatedImage
from introspect.formats.base import Format, Head, Inspection, backing_file_finding
from introspect.formats.blockmap import BlockMappedView, Span, Table
from introspect.lru import Lru
from introspect.model import Finding, Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import GUEST_ENCRYPTED, GUEST_NO_VIEW, TRUNCATED, Policy, rule
from introspect.sources import Reader
from introspect.structure import BigEndianStructure, chars, u8, u32, u64, unpack_array

BAD_HEADER = rule("qcow2.bad_header", Severity.REJECT, "a qcow2 header field holds a value qemu refuses")
BAD_EXTENSION = rule("qcow2.bad_header_extension", Severity.REJECT, "a qcow2 header extension is malformed")
UNKNOWN_INCOMPATIBLE = rule(
    "qcow2.unknown_incompatible_features",
    Severity.REJECT,
    "the image sets incompatible feature bits the spec does not define",
)
CORRUPT = rule("qcow2.corrupt", Severity.REJECT, "the image is marked corrupt (incompatible bit 1)")
DIRTY = rule("qcow2.dirty", Severity.WARN, "the image was not closed cleanly (incompatible bit 0)")
BACKING_FILE = rule("qcow2.backing_file", Severity.REJECT, "the image names a backing file", names_files=True)
DATA_FILE = rule(
    "qcow2.data_file", Severity.REJECT, "the image keeps its data in an external file", names_files=True
)
AES_ENCRYPTION = rule("qcow2.aes_encryption", Severity.REJECT, "the image uses the legacy AES-CBC encryption")
BAD_MAPPING = rule(
    "qcow2.bad_mapping",
    Severity.REJECT,
    "an L1 or L2 table entry, or the compressed cluster it points to, is malformed",
)

RECREATE = "qemu cannot open such an image; re-create or re-export it with qemu-img"
#: What qemu does with an image whose tables are malformed (qcow2_signal_corruption), and the fix.
CORRUPT_MAPPING = (
    "qemu marks such an image corrupt and refuses to read the cluster; check it with "
    "`qemu-img check`, and re-export the disk from its source"
)

# --- Header (spec "Header", bytes 0-71: all of a version 2 header) ------------------------------

QCOW_MAGIC = b"QFI\xfb"
#: qcow version 1 shares the magic; it is its own format (introspect.formats.qcow).
QCOW1_VERSION = 1


class MagicVersion(BigEndianStructure):
    """magic and version, the two fields every qcow version starts with: all a probe looks at."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(4)
    version: int = u32()


SUPPORTED_VERSIONS = (2, 3)
#: qemu's MIN_CLUSTER_BITS / MAX_CLUSTER_BITS (block/qcow2.h): 512 bytes to 2 MiB.
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
#: "Must not be longer than 1023 bytes" (backing_file_size).
MAX_BACKING_FILE_SIZE = 1023
#: crypt_method values.
CRYPT_METHODS: dict[int, Literal["none", "aes", "luks"]] = {0: "none", 1: "aes", 2: "luks"}
CRYPT_LUKS = 2
#: qemu's QCOW_MAX_L1_SIZE (32 MiB of 8-byte entries), QCOW_MAX_REFTABLE_SIZE (8 MiB) and
#: QCOW_MAX_SNAPSHOTS; a snapshot table entry is at least 40 bytes (spec "Snapshots").
L1E_SIZE = 8
MAX_L1_ENTRIES = (32 << 20) // L1E_SIZE
MAX_REFTABLE_SIZE = 8 << 20
BITS_PER_BYTE = 8
MAX_SNAPSHOTS = 65536
MIN_SNAPSHOT_ENTRY_SIZE = 40
#: Bytes per L2 entry, and per extended L2 entry (spec "Extended L2 Entries").
L2E_SIZE = 8
EXTENDED_L2E_SIZE = 16
#: An image with extended L2 entries has 32 subclusters per cluster, each at least 512 bytes:
#: "cluster_bits must be at least 14".
SUBCLUSTER_BITS = 5
MIN_EXTENDED_L2_CLUSTER_BITS = MIN_CLUSTER_BITS + SUBCLUSTER_BITS
SECTOR_SIZE = 512


class QCowHeader(BigEndianStructure):
    """The header every version has (spec "Header", bytes 0-71)."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(4)
    version: int = u32()
    backing_file_offset: int = u64()
    backing_file_size: int = u32()
    cluster_bits: int = u32()
    size: int = u64()
    crypt_method: int = u32()
    l1_size: int = u32()
    l1_table_offset: int = u64()
    refcount_table_offset: int = u64()
    refcount_table_clusters: int = u32()
    nb_snapshots: int = u32()
    snapshots_offset: int = u64()


#: "For version 2, the header is exactly 72 bytes in length".
V2_HEADER_LENGTH = QCowHeader.SIZE


# --- Version 3 fields (spec "Header", bytes 72-103) --------------------------------------------

#: incompatible_features bit numbers.
DIRTY_BIT = 0
CORRUPT_BIT = 1
DATA_FILE_BIT = 2
COMPRESSION_TYPE_BIT = 3
EXTENDED_L2_BIT = 4
INCOMPAT_DIRTY = 1 << DIRTY_BIT
INCOMPAT_CORRUPT = 1 << CORRUPT_BIT
INCOMPAT_DATA_FILE = 1 << DATA_FILE_BIT
INCOMPAT_COMPRESSION = 1 << COMPRESSION_TYPE_BIT
INCOMPAT_EXTENDED_L2 = 1 << EXTENDED_L2_BIT
INCOMPATIBLE_NAMES = {
    DIRTY_BIT: "dirty",
    CORRUPT_BIT: "corrupt",
    DATA_FILE_BIT: "external_data_file",
    COMPRESSION_TYPE_BIT: "compression_type",
    EXTENDED_L2_BIT: "extended_l2",
}
#: compatible_features bit numbers.
LAZY_REFCOUNTS_BIT = 0
COMPAT_LAZY_REFCOUNTS = 1 << LAZY_REFCOUNTS_BIT
COMPATIBLE_NAMES = {LAZY_REFCOUNTS_BIT: "lazy_refcounts"}
#: autoclear_features bit numbers.
BITMAPS_BIT = 0
RAW_EXTERNAL_DATA_BIT = 1
AUTOCLEAR_BITMAPS = 1 << BITMAPS_BIT
AUTOCLEAR_DATA_FILE_RAW = 1 << RAW_EXTERNAL_DATA_BIT
AUTOCLEAR_NAMES = {BITMAPS_BIT: "bitmaps", RAW_EXTERNAL_DATA_BIT: "raw_external_data"}

#: refcount_order "may not exceed 6"; version 2 images assume 4.
MAX_REFCOUNT_ORDER = 6
V2_REFCOUNT_ORDER = 4


class QCowHeaderV3(BigEndianStructure):
    """The fields version 3 adds up to header_length (spec "Header", bytes 72-103)."""

    OFFSET: ClassVar[int] = V2_HEADER_LENGTH

    incompatible_features: int = u64()
    compatible_features: int = u64()
    autoclear_features: int = u64()
    refcount_order: int = u32()
    header_length: int = u32()


#: "For version 3 ... the header length is at least 104 bytes".
V3_MIN_HEADER_LENGTH = QCowHeaderV3.OFFSET + QCowHeaderV3.SIZE


# --- Additional fields (spec "Additional fields (version 3 and higher)", byte 104 on) ---------

COMPRESSION_TYPES: dict[int, Literal["zlib", "zstd"]] = {0: "zlib", 1: "zstd"}
COMPRESSION_ZLIB = 0


class AdditionalFields(BigEndianStructure):
    """Optional v3 fields; each one is present only when header_length goes past its offset."""

    OFFSET: ClassVar[int] = V3_MIN_HEADER_LENGTH

    compression_type: int = u8()


#: compression_type sits at byte 104: present when header_length > 104.
COMPRESSION_TYPE_OFFSET = AdditionalFields.OFFSET + AdditionalFields.offset_of("compression_type")


def additional_fields(data: bytes, header_length: int) -> AdditionalFields:
    """The fields header_length covers; absent ones take their default (zero)."""
    if header_length <= COMPRESSION_TYPE_OFFSET:
        return AdditionalFields(compression_type=COMPRESSION_ZLIB)
    return AdditionalFields.unpack(data)


# --- Header extensions (spec "Header extensions") -----------------------------------------------

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO_HEADER = 0x0537BE77
EXT_DATA_FILE = 0x44415441
#: "Unless stated otherwise, each header extension type shall appear at most once": a second
#: copy of a known one (which backing format is it?) is refused; unknown ones are only skipped.
KNOWN_EXTENSIONS = frozenset(
    {EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, EXT_BITMAPS, EXT_CRYPTO_HEADER, EXT_DATA_FILE}
)
#: Each extension's data is padded "to the next multiple of 8".
EXT_ALIGNMENT = 8
#: Five types are defined and each appears at most once; more than this many is hostile.
MAX_HEADER_EXTENSIONS = 64
#: qemu keeps the backing format in a 16-byte buffer, NUL included (bs->backing_format).
MAX_BACKING_FORMAT_LENGTH = 15
#: The data file name is recorded up to this many bytes (the limit of a backing file name).
MAX_DATA_FILE_NAME = 1023
#: Distinct unknown extension types recorded.
MAX_UNKNOWN_EXTENSIONS = 16


class HeaderExtension(BigEndianStructure):
    """One header extension's type and data length (spec "Header extensions")."""

    type: int = u32()
    length: int = u32()


FEATURE_TYPES = {0: "incompatible", 1: "compatible", 2: "autoclear"}
#: Three bitmaps of 64 bits each: no table needs more entries to name them all.
MAX_FEATURE_NAMES = 3 * 64


class FeatureNameEntry(BigEndianStructure):
    """One entry of the feature name table (spec "Feature name table")."""

    type: int = u8()
    bit: int = u8()
    name: bytes = chars(46)


#: qemu's QCOW2_MAX_BITMAPS and QCOW2_MAX_BITMAP_DIRECTORY_SIZE (block/qcow2.h).
MAX_BITMAPS = 65535
MAX_BITMAP_DIRECTORY_SIZE = 1024 * MAX_BITMAPS


class BitmapsExtensionData(BigEndianStructure):
    """The bitmaps extension (spec "Bitmaps extension"); `reserved` "must be zero", and is checked."""

    nb_bitmaps: int = u32()
    reserved: int = u32()
    bitmap_directory_size: int = u64()
    bitmap_directory_offset: int = u64()


class CryptoHeaderExtension(BigEndianStructure):
    """Where the LUKS header lives (spec "Full disk encryption header pointer")."""

    offset: int = u64()
    length: int = u64()


# --- Details ------------------------------------------------------------------------------------


class FeatureBits(Frozen):
    """One feature bitmap: its value, the bits the spec names, and the bits it does not."""

    value: int
    names: list[str]
    unknown_bits: list[int]


class FeatureName(Frozen):
    """An entry of the image's own feature name table."""

    type: str = Field(description="incompatible, compatible, autoclear, or 'type N' for another")
    bit: int
    name: str


class Bitmaps(Frozen):
    """The bitmaps extension; `consistent` is the autoclear bit that vouches for it."""

    nb_bitmaps: int
    bitmap_directory_size: int
    bitmap_directory_offset: int
    consistent: bool


class CryptoHeader(Frozen):
    """Where the image keeps its LUKS header, and how long that header is."""

    offset: int
    length: int


class Qcow2Details(Frozen):
    """A qcow2 image's header and header extensions, as the image states them."""

    format: Literal["qcow2"] = "qcow2"
    version: int
    cluster_bits: int
    cluster_size: int
    size: int = Field(description="the header's virtual disk size field, in bytes")
    encryption: Literal["none", "aes", "luks"]
    header_length: int
    incompatible_features: FeatureBits
    compatible_features: FeatureBits
    autoclear_features: FeatureBits
    dirty: bool
    corrupt: bool
    lazy_refcounts: bool
    extended_l2: bool
    data_file_raw: bool
    refcount_order: int
    refcount_bits: int
    compression_type: Literal["zlib", "zstd"]
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    backing_file: str | None
    backing_file_offset: int
    backing_file_size: int
    backing_format: str | None
    data_file: str | None
    feature_names: list[FeatureName]
    bitmaps: Bitmaps | None
    crypto_header: CryptoHeader | None
    unknown_extensions: list[int] = Field(description="types of extensions the spec does not define")


# --- Parsing --------------------------------------------------------------------------------------


def probe(head: Head) -> bool:
    """The magic with any version but 1: a truncated header or an unsupported version is still
    qcow2, and the parse says what is wrong with it."""
    if len(head.data) < MagicVersion.SIZE:
        return False
    prefix = MagicVersion.unpack(head.data)
    return prefix.magic == QCOW_MAGIC and prefix.version != QCOW1_VERSION


def inspect(reader: Reader, policy: Policy) -> Inspection[Qcow2Details]:
    data = reader.read(0, V2_HEADER_LENGTH, "qcow2 header")
    header = QCowHeader.unpack(data)
    _check_header(header)
    cluster_size = 1 << header.cluster_bits
    if header.version >= 3:
        v3 = QCowHeaderV3.unpack(reader.read(0, V3_MIN_HEADER_LENGTH, "qcow2 version 3 header"))
        _check_header_length(v3.header_length, cluster_size)
        covered = min(v3.header_length, AdditionalFields.OFFSET + AdditionalFields.SIZE)
        additional = additional_fields(reader.read(0, covered, "qcow2 header"), v3.header_length)
    else:
        # What the spec says a version 2 image implies: no feature bits, 16-bit refcounts.
        v3 = QCowHeaderV3(
            incompatible_features=0,
            compatible_features=0,
            autoclear_features=0,
            refcount_order=V2_REFCOUNT_ORDER,
            header_length=V2_HEADER_LENGTH,
        )
        additional = AdditionalFields(compression_type=COMPRESSION_ZLIB)
    compression = _compression_type(additional, v3)
    _check_v3_fields(header, v3)
    _check_tables(reader, header, v3)
    ext_end = header.backing_file_offset or cluster_size
    extensions = _read_extensions(reader, header, v3, ext_end)
    if header.crypt_method == CRYPT_LUKS and extensions.crypto_header is None:
        raise BadField(
            BAD_EXTENSION,
            "full disk encryption header extension",
            None,
            "one when crypt_method is 2 (LUKS)",
            advice=RECREATE,
        )
    if v3.autoclear_features & AUTOCLEAR_DATA_FILE_RAW and not v3.incompatible_features & INCOMPAT_DATA_FILE:
        raise BadField(
            BAD_HEADER,
            "autoclear_features",
            v3.autoclear_features,
            "the raw external data bit only with the external data file bit",
            advice=RECREATE,
        )
    backing_file = _backing_file(reader, header, cluster_size)
    details = Qcow2Details(
        version=header.version,
        cluster_bits=header.cluster_bits,
        cluster_size=cluster_size,
        size=header.size,
        encryption=CRYPT_METHODS[header.crypt_method],
        header_length=v3.header_length,
        incompatible_features=feature_bits(v3.incompatible_features, INCOMPATIBLE_NAMES),
        compatible_features=feature_bits(v3.compatible_features, COMPATIBLE_NAMES),
        autoclear_features=feature_bits(v3.autoclear_features, AUTOCLEAR_NAMES),
        dirty=bool(v3.incompatible_features & INCOMPAT_DIRTY),
        corrupt=bool(v3.incompatible_features & INCOMPAT_CORRUPT),
        lazy_refcounts=bool(v3.compatible_features & COMPAT_LAZY_REFCOUNTS),
        extended_l2=bool(v3.incompatible_features & INCOMPAT_EXTENDED_L2),
        data_file_raw=bool(v3.autoclear_features & AUTOCLEAR_DATA_FILE_RAW),
        refcount_order=v3.refcount_order,
        refcount_bits=1 << v3.refcount_order,
        compression_type=compression,
        l1_size=header.l1_size,
        l1_table_offset=header.l1_table_offset,
        refcount_table_offset=header.refcount_table_offset,
        refcount_table_clusters=header.refcount_table_clusters,
        nb_snapshots=header.nb_snapshots,
        snapshots_offset=header.snapshots_offset,
        backing_file=backing_file,
        backing_file_offset=header.backing_file_offset,
        backing_file_size=header.backing_file_size,
        backing_format=extensions.backing_format,
        data_file=extensions.data_file,
        feature_names=extensions.feature_names,
        bitmaps=extensions.bitmaps,
        crypto_header=extensions.crypto_header,
        unknown_extensions=extensions.unknown,
    )
    # qemu counts the disk in whole 512-byte sectors (bs->total_sectors = size / 512).
    virtual_size = header.size - header.size % SECTOR_SIZE
    findings = [*_structural_findings(details), *_clusters_past_the_end(reader, header, v3)]
    return Inspection(details, virtual_size, findings)


def _check_header(header: QCowHeader) -> None:
    if header.version not in SUPPORTED_VERSIONS:
        raise BadField(
            BAD_HEADER, "version", header.version, "2 or 3", offset=QCowHeader.OFFSET, advice=RECREATE
        )
    if not MIN_CLUSTER_BITS <= header.cluster_bits <= MAX_CLUSTER_BITS:
        raise BadField(
            BAD_HEADER,
            "cluster_bits",
            header.cluster_bits,
            f"{MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS} (512 bytes to 2 MiB clusters)",
            advice=RECREATE,
        )
    if header.crypt_method not in CRYPT_METHODS:
        raise BadField(
            BAD_HEADER, "crypt_method", header.crypt_method, "0 (none), 1 (AES) or 2 (LUKS)", advice=RECREATE
        )
    cluster_size = 1 << header.cluster_bits
    if header.backing_file_offset > cluster_size:
        raise BadField(
            BAD_HEADER,
            "backing_file_offset",
            header.backing_file_offset,
            f"within the first cluster (at most {cluster_size})",
            advice=RECREATE,
        )


def _check_header_length(header_length: int, cluster_size: int) -> None:
    if not V3_MIN_HEADER_LENGTH <= header_length <= cluster_size:
        raise BadField(
            BAD_HEADER,
            "header_length",
            header_length,
            f"{V3_MIN_HEADER_LENGTH}..{cluster_size} (at least the version 3 fields, within the first "
            "cluster)",
            advice=RECREATE,
        )


def _compression_type(additional: AdditionalFields, v3: QCowHeaderV3) -> Literal["zlib", "zstd"]:
    """The compression type, consistent with the incompatible bit that announces it."""
    compression = COMPRESSION_TYPES.get(additional.compression_type)
    if compression is None:
        raise BadField(
            BAD_HEADER,
            "compression_type",
            additional.compression_type,
            "0 (zlib) or 1 (zstd)",
            offset=COMPRESSION_TYPE_OFFSET,
            advice=RECREATE,
        )
    announced = bool(v3.incompatible_features & INCOMPAT_COMPRESSION)
    if announced != (additional.compression_type != COMPRESSION_ZLIB):
        state = "clear" if announced else "set"
        raise BadField(
            BAD_HEADER,
            "incompatible_features",
            v3.incompatible_features,
            f"bit {COMPRESSION_TYPE_BIT} (compression type) {state}, since the compression type is "
            f"{compression} (header_length {v3.header_length})",
            offset=QCowHeaderV3.OFFSET,
            advice=RECREATE,
        )
    return compression


def _check_v3_fields(header: QCowHeader, v3: QCowHeaderV3) -> None:
    if v3.refcount_order > MAX_REFCOUNT_ORDER:
        raise BadField(
            BAD_HEADER,
            "refcount_order",
            v3.refcount_order,
            f"at most {MAX_REFCOUNT_ORDER} (64-bit refcounts)",
            advice=RECREATE,
        )
    extended_l2 = v3.incompatible_features & INCOMPAT_EXTENDED_L2
    if extended_l2 and header.cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS:
        raise BadField(
            BAD_HEADER,
            "cluster_bits",
            header.cluster_bits,
            f"at least {MIN_EXTENDED_L2_CLUSTER_BITS} with extended L2 entries (subclusters of 512 bytes "
            "or more)",
            advice=RECREATE,
        )


def _check_tables(reader: Reader, header: QCowHeader, v3: QCowHeaderV3) -> None:
    """The tables the header points at: sizes within qemu's limits and big enough for the
    virtual size, offsets cluster-aligned, and inside the file (a cut upload ends before them)."""
    cluster_size = 1 << header.cluster_bits
    l2_entry_size = EXTENDED_L2E_SIZE if v3.incompatible_features & INCOMPAT_EXTENDED_L2 else L2E_SIZE
    bytes_per_l1_entry = cluster_size * (cluster_size // l2_entry_size)
    needed = -(-header.size // bytes_per_l1_entry)
    if header.l1_size > MAX_L1_ENTRIES:
        raise BadField(
            BAD_HEADER, "l1_size", header.l1_size, f"at most {MAX_L1_ENTRIES} entries", advice=RECREATE
        )
    if header.l1_size < needed:
        raise BadField(
            BAD_HEADER,
            "l1_size",
            header.l1_size,
            f"at least {needed} entries to map a virtual size of {header.size} bytes",
            advice=RECREATE,
        )
    if header.refcount_table_clusters == 0:
        raise BadField(BAD_HEADER, "refcount_table_clusters", 0, "at least 1", advice=RECREATE)
    if header.refcount_table_clusters > MAX_REFTABLE_SIZE // cluster_size:
        raise BadField(
            BAD_HEADER,
            "refcount_table_clusters",
            header.refcount_table_clusters,
            f"at most {MAX_REFTABLE_SIZE // cluster_size} ({MAX_REFTABLE_SIZE} bytes)",
            advice=RECREATE,
        )
    if header.nb_snapshots > MAX_SNAPSHOTS:
        raise BadField(
            BAD_HEADER, "nb_snapshots", header.nb_snapshots, f"at most {MAX_SNAPSHOTS}", advice=RECREATE
        )
    tables = (
        ("active L1 table", "l1_table_offset", header.l1_table_offset, header.l1_size * L1E_SIZE),
        (
            "refcount table",
            "refcount_table_offset",
            header.refcount_table_offset,
            header.refcount_table_clusters * cluster_size,
        ),
        (
            "snapshot table",
            "snapshots_offset",
            header.snapshots_offset,
            header.nb_snapshots * MIN_SNAPSHOT_ENTRY_SIZE,
        ),
    )
    for what, name, offset, length in tables:
        if offset % cluster_size:
            raise BadField(
                BAD_HEADER, name, offset, f"a multiple of the cluster size {cluster_size}", advice=RECREATE
            )
        _check_inside(reader, what, offset, length)


#: The refcount table and one refcount block are read, once, only when together at most this
#: large (clusters up to 512 KiB; a 64 KiB refcount block of 16-bit refcounts covers 2 GiB of 64 KiB
#: clusters, and a 64 KiB table 8 Ki such blocks). Images with larger clusters have the refcounts
#: of the clusters from the end of the file on checked instead, `MAX_TAIL_REFCOUNTS` bytes of them.
MAX_REFCOUNT_READ = 1 << 20
#: 4 KiB of 16-bit refcounts: the 2 Ki clusters after the end of the file (4 GiB of 2 MiB ones).
MAX_TAIL_REFCOUNTS = 4 * 1024
#: Refcount table entry (spec "Host cluster management"): bits 9-63 are the refcount block's offset.
REFTABLE_ENTRY_SIZE = 8
REFT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00


def _clusters_past_the_end(reader: Reader, header: QCowHeader, v3: QCowHeaderV3) -> list[Finding]:
    """Clusters the refcounts say are in use but that start past the end of the file: a cut upload
    (qemu writes the refcount structures ahead of the data they count). The refcount table and the
    refcount block after it are one read, the last refcount block another if it is elsewhere. A
    file that ends inside the last cluster in use is `_last_cluster_cut`'s question."""
    cluster_size = 1 << header.cluster_bits
    table_length = header.refcount_table_clusters * cluster_size
    if table_length + cluster_size > MAX_REFCOUNT_READ:
        return _clusters_just_past_the_end(reader, header, v3)
    try:
        window = reader.read_upto(header.refcount_table_offset, table_length + cluster_size, "refcount table")
        if len(window) < table_length:
            reader.read(header.refcount_table_offset, table_length, "refcount table")  # says what is cut
        found = _last_refcount_block(window, table_length)
        if found is None:
            return []
        last, block_offset = found
        start = block_offset - header.refcount_table_offset  # the block in the window, sliced in place
        if not (0 <= start and start + cluster_size <= len(window)):
            window, start = reader.read(block_offset, cluster_size, "last refcount block"), 0
    except TruncatedImage as error:
        return [TRUNCATED.finding(f"the qcow2 refcount structures run past the end of the file: {error}")]
    used = _last_used(window, start, cluster_size, 1 << v3.refcount_order)
    if used is None:
        return []
    per_block = cluster_size * 8 >> v3.refcount_order
    cluster = (last * per_block + used) * cluster_size
    if cluster + cluster_size <= reader.size:
        return []
    if cluster < reader.size:  # the file ends inside it
        return _last_cluster_cut(reader, header, v3, cluster, window[:table_length])
    return [
        TRUNCATED.finding(
            f"the qcow2 refcounts count a cluster in use at byte {cluster}, but the file ends at {reader.size}: "
            f"{CUT_SHORT}"
        )
    ]


CUT_SHORT = "the image was cut short (a partial upload or download); upload it again"
#: `_last_cluster_cut` reads the active L1 entries that map the disk and the L2 tables they point
#: to when together they fit this (16 L2 tables of 64 KiB clusters: 8 GiB of the guest's disk)...
MAX_TABLES_READ = 1 << 20
#: ...in at most this many reads of L2 tables, well inside the header pass's 64.
MAX_L2_READS = 32
#: Standard cluster descriptor byte 0 (big-endian): bit 62, a compressed cluster.
COMPRESSED_FLAG_BYTE = 0x40


def _last_cluster_cut(
    reader: Reader, header: QCowHeader, v3: QCowHeaderV3, cluster: int, refcount_table: bytes
) -> list[Finding]:
    """The file ends inside `cluster`, the last one its refcounts count in use. qemu writes some
    structures at their exact length (the L1 table, the snapshot table, a compressed cluster's
    data), which may end a file mid-cluster; but L2 tables, refcount blocks and data clusters whole
    (a data cluster with extended L2 entries up to its last allocated subcluster). So the file was
    cut only when that cluster is found to be one of the second kind: an L2 table the L1 table
    points to, a refcount block the refcount table points to, or a data cluster an L2 entry maps.
    What is not found (beyond the read limits, a snapshot's tables) is not a finding."""
    cluster_size = 1 << header.cluster_bits
    l1_end = header.l1_table_offset + header.l1_size * L1E_SIZE
    if header.l1_table_offset <= cluster < l1_end:
        return []  # the L1 table (`_check_tables` checked it is inside the file)
    needle = cluster.to_bytes(8, "big")
    if _aligned_find(refcount_table, needle, REFTABLE_ENTRY_SIZE) is not None:
        return [_cut("qcow2 refcount table places a refcount block", cluster, cluster_size, reader.size)]
    extended = bool(v3.incompatible_features & INCOMPAT_EXTENDED_L2)
    entry_size = EXTENDED_L2E_SIZE if extended else L2E_SIZE
    per_table = cluster_size // entry_size
    l1_used = -(-header.size // (per_table * cluster_size))  # the L1 entries that map the disk
    if l1_used * L1E_SIZE > MAX_TABLES_READ:
        return []
    l1 = reader.read(header.l1_table_offset, l1_used * L1E_SIZE, "qcow2 L1 table")
    l2_tables = [entry & OFFSET_MASK for entry in struct.unpack(f">{l1_used}Q", l1) if entry & OFFSET_MASK]
    if cluster in l2_tables:
        return [_cut("qcow2 L1 table places an L2 table", cluster, cluster_size, reader.size)]
    if v3.incompatible_features & INCOMPAT_DATA_FILE:
        return []  # data clusters are in the external data file
    if len(l2_tables) > MAX_L2_READS or len(l1) + len(l2_tables) * cluster_size > MAX_TABLES_READ:
        return []
    # A standard descriptor mapping `cluster`: flags in byte 0 (not compressed), then its offset,
    # whose low byte (bits 0-8, the zero flag among them) is 0: a zero-flagged cluster is never read.
    for offset in l2_tables:
        if offset + cluster_size > reader.size:
            continue  # cut itself: the refcount check names what lies past the end
        table = reader.read(offset, cluster_size, "qcow2 L2 table")
        at = _aligned_find(table, needle[1:], entry_size, 1)
        if at is None or table[at] & COMPRESSED_FLAG_BYTE:
            continue
        end = cluster + cluster_size
        if extended:
            allocated = int.from_bytes(table[at + L2E_SIZE : at + EXTENDED_L2E_SIZE], "big") & ALL_SUBCLUSTERS
            end = cluster + allocated.bit_length() * (cluster_size // SUBCLUSTERS)
        if end > reader.size:
            return [_cut("qcow2 L2 tables place a data cluster", cluster, end - cluster, reader.size)]
        return []
    return []


def _aligned_find(data: bytes, needle: bytes, stride: int, skip: int = 0) -> int | None:
    """Where the `stride`-byte entry of `data` whose bytes from `skip` on start with `needle`
    begins, or None. `find` looks for the needle's nonzero middle only: tables are mostly zeros,
    which a needle of leading or trailing zeros would match at every byte (~0.3 ms a 128 KiB
    table, against ~10 µs); each hit is then checked whole and aligned."""
    core = needle.strip(b"\0")
    if not core:
        return None
    lead = needle.index(core[0])
    found = data.find(core, skip + lead)
    while found >= 0:
        start = found - lead
        if (start - skip) % stride == 0 and data.startswith(needle, start):
            return start - skip
        found = data.find(core, found + 1)
    return None


def _cut(what: str, offset: int, length: int, size: int) -> Finding:
    return TRUNCATED.finding(
        f"the {what} at bytes {offset}..{offset + length}, but the file ends at {size}: {CUT_SHORT}"
    )


def _clusters_just_past_the_end(reader: Reader, header: QCowHeader, v3: QCowHeaderV3) -> list[Finding]:
    """With clusters too large to read a whole refcount block (2 MiB ones: a 2 MiB table and 2 MiB
    blocks), the refcounts of the clusters that start at the end of the file and after it: one
    8-byte table entry and at most `MAX_TAIL_REFCOUNTS` of the block it points at. A cut upload
    shows there: qemu allocates clusters in file order, so the ones cut off follow the end."""
    cluster_size = 1 << header.cluster_bits
    bits = 1 << v3.refcount_order
    per_block = cluster_size * BITS_PER_BYTE // bits
    first = -(-reader.size // cluster_size)  # the first cluster starting at or past the end
    index, start = divmod(first, per_block)
    if (index + 1) * REFTABLE_ENTRY_SIZE > header.refcount_table_clusters * cluster_size:
        return []  # past what the table can count: nothing is in use there
    try:
        entry_offset = header.refcount_table_offset + index * REFTABLE_ENTRY_SIZE
        (entry,) = struct.unpack(">Q", reader.read(entry_offset, REFTABLE_ENTRY_SIZE, "refcount table entry"))
        block_offset = entry & REFT_OFFSET_MASK
        if not block_offset:
            return []
        skip, first_byte = start * bits % BITS_PER_BYTE // bits, start * bits // BITS_PER_BYTE
        _check_inside(reader, "refcount block", block_offset, cluster_size)
        window = reader.read(
            block_offset + first_byte, min(MAX_TAIL_REFCOUNTS, cluster_size - first_byte), "refcount block"
        )
    except TruncatedImage as error:
        return [TRUNCATED.finding(f"the qcow2 refcount structures run past the end of the file: {error}")]
    used = _first_used(window, bits, skip)
    if used is None:
        return []
    cluster = (index * per_block + start - skip + used) * cluster_size
    return [
        TRUNCATED.finding(
            f"the qcow2 refcounts count a cluster in use at byte {cluster}, but the file ends at {reader.size}: "
            f"{CUT_SHORT}"
        )
    ]


def _first_used(refcounts: bytes, bits: int, skip: int = 0) -> int | None:
    """The index of the first nonzero refcount in `refcounts` (`bits` wide, packed as qemu packs
    them: narrower than a byte from the low bits up), the first `skip` of them left out (they
    share the first byte with the window's first refcount)."""
    if skip and refcounts:
        refcounts = bytes([refcounts[0] & ~((1 << (skip * bits)) - 1) & 0xFF]) + refcounts[1:]
    stripped = refcounts.lstrip(b"\0")
    if not stripped:
        return None
    byte = len(refcounts) - len(stripped)
    if bits >= BITS_PER_BYTE:
        return byte // (bits // BITS_PER_BYTE)
    value = refcounts[byte]
    lowest = min(k for k in range(BITS_PER_BYTE // bits) if (value >> (k * bits)) & ((1 << bits) - 1))
    return byte * (BITS_PER_BYTE // bits) + lowest


def _last_refcount_block(table: bytes, length: int) -> tuple[int, int] | None:
    """The index and offset of the last entry of the refcount table (the first `length` bytes of
    `table`) that points at a block, or None. The search starts at the last nonzero byte
    (`end_of_data`); only an entry whose reserved low bits alone are set makes it step back an
    entry at a time."""
    entries = -(
        -end_of_data(table, 0, length) // REFTABLE_ENTRY_SIZE
    )  # up to the one holding the last nonzero byte
    for index in range(entries - 1, -1, -1):
        (entry,) = struct.unpack_from(">Q", table, index * REFTABLE_ENTRY_SIZE)
        offset = entry & REFT_OFFSET_MASK
        if offset:
            return index, offset
    return None


def _last_used(data: bytes, start: int, length: int, bits: int) -> int | None:
    """The index of the last nonzero refcount in the refcount block `data[start:start + length]`
    of `bits`-bit refcounts (qemu packs refcounts narrower than a byte from the low bits up)."""
    end = end_of_data(data, start, start + length)
    if not end:
        return None
    byte = end - 1
    if bits >= BITS_PER_BYTE:
        return byte // (bits // BITS_PER_BYTE)
    per_byte = BITS_PER_BYTE // bits
    value = data[start + byte]
    highest = max(k for k in range(per_byte) if (value >> (k * bits)) & ((1 << bits) - 1))
    return byte * per_byte + highest


def _check_inside(reader: Reader, what: str, offset: int, length: int) -> None:
    """A structure the image points at must lie in the file: if not, the upload was cut short."""
    if length and offset + length > reader.size:
        raise TruncatedImage(what, offset=offset, length=length, size=reader.size)


@dataclass(slots=True)
class _Extensions:
    """What the header extensions said, gathered during one walk."""

    backing_format: str | None = None
    data_file: str | None = None
    feature_names: list[FeatureName] = field(default_factory=list)
    bitmaps: Bitmaps | None = None
    crypto_header: CryptoHeader | None = None
    unknown: list[int] = field(default_factory=list)


def _walk_extensions(reader: Reader, start: int, end: int) -> Iterator[tuple[HeaderExtension, int]]:
    """Each extension and the offset of its data, from `start` up to the END marker; none may
    reach past `end` (the backing file name, or the end of the first cluster)."""
    offset = start
    for count in range(MAX_HEADER_EXTENSIONS + 1):
        if offset >= end:
            return
        if end - offset < HeaderExtension.SIZE:
            raise BadField(
                BAD_EXTENSION,
                "room for a header extension",
                end - offset,
                f"at least {HeaderExtension.SIZE} bytes for its type and length",
                offset=offset,
                advice=RECREATE,
            )
        ext = HeaderExtension.unpack(reader.read(offset, HeaderExtension.SIZE, "qcow2 header extension"))
        data_offset = offset + HeaderExtension.SIZE
        if ext.type == EXT_END:
            return
        if count == MAX_HEADER_EXTENSIONS:
            raise BadField(
                BAD_EXTENSION,
                "number of header extensions",
                count + 1,
                f"at most {MAX_HEADER_EXTENSIONS} before the end marker",
                offset=offset,
                advice=RECREATE,
            )
        if ext.length > end - data_offset:
            raise BadField(
                BAD_EXTENSION,
                f"length of header extension {ext.type:#010x}",
                ext.length,
                f"at most {end - data_offset} (the extensions must end by byte {end})",
                offset=offset,
                advice=RECREATE,
            )
        yield ext, data_offset
        offset = data_offset + -(-ext.length // EXT_ALIGNMENT) * EXT_ALIGNMENT


def _read_extensions(reader: Reader, header: QCowHeader, v3: QCowHeaderV3, end: int) -> _Extensions:
    found = _Extensions()
    seen: set[int] = set()
    for ext, offset in _walk_extensions(reader, v3.header_length, end):
        if ext.type in seen:
            raise BadField(
                BAD_EXTENSION,
                f"count of header extension {ext.type:#010x}",
                2,
                "at most 1",
                offset=offset,
                advice=RECREATE,
            )
        if ext.type in KNOWN_EXTENSIONS:
            seen.add(ext.type)
        if ext.type == EXT_BACKING_FORMAT:
            if ext.length > MAX_BACKING_FORMAT_LENGTH:
                raise BadField(
                    BAD_EXTENSION,
                    "backing file format name length",
                    ext.length,
                    f"at most {MAX_BACKING_FORMAT_LENGTH} bytes",
                    offset=offset,
                    advice=RECREATE,
                )
            found.backing_format = c_string(reader.read(offset, ext.length, "qcow2 backing file format name"))
        elif ext.type == EXT_DATA_FILE:
            length = min(ext.length, MAX_DATA_FILE_NAME)
            found.data_file = c_string(reader.read(offset, length, "qcow2 external data file name"))
        elif ext.type == EXT_FEATURE_TABLE:
            found.feature_names = _feature_names(reader, offset, ext.length)
        elif ext.type == EXT_BITMAPS:
            found.bitmaps = _bitmaps(reader, offset, ext.length, v3, 1 << header.cluster_bits)
        elif ext.type == EXT_CRYPTO_HEADER:
            found.crypto_header = _crypto_header(reader, offset, ext.length, header)
        elif len(found.unknown) < MAX_UNKNOWN_EXTENSIONS:
            found.unknown.append(ext.type)
    return found


def _feature_names(reader: Reader, offset: int, length: int) -> list[FeatureName]:
    """The feature name table's entries (every image qemu 2.x or later writes has eight or more)."""
    count = min(length // FeatureNameEntry.SIZE, MAX_FEATURE_NAMES)
    table = reader.read(offset, count * FeatureNameEntry.SIZE, "qcow2 feature name table")
    return [_feature_name(e.type, e.bit, e.name) for e in unpack_array(FeatureNameEntry, table, count)]


@lru_cache(maxsize=MAX_FEATURE_NAMES)
def _feature_name(kind: int, bit: int, name: bytes) -> FeatureName:
    """One entry of a feature name table, made once: qemu writes the same table into every image
    (a FeatureName holds a string and two numbers, and is immutable: it can be shared)."""
    return FeatureName(type=FEATURE_TYPES.get(kind, f"type {kind}"), bit=bit, name=c_string(name))


def _bitmaps(reader: Reader, offset: int, length: int, v3: QCowHeaderV3, cluster_size: int) -> Bitmaps:
    """The bitmaps extension, checked as qemu checks it when the autoclear bit vouches for it."""
    if length != BitmapsExtensionData.SIZE:
        raise BadField(
            BAD_EXTENSION,
            "bitmaps extension length",
            length,
            f"{BitmapsExtensionData.SIZE}",
            offset=offset,
            advice=RECREATE,
        )
    ext = BitmapsExtensionData.unpack(reader.read(offset, length, "qcow2 bitmaps extension"))
    consistent = bool(v3.autoclear_features & AUTOCLEAR_BITMAPS)
    if consistent:
        checks = (
            ("reserved", ext.reserved, ext.reserved == 0, "0"),
            ("nb_bitmaps", ext.nb_bitmaps, 1 <= ext.nb_bitmaps <= MAX_BITMAPS, f"1..{MAX_BITMAPS}"),
            (
                "bitmap_directory_size",
                ext.bitmap_directory_size,
                ext.bitmap_directory_size <= MAX_BITMAP_DIRECTORY_SIZE,
                f"at most {MAX_BITMAP_DIRECTORY_SIZE}",
            ),
            (
                "bitmap_directory_offset",
                ext.bitmap_directory_offset,
                ext.bitmap_directory_offset % cluster_size == 0,
                f"a multiple of the cluster size {cluster_size}",
            ),
        )
        for name, actual, ok, expected in checks:
            if not ok:
                raise BadField(
                    BAD_EXTENSION,
                    f"bitmaps extension {name}",
                    actual,
                    expected,
                    offset=offset,
                    advice=RECREATE,
                )
        _check_inside(
            reader, "qcow2 bitmap directory", ext.bitmap_directory_offset, ext.bitmap_directory_size
        )
    return Bitmaps(
        nb_bitmaps=ext.nb_bitmaps,
        bitmap_directory_size=ext.bitmap_directory_size,
        bitmap_directory_offset=ext.bitmap_directory_offset,
        consistent=consistent,
    )


def _crypto_header(reader: Reader, offset: int, length: int, header: QCowHeader) -> CryptoHeader:
    if header.crypt_method != CRYPT_LUKS:
        raise BadField(
            BAD_EXTENSION,
            "full disk encryption header extension",
            CRYPT_METHODS[header.crypt_method],
            "only with crypt_method 2 (LUKS)",
            offset=offset,
            advice=RECREATE,
        )
    if length != CryptoHeaderExtension.SIZE:
        raise BadField(
            BAD_EXTENSION,
            "full disk encryption header extension length",
            length,
            f"{CryptoHeaderExtension.SIZE}",
            offset=offset,
            advice=RECREATE,
        )
    ext = CryptoHeaderExtension.unpack(reader.read(offset, length, "qcow2 encryption header pointer"))
    cluster_size = 1 << header.cluster_bits
    if ext.offset % cluster_size:
        raise BadField(
            BAD_EXTENSION,
            "encryption header offset",
            ext.offset,
            f"a multiple of the cluster size {cluster_size}",
            offset=offset,
            advice=RECREATE,
        )
    _check_inside(reader, "qcow2 LUKS header", ext.offset, ext.length)
    return CryptoHeader(offset=ext.offset, length=ext.length)


def _backing_file(reader: Reader, header: QCowHeader, cluster_size: int) -> str | None:
    """The backing file name: recorded, never opened. qemu refuses names over 1023 bytes or
    running past the first cluster."""
    if header.backing_file_offset == 0:
        return None
    limit = min(MAX_BACKING_FILE_SIZE, cluster_size - header.backing_file_offset)
    if header.backing_file_size > limit:
        raise BadField(
            BAD_HEADER,
            "backing_file_size",
            header.backing_file_size,
            f"at most {limit} bytes (1023, and within the first cluster)",
            advice=RECREATE,
        )
    name = reader.read(header.backing_file_offset, header.backing_file_size, "qcow2 backing file name")
    return c_string(name)


def feature_bits(value: int, names: dict[int, str]) -> FeatureBits:
    """A feature bitmap split into the bits `names` knows and the ones it does not."""
    bits = [bit for bit in range(value.bit_length()) if value >> bit & 1]  # the set ones, low first
    return FeatureBits(
        value=value,
        names=[names[bit] for bit in bits if bit in names],
        unknown_bits=[bit for bit in bits if bit not in names],
    )


def _structural_findings(details: Qcow2Details) -> Iterator[Finding]:
    unknown = details.incompatible_features.unknown_bits
    if unknown:
        table = {f.bit: f.name for f in details.feature_names if f.type == "incompatible"}
        named = ", ".join(f"{bit} ({table[bit]!r})" if bit in table else str(bit) for bit in unknown)
        yield UNKNOWN_INCOMPATIBLE.finding(
            f"the image sets incompatible feature bits the qcow2 spec does not define ({named}): no "
            "qemu that lacks them can open it; convert it with `qemu-img convert -O qcow2` where it opens"
        )
    if details.corrupt:
        yield CORRUPT.finding(
            "the image is marked corrupt: qemu will not write to it; repair it with "
            "`qemu-img check -r all`, or re-export it from its source"
        )
    if details.dirty:
        yield DIRTY.finding(
            "the image was not closed cleanly (dirty bit): its refcounts may be stale; "
            "run `qemu-img check -r all` on it before use"
        )


def check_backing_file(details: Qcow2Details, policy: Policy) -> Iterable[Finding]:
    if details.backing_file is not None:
        yield backing_file_finding(BACKING_FILE, details.backing_file, details.backing_format)


def check_data_file(details: Qcow2Details, policy: Policy) -> Iterable[Finding]:
    has_bit = INCOMPATIBLE_NAMES[DATA_FILE_BIT] in details.incompatible_features.names
    if details.data_file is not None or has_bit:
        name = repr(details.data_file) if details.data_file is not None else "(name not recorded)"
        yield DATA_FILE.finding(
            f"the image keeps its guest data in the external data file {name}, which is not part of "
            "the upload: make it self-contained with `qemu-img convert -O qcow2` and upload the result"
        )


def check_aes_encryption(details: Qcow2Details, policy: Policy) -> Iterable[Finding]:
    if details.encryption == "aes":
        yield AES_ENCRYPTION.finding(
            "the image uses qcow2's legacy AES-CBC encryption, which is insecure and which qemu's "
            "system emulators refuse: re-encrypt it with `qemu-img convert -O qcow2 -o encrypt.format=luks`"
        )


def properties(details: Qcow2Details) -> dict[str, str]:
    """The header's version and cluster size, and its encryption method (aes, luks) when it has one."""
    mapped = header_properties(version=details.version, cluster_size=details.cluster_size)
    if details.encryption != "none":
        mapped["introspect_encryption"] = details.encryption
    return mapped


# --- The guest view (spec "Cluster mapping", "Compressed Clusters Descriptor", "Extended L2
# Entries") -------------------------------------------------------------------------------------

#: L1 and standard L2 tables are flat arrays of big-endian 64-bit entries (looked up one at a
#: time, never unpacked as structures).
TABLE_ENTRY = struct.Struct(">Q")


class ExtendedL2Entry(BigEndianStructure):
    """An extended L2 entry (spec "Extended L2 Entries"): the standard L2 entry, then the
    subcluster allocation bitmap."""

    l2_entry: int = u64()
    bitmap: int = u64()


#: L1 entry bits 9-55 and standard cluster descriptor bits 9-55: a host offset (qemu's
#: L1E_OFFSET_MASK and L2E_OFFSET_MASK).
OFFSET_MASK = 0x00FFFFFFFFFFFE00
#: L2 entry bit 62: a compressed cluster; standard cluster descriptor bit 0: the cluster reads as
#: zeros (qemu honours it in any version; "with version 2 ... this is always 0").
COMPRESSED_BIT = 62
ZERO_BIT = 0
QCOW_OFLAG_COMPRESSED = 1 << COMPRESSED_BIT
QCOW_OFLAG_ZERO = 1 << ZERO_BIT
#: A compressed cluster descriptor counts the 512-byte sectors its data occupies.
COMPRESSED_SECTOR_SIZE = 512
#: Extended L2 entries: 32 subclusters; bitmap bits 0-31 say which are allocated, bits 32-63
#: which read as zeros.
SUBCLUSTERS = 1 << SUBCLUSTER_BITS
SUBCLUSTER_ZEROS_SHIFT = SUBCLUSTERS
ALL_SUBCLUSTERS = (1 << SUBCLUSTERS) - 1
#: qemu's raw deflate window for compressed clusters (inflateInit2 with -12 in qcow2-threads.c and
#: qcow.c): no zlib header, a 4 KiB window.
ZLIB_WINDOW_BITS = -12
#: RFC 8878 §3.1.1.1.2: decoders should support windows of up to 8 MiB. A compressed cluster (2 MiB
#: at most) needs no more, and this bounds what a zstd frame can make the decoder allocate.
ZSTD_MAX_WINDOW = 8 * MIB
#: Decompressed clusters kept, so that the blocks of one cluster a filesystem reads one by one, at
#: any time of a guest pass, cost one read and one decompression: this many bytes of them (32
#: clusters of 64 KiB; a guest pass touches about 30), and at least MIN_CACHED_CLUSTERS (8 MiB with
#: 2 MiB clusters).
CLUSTER_CACHE_BYTES = 2 * MIB
MIN_CACHED_CLUSTERS = 4


def cached_clusters(cluster_size: int) -> int:
    """How many decompressed clusters of `cluster_size` bytes a view keeps."""
    return max(MIN_CACHED_CLUSTERS, CLUSTER_CACHE_BYTES // cluster_size)


def decompress(data: bytes, compression: Literal["zlib", "zstd"], limit: int) -> bytes | None:
    """The first `limit` bytes the compressed stream holds (qemu stops at a cluster too), fewer
    when it ends first; None when it is no valid stream. The output never exceeds `limit`,
    whatever the stream says."""
    if compression == "zlib":
        try:
            return zlib.decompressobj(ZLIB_WINDOW_BITS).decompress(data, limit)
        except zlib.error:
            return None
    import zstandard  # here, not at the top: only zstd-compressed clusters pay for its import

    try:
        decoder = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        # qemu decodes frame after frame until the cluster is full (qcow2_zstd_decompress).
        return decoder.stream_reader(data, read_across_frames=True).read(limit)
    except zstandard.ZstdError:
        return None


class Qcow2GuestView(BlockMappedView):
    """The guest's disk through the active L1 table (see the module docstring). The unit is the
    cluster, or the subcluster with extended L2 entries."""

    def __init__(self, reader: Reader, details: Qcow2Details) -> None:
        self.subclusters = SUBCLUSTERS if details.extended_l2 else 1
        backing = f"the backing file {details.backing_file!r}" if details.backing_file is not None else None
        super().__init__(
            reader,
            # qemu counts the disk in whole 512-byte sectors, as `inspect` reports it.
            size=details.size - details.size % SECTOR_SIZE,
            unit=details.cluster_size // self.subclusters,
            what="qcow2 data cluster",
            incomplete=backing,
        )
        self.cluster_bits = details.cluster_bits
        self.cluster_size = details.cluster_size
        self.compression = details.compression_type
        self.l1_table = Table(details.l1_table_offset, details.l1_size, TABLE_ENTRY, "qcow2 L1 table")
        self.l2_layout = ExtendedL2Entry.STRUCT if details.extended_l2 else TABLE_ENTRY
        self.l2_entries = details.cluster_size // self.l2_layout.size
        self._clusters: Lru[int, bytes] = Lru(cached_clusters(details.cluster_size))

    def spans(self, block: int, start: int, end: int) -> list[Span]:
        cluster, subcluster = divmod(block, self.subclusters)
        l1_index, l2_index = divmod(cluster, self.l2_entries)
        if l1_index >= self.l1_table.count:
            return []  # past the L1 table: unallocated, as qemu reads it
        l1_at = self.l1_table.offset + l1_index * L1E_SIZE
        (l1_entry,) = self.l1_table.get(self.pages, l1_index)
        l2_offset = l1_entry & OFFSET_MASK
        if not l2_offset:
            return []
        if l2_offset % self.cluster_size:
            raise self._bad(
                f"L1 entry {l1_index}", l1_entry, "an L2 table offset aligned to a cluster", l1_at
            )
        l2_at = l2_offset + l2_index * self.l2_layout.size
        l2 = Table(l2_offset, self.l2_entries, self.l2_layout, "qcow2 L2 table").get(self.pages, l2_index)
        entry = l2[0]
        if entry & QCOW_OFLAG_COMPRESSED:
            data = self._compressed(entry, l2_at)
            if self.subclusters > 1:
                data = data[subcluster * self.unit : (subcluster + 1) * self.unit]
            return [Span(data=data)]
        host = entry & OFFSET_MASK
        if self.subclusters == 1:
            if entry & QCOW_OFLAG_ZERO or not host:
                return []
        else:
            bitmap = l2[1]
            allocated = bitmap & ALL_SUBCLUSTERS
            zeros = bitmap >> SUBCLUSTER_ZEROS_SHIFT
            if allocated & zeros or (allocated and not host):
                raise self._bad(
                    f"subcluster bitmap of L2 entry {l2_index}",
                    bitmap,
                    "no subcluster both allocated and zero, none allocated without a host cluster",
                    l2_at,
                )
            if not allocated >> subcluster & 1 or zeros >> subcluster & 1:
                return []
        if host % self.cluster_size:
            raise self._bad(
                f"L2 entry {l2_index}", entry, "a data cluster offset aligned to a cluster", l2_at
            )
        return [Span(file_offset=host + subcluster * self.unit)]

    def _compressed(self, descriptor: int, l2_at: int) -> bytes:
        """The cluster a compressed cluster descriptor points to, decompressed (spec "Compressed
        Clusters Descriptor": the data runs from the offset to the end of the descriptor's last
        sector, at most twice a cluster; decompression stops at a cluster)."""
        descriptor &= QCOW_OFLAG_COMPRESSED - 1
        cached = self._clusters.get(descriptor)
        if cached is not None:
            return cached
        # Bits 0..x-1 are the offset, bits x..61 the sectors beyond the offset's: x = 62 - (cluster_bits - 8).
        x = COMPRESSED_BIT - (self.cluster_bits - 8)
        offset = descriptor & ((1 << x) - 1)
        sectors = 1 + (descriptor >> x)
        length = sectors * COMPRESSED_SECTOR_SIZE - offset % COMPRESSED_SECTOR_SIZE
        if offset >= self.reader.size:
            raise TruncatedImage(
                "qcow2 compressed cluster", offset=offset, length=length, size=self.reader.size
            )
        # Its last sector may run past the end of the file, which qemu reads as zeros.
        data = self.reader.read_upto(offset, length, "qcow2 compressed cluster")
        cluster = decompress(data, self.compression, self.cluster_size)
        if cluster is None or len(cluster) < self.cluster_size:
            if cluster is not None and len(data) < length:
                raise TruncatedImage(
                    "qcow2 compressed cluster", offset=offset, length=length, size=self.reader.size
                )
            made = "not a valid stream" if cluster is None else f"a stream of {len(cluster)} bytes"
            raise BadField(
                BAD_MAPPING,
                f"{self.compression} compressed cluster at offset {offset}",
                made,
                f"a stream of one {self.cluster_size}-byte cluster",
                offset=l2_at,
                advice=CORRUPT_MAPPING,
            )
        self._clusters.put(descriptor, cluster)
        return cluster

    def _bad(self, name: str, value: int, expected: str, offset: int) -> BadField:
        return BadField(BAD_MAPPING, name, f"{value:#x}", expected, offset=offset, advice=CORRUPT_MAPPING)


def guest_view(reader: Reader, details: Qcow2Details) -> Qcow2GuestView:
    """The guest's disk, unless it is encrypted, kept in an external data file, or laid out by
    incompatible features the spec does not define (which qemu refuses to open)."""
    if details.encryption != "none":
        raise ImageError(
            GUEST_ENCRYPTED,
            f"the guest's disk is encrypted ({details.encryption.upper()}): introspect holds no key, "
            "so the guest's own facts are not read; the image's facts stand",
        )
    if (
        details.data_file is not None
        or INCOMPATIBLE_NAMES[DATA_FILE_BIT] in details.incompatible_features.names
    ):
        name = repr(details.data_file) if details.data_file is not None else "(name not recorded)"
        raise ImageError(
            GUEST_NO_VIEW,
            f"the guest's data is in the external data file {name}, which is never opened: make the "
            "image self-contained with `qemu-img convert -O qcow2` to have the guest's facts read",
        )
    if details.incompatible_features.unknown_bits:
        bits = ", ".join(map(str, details.incompatible_features.unknown_bits))
        raise ImageError(
            GUEST_NO_VIEW,
            f"incompatible feature bits the spec does not define ({bits}) may change how the guest's "
            "disk is laid out: it is not read",
        )
    return Qcow2GuestView(reader, details)


FORMAT = Format(
    name="qcow2",
    qemu_name="qcow2",
    probe=probe,
    inspect=inspect,
    checks=(check_backing_file, check_data_file, check_aes_encryption),
    details=Qcow2Details,
    properties=properties,
    guest=guest_view,
)
