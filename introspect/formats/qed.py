"""QEMU enhanced disk: a 64-byte little-endian header and, within the header clusters, the
backing file name; the guest view through its L1 and L2 tables.

Spec: qemu docs/interop/qed_spec.txt (qed_spec.rst), sections "Header", "Field descriptions" and
"Feature bits"; for the guest view, "Tables", "Logical offset translation", "Zero data clusters"
and "Consistency checking". Where qemu's `bdrv_qed_do_open()` (block/qed.c) refuses more than the
spec says, the limit is named after qemu's and the image is judged as qemu would judge it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import ClassVar, Literal

from pydantic import Field

from introspect.decode import c_string, largest_u64le, nonzero_u64le
from introspect.errors import BadField, TruncatedImage
from introspect.formats.base import Format, Head, Inspection, backing_file_finding
from introspect.formats.blockmap import BlockMappedView, Span, Table
from introspect.formats.qcow2 import FeatureBits, feature_bits
from introspect.model import Finding, Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import TRUNCATED, Policy, rule
from introspect.sources import Reader
from introspect.structure import LittleEndianStructure, chars, u32, u64

BAD_HEADER = rule("qed.bad_header", Severity.REJECT, "a qed header field holds a value the spec forbids")
UNKNOWN_FEATURES = rule(
    "qed.unknown_features", Severity.REJECT, "the image sets feature bits the qed spec does not define"
)
NEED_CHECK = rule("qed.need_check", Severity.WARN, "the image was not closed cleanly (QED_F_NEED_CHECK)")
BACKING_FILE = rule("qed.backing_file", Severity.REJECT, "the image names a backing file", names_files=True)
BAD_MAPPING = rule(
    "qed.bad_mapping", Severity.REJECT, "an L1 or L2 table entry points where the spec forbids"
)

CONVERT = "qemu cannot open such an image; re-export it from its source, e.g. as qcow2"
#: What qemu does with such an entry (qed_check_cluster_offset/qed_check_table_offset fail the
#: read), and the fix.
CORRUPT_MAPPING = "qemu fails every read through it; run `qemu-img check -f qed`, or re-export the disk"

QED_MAGIC = b"QED\0"
#: "cluster_size must be a power of 2 in range [2^12, 2^26]".
MIN_CLUSTER_SIZE = 1 << 12
MAX_CLUSTER_SIZE = 1 << 26
#: "table_size must be a power of 2 in range [1, 16]".
MIN_TABLE_SIZE = 1
MAX_TABLE_SIZE = 16
#: "image_size ... must be a multiple of 512 bytes"; a table entry is a uint64_t.
SECTOR_SIZE = 512
TABLE_ENTRY_SIZE = 8
#: qemu computes header_size * cluster_size in 32 bits and refuses what overflows.
MAX_HEADER_BYTES = 2**32 - 1
#: qemu reads the backing file name into a PATH_MAX (4096-byte) buffer, NUL included.
MAX_BACKING_FILENAME_SIZE = 4095

#: The cut-image check reads the table entries that map the guest's disk when together they fit
#: this: with a default qed's 64 KiB clusters and 4-cluster tables, 8 GiB of the guest's disk...
MAX_TABLES_READ = 1 << 20
#: ...in at most this many reads of L2 tables, well inside the header pass's 64 (small clusters
#: make small tables: 4 KiB clusters in 2-cluster tables map 4 MiB of disk a table).
MAX_L2_READS = 32

#: Feature bits ("Feature bits").
BACKING_FILE_BIT = 0
NEED_CHECK_BIT = 1
BACKING_FORMAT_NO_PROBE_BIT = 2
QED_F_BACKING_FILE = 1 << BACKING_FILE_BIT
QED_F_NEED_CHECK = 1 << NEED_CHECK_BIT
QED_F_BACKING_FORMAT_NO_PROBE = 1 << BACKING_FORMAT_NO_PROBE_BIT
FEATURE_NAMES = {
    BACKING_FILE_BIT: "backing_file",
    NEED_CHECK_BIT: "need_check",
    BACKING_FORMAT_NO_PROBE_BIT: "backing_format_no_probe",
}
#: "There are currently no defined compat_features or autoclear_features bits."
NO_NAMES: dict[int, str] = {}
#: QED_F_BACKING_FORMAT_NO_PROBE says the backing file is raw.
NO_PROBE_FORMAT = "raw"


class QEDHeader(LittleEndianStructure):
    """The qed header ("Header")."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(4)
    cluster_size: int = u32()
    table_size: int = u32()
    header_size: int = u32()
    features: int = u64()
    compat_features: int = u64()
    autoclear_features: int = u64()
    l1_table_offset: int = u64()
    image_size: int = u64()
    backing_filename_offset: int = u32()
    backing_filename_size: int = u32()


class QedDetails(Frozen):
    """A qed header, as the image states it."""

    format: Literal["qed"] = "qed"
    cluster_size: int
    table_size: int = Field(description="clusters per L1 or L2 table")
    header_size: int = Field(description="clusters the header and its strings occupy")
    features: FeatureBits
    compat_features: FeatureBits
    autoclear_features: FeatureBits
    need_check: bool
    image_size: int
    l1_table_offset: int
    backing_file: str | None
    backing_filename_offset: int
    backing_filename_size: int
    backing_format: str | None = Field(description="'raw' when QED_F_BACKING_FORMAT_NO_PROBE says so")


def probe(head: Head) -> bool:
    return head.data[: len(QED_MAGIC)] == QED_MAGIC


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def inspect(reader: Reader, policy: Policy) -> Inspection[QedDetails]:
    header = QEDHeader.read(reader, "qed header")
    cluster_size_ok = MIN_CLUSTER_SIZE <= header.cluster_size <= MAX_CLUSTER_SIZE
    if not (_power_of_two(header.cluster_size) and cluster_size_ok):
        raise BadField(
            BAD_HEADER,
            "cluster_size",
            header.cluster_size,
            f"a power of 2 from {MIN_CLUSTER_SIZE} to {MAX_CLUSTER_SIZE}",
            advice=CONVERT,
        )
    if not (_power_of_two(header.table_size) and MIN_TABLE_SIZE <= header.table_size <= MAX_TABLE_SIZE):
        raise BadField(
            BAD_HEADER,
            "table_size",
            header.table_size,
            f"a power of 2 from {MIN_TABLE_SIZE} to {MAX_TABLE_SIZE}",
            advice=CONVERT,
        )
    entries = header.table_size * header.cluster_size // TABLE_ENTRY_SIZE
    max_image_size = entries * entries * header.cluster_size
    if header.image_size % SECTOR_SIZE or header.image_size > max_image_size:
        raise BadField(
            BAD_HEADER,
            "image_size",
            header.image_size,
            f"a multiple of {SECTOR_SIZE} of at most {max_image_size} bytes",
            advice=CONVERT,
        )
    header_bytes = header.header_size * header.cluster_size
    if header_bytes > MAX_HEADER_BYTES:
        raise BadField(
            BAD_HEADER,
            "header_size",
            header.header_size,
            f"at most {MAX_HEADER_BYTES // header.cluster_size} clusters",
            advice=CONVERT,
        )
    _check_l1_table(reader, header, header_bytes)
    backing_file = _backing_file(reader, header, header_bytes)
    no_probe = backing_file is not None and header.features & QED_F_BACKING_FORMAT_NO_PROBE
    details = QedDetails(
        cluster_size=header.cluster_size,
        table_size=header.table_size,
        header_size=header.header_size,
        features=feature_bits(header.features, FEATURE_NAMES),
        compat_features=feature_bits(header.compat_features, NO_NAMES),
        autoclear_features=feature_bits(header.autoclear_features, NO_NAMES),
        need_check=bool(header.features & QED_F_NEED_CHECK),
        image_size=header.image_size,
        l1_table_offset=header.l1_table_offset,
        backing_file=backing_file,
        backing_filename_offset=header.backing_filename_offset,
        backing_filename_size=header.backing_filename_size,
        backing_format=NO_PROBE_FORMAT if no_probe else None,
    )
    findings = [*_structural_findings(details), *_clusters_past_the_end(reader, header)]
    return Inspection(details, header.image_size, findings)


def _clusters_past_the_end(reader: Reader, header: QEDHeader) -> list[Finding]:
    """L2 tables and data clusters the tables place past the end of the file: a cut upload (qemu
    allocates both at the end of the file as the guest writes, a whole cluster at a time). Only the
    entries that map the guest's disk are read (the guest's reads and writes reach no other): the
    L1 table's first ones in one read, and of each L2 table they point to, one read more; past
    `MAX_TABLES_READ` together, or `MAX_L2_READS` tables, only the L2 tables' places are checked."""
    length = header.table_size * header.cluster_size
    entries = length // TABLE_ENTRY_SIZE
    clusters = -(-header.image_size // header.cluster_size)  # the guest's disk, in clusters
    l1_used = -(-clusters // entries)  # at most `entries`: `inspect` checked image_size
    if l1_used * TABLE_ENTRY_SIZE > MAX_TABLES_READ:
        return []
    l1 = reader.read(header.l1_table_offset, l1_used * TABLE_ENTRY_SIZE, "qed L1 table")
    l2_offsets = nonzero_u64le(l1)
    if not l2_offsets:
        return []
    last = max(l2_offsets)
    if last + length > reader.size:
        return [_cut("an L2 table", last, length, reader.size)]
    # Each L2 table maps `entries` clusters; the last one only what is left of the disk.
    reads = [(offset, length) for offset in l2_offsets]
    if l1[-TABLE_ENTRY_SIZE:].strip(b"\0"):
        reads[-1] = (reads[-1][0], (clusters - (l1_used - 1) * entries) * TABLE_ENTRY_SIZE)
    if len(reads) > MAX_L2_READS or len(l1) + sum(size for _, size in reads) > MAX_TABLES_READ:
        return []
    # The furthest entry: a data cluster's offset, or 1 when every entry says "reads as zeros".
    furthest = max(largest_u64le(reader.read(offset, size, "qed L2 table")) for offset, size in reads)
    if furthest > QED_CLUSTER_ZERO and furthest + header.cluster_size > reader.size:
        return [_cut("a data cluster", furthest, header.cluster_size, reader.size)]
    return []


def _cut(what: str, offset: int, length: int, size: int) -> Finding:
    return TRUNCATED.finding(
        f"the qed tables place {what} at bytes {offset}..{offset + length}, but the file ends at {size}: "
        "the image was cut short (a partial upload or download); upload it again"
    )


def _check_l1_table(reader: Reader, header: QEDHeader, header_bytes: int) -> None:
    """The L1 table: cluster-aligned, after the header clusters, and inside the file."""
    offset = header.l1_table_offset
    if offset % header.cluster_size or offset < header_bytes:
        raise BadField(
            BAD_HEADER,
            "l1_table_offset",
            offset,
            f"a multiple of the cluster size {header.cluster_size}, past the header ({header_bytes} bytes)",
            advice=CONVERT,
        )
    length = header.table_size * header.cluster_size
    if offset + length > reader.size:
        raise TruncatedImage("qed L1 table", offset=offset, length=length, size=reader.size)


def _backing_file(reader: Reader, header: QEDHeader, header_bytes: int) -> str | None:
    """The backing file name, which must lie within the header clusters: recorded, never opened."""
    if not header.features & QED_F_BACKING_FILE:
        return None
    end = header.backing_filename_offset + header.backing_filename_size
    if end > header_bytes:
        raise BadField(
            BAD_HEADER,
            "backing_filename_offset + backing_filename_size",
            end,
            f"within the header clusters (at most {header_bytes})",
            advice=CONVERT,
        )
    if header.backing_filename_size > MAX_BACKING_FILENAME_SIZE:
        raise BadField(
            BAD_HEADER,
            "backing_filename_size",
            header.backing_filename_size,
            f"at most {MAX_BACKING_FILENAME_SIZE} bytes",
            advice=CONVERT,
        )
    name = reader.read(header.backing_filename_offset, header.backing_filename_size, "qed backing file name")
    return c_string(name)  # qemu copies the name as a C string


def _structural_findings(details: QedDetails) -> Iterator[Finding]:
    if details.features.unknown_bits:
        bits = ", ".join(map(str, details.features.unknown_bits))
        yield UNKNOWN_FEATURES.finding(
            f"the image sets feature bits the qed spec does not define ({bits}): qemu refuses to open "
            "it; re-export it from its source, e.g. as qcow2"
        )
    if details.need_check:
        yield NEED_CHECK.finding(
            "the image was not closed cleanly (QED_F_NEED_CHECK): its tables may be inconsistent; "
            "run `qemu-img check -r all` on it before use"
        )


def check_backing_file(details: QedDetails, policy: Policy) -> Iterable[Finding]:
    if details.backing_file is not None:
        yield backing_file_finding(BACKING_FILE, details.backing_file, details.backing_format)


def properties(details: QedDetails) -> dict[str, str]:
    """The header's cluster size (qed has no version field)."""
    return header_properties(cluster_size=details.cluster_size)


# --- The guest view ("Tables", "Logical offset translation") ------------------------------------

#: Tables are flat arrays of little-endian 64-bit offsets ("Table"), looked up one at a time.
TABLE_ENTRY = struct.Struct("<Q")
#: Data cluster offsets with a special meaning ("Data cluster offsets"): 0 unallocated, 1 zeros.
QED_CLUSTER_UNALLOCATED = 0
QED_CLUSTER_ZERO = 1


class QedGuestView(BlockMappedView):
    """The guest's disk through the L1 and L2 tables, each of table_size clusters."""

    def __init__(self, reader: Reader, details: QedDetails) -> None:
        backing = f"the backing file {details.backing_file!r}" if details.backing_file is not None else None
        super().__init__(
            reader,
            size=details.image_size,
            unit=details.cluster_size,
            what="qed data cluster",
            incomplete=backing,
        )
        self.table_length = details.table_size * details.cluster_size
        self.table_entries = self.table_length // TABLE_ENTRY.size
        self.l1_table = Table(details.l1_table_offset, self.table_entries, TABLE_ENTRY, "qed L1 table")
        #: "header_size is the number of clusters used by the header": no table or data before.
        self.first_cluster = details.header_size * details.cluster_size

    def spans(self, block: int, start: int, end: int) -> list[Span]:
        l1_index, l2_index = divmod(block, self.table_entries)
        (l2_offset,) = self.l1_table.get(self.pages, l1_index)
        if l2_offset == QED_CLUSTER_UNALLOCATED:
            return []
        self._check(l2_offset, f"L1 entry {l1_index}", self.l1_table.offset + l1_index * TABLE_ENTRY.size)
        # "Table offsets must [be] at least table_size * cluster_size bytes from the end of the file".
        if l2_offset + self.table_length > self.reader.size:
            raise TruncatedImage(
                "qed L2 table", offset=l2_offset, length=self.table_length, size=self.reader.size
            )
        l2_table = Table(l2_offset, self.table_entries, TABLE_ENTRY, "qed L2 table")
        (offset,) = l2_table.get(self.pages, l2_index)
        if offset in (QED_CLUSTER_UNALLOCATED, QED_CLUSTER_ZERO):
            return []
        self._check(offset, f"L2 entry {l2_index}", l2_offset + l2_index * TABLE_ENTRY.size)
        return [Span(file_offset=offset)]

    def _check(self, offset: int, name: str, at: int) -> None:
        """An offset must be past the header clusters (qemu's qed_check_cluster_offset), and "L1,
        L2, and data cluster offsets must be aligned to header.cluster_size"."""
        if offset % self.unit or offset < self.first_cluster:
            raise BadField(
                BAD_MAPPING,
                name,
                f"{offset:#x}",
                f"an offset aligned to the cluster size {self.unit}, past the header ({self.first_cluster} bytes)",
                offset=at,
                advice=CORRUPT_MAPPING,
            )


def guest_view(reader: Reader, details: QedDetails) -> QedGuestView:
    """The guest's disk; what the backing file would fill reads as zeros."""
    return QedGuestView(reader, details)


FORMAT = Format(
    name="qed",
    qemu_name="qed",
    probe=probe,
    inspect=inspect,
    checks=(check_backing_file,),
    details=QedDetails,
    properties=properties,
    guest=guest_view,
)
