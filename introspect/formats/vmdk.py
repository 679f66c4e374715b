"""VMware virtual disks: hosted sparse extents, descriptor files and ESX sparse (COWD) extents.

Spec: VMware "Virtual Disk Format 5.0" (the VMDK specification), sections "Hosted Sparse Extent
Header" (SparseExtentHeader, magic KDMV), "Stream-Optimized Compressed Sparse Extents" (markers,
the footer and the end-of-stream marker), "The Descriptor File" (header, "Extent Descriptions",
"The Disk Database") and "ESX Server Sparse Extent Header" (COWDisk_Header, magic COWD).

qemu's reading (block/vmdk.c) is followed wherever it decides what a hypervisor sees: the footer
of a stream-optimized extent replaces its header, a sparse header with capacity 0 turns its
embedded descriptor into a descriptor *file* (whose extents are other files), the virtual size of
a descriptor file is the sum of the extents qemu opens, and qemu finds `CID`, `parentCID`,
`createType` and `parentFileNameHint` with a plain substring search: a descriptor in which those
words appear anywhere but on their own line reads differently to qemu than to us, and is refused.

Everything needed lies in the head (header and embedded descriptor, sector 1 on) and, for a
stream-optimized extent whose grain directory is at the end, in the last three sectors: a parse
costs the head, the tail and at most one more read, whatever the virtual size. Nothing a
descriptor names is ever opened. The descriptor text itself is parsed by
`introspect.formats.vmdk_descriptor`.

The guest view (`guest_view`) reads a hosted sparse extent whose embedded descriptor names it
alone (monolithicSparse, streamOptimized), through its grain directory and grain tables (a page of
the directory and each grain table read once, kept in a bounded LRU) and, in a stream, its
compressed grains (each decompressed once, at most a grain, kept in a bounded LRU). A descriptor
file, a split disk's lone extent and an ESX redo log are `guest.no_view`: their data is in files
that are not here. A delta disk's view names its parent as `incomplete`.
"""

from __future__ import annotations

import re
import struct
import uuid
import zlib
from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from introspect import vocabulary
from introspect.decode import end_of_data, largest_u32le
from introspect.errors import BadField, BytesNotKept, ImageError, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.formats.blockmap import BlockMappedView, Span, Table
from introspect.formats.vmdk_descriptor import (
    CONVERT,
    DESCRIPTOR_LIMIT,
    DESCRIPTOR_MAX_SIZE,
    DESCRIPTOR_SYNTAX,
    MAX_NAME_LENGTH,
    NO_PARENT_CID,
    QEMU_EXTENT_TYPES,
    QUOTE_LENGTH,
    VmdkDescriptor,
    VmdkExtent,
    descriptor_text,
    number,
    parse_descriptor,
)
from introspect.lru import Lru
from introspect.model import Finding, Frozen, Geometry, Severity
from introspect.properties import geometry_properties, header_properties
from introspect.safety import GUEST_NO_VIEW, TRUNCATED, Policy, rule
from introspect.sources import Reader
from introspect.structure import LittleEndianStructure, boolean, char, chars, pad, u16, u32, u64

BAD_HEADER = rule(
    "vmdk.bad_header", Severity.REJECT, "a sparse extent header, footer or marker holds a value out of range"
)
EXTENT_PATH = rule(
    "vmdk.extent_path",
    Severity.REJECT,
    "an extent file name is absolute, has `..`, or is too long",
    names_files=True,
)
EXTENT_OUTSIDE = rule(
    "vmdk.extent_outside",
    Severity.REJECT,
    "a sparse extent's embedded descriptor names extents that are not (only) this file",
    names_files=True,
)
# A descriptor file uploaded alone, by what it splits the disk into: each its own code and hint.
DESCRIPTOR_FLAT = rule(
    "vmdk.descriptor_flat",
    Severity.REJECT,
    "a descriptor of a flat disk: the data is a raw file not uploaded",
    names_files=True,
)
DESCRIPTOR_SPLIT = rule(
    "vmdk.descriptor_split",
    Severity.REJECT,
    "a descriptor of a split (twoGbMaxExtent) disk: the parts are files not uploaded",
    names_files=True,
)
DESCRIPTOR_MULTI_EXTENT = rule(
    "vmdk.descriptor_multi_extent",
    Severity.REJECT,
    "a descriptor of a disk of several extents in other files, not uploaded",
    names_files=True,
)
DESCRIPTOR_ONLY = rule(
    "vmdk.descriptor_only",
    Severity.REJECT,
    "a descriptor alone: the disk's one sparse extent is a file not uploaded",
    names_files=True,
)
CREATE_TYPE = rule(
    "vmdk.create_type", Severity.REJECT, "the descriptor's createType is outside the policy's allow-list"
)
DELTA_DISK = rule(
    "vmdk.delta_disk",
    Severity.REJECT,
    "the disk is a delta of a parent disk (parentFileNameHint, parentCID)",
    names_files=True,
)
ESX_SPARSE = rule(
    "vmdk.esx_sparse", Severity.REJECT, "the file is an ESX sparse (COWD) extent, a vmfsSparse redo log"
)
DESCRIPTOR_LOCATION = rule(
    "vmdk.descriptor_location",
    Severity.REJECT,
    "the embedded descriptor is not at sector 1, where qemu reads CID and parentFileNameHint",
)
# Reject: qemu reads CID from the embedded descriptor of every sparse extent and refuses to open
# one without it, and nothing says which adapter or geometry the disk had.
NO_DESCRIPTOR = rule(
    "vmdk.no_descriptor", Severity.REJECT, "the sparse extent has no (or an empty) embedded descriptor"
)
DESCRIPTOR_NOT_TEXT = rule(
    "vmdk.descriptor_not_text", Severity.REJECT, "a descriptor file holds binary data (control bytes)"
)
STREAM_VERSION = rule(
    "vmdk.stream_version", Severity.WARN, "a stream-optimized extent's sparse header is below version 3"
)
WRITER_DEFAULTS = rule(
    "vmdk.writer_defaults",
    Severity.INFO,
    "the adapter type and hardware version are qemu-img's defaults (ide, 4): low confidence",
    about=("vmware_adaptertype", "hw_disk_bus", "hw_scsi_model"),
)
UNCLEAN_SHUTDOWN = rule(
    "vmdk.unclean_shutdown", Severity.WARN, "the sparse extent was not closed cleanly (uncleanShutdown)"
)

SECTOR_SIZE = 512

# --- Hosted sparse extent header (spec "Hosted Sparse Extent Header") ---------------------------

MAGIC = b"KDMV"
#: "Bit 0 valid new line detection test", "bit 1 redundant grain table will be used", "bit 16 the
#: grains are compressed", "bit 17 there are markers"; bit 2 is the zeroed-grain GTE of version 2
#: (qemu's VMDK4_FLAG_ZERO_GRAIN).
VALID_NEWLINE_DETECTION_BIT = 0
REDUNDANT_GRAIN_TABLE_BIT = 1
ZEROED_GRAIN_BIT = 2
COMPRESSED_GRAINS_BIT = 16
MARKERS_BIT = 17
FLAG_VALID_NEWLINE_DETECTION = 1 << VALID_NEWLINE_DETECTION_BIT
FLAG_REDUNDANT_GRAIN_TABLE = 1 << REDUNDANT_GRAIN_TABLE_BIT
FLAG_ZEROED_GRAIN = 1 << ZEROED_GRAIN_BIT
FLAG_COMPRESSED_GRAINS = 1 << COMPRESSED_GRAINS_BIT
FLAG_MARKERS = 1 << MARKERS_BIT
#: "gdOffset ... GD_AT_END": the grain directory, and the real header (the footer), are at the end.
GD_AT_END = 0xFFFFFFFFFFFFFFFF
#: compressAlgorithm: COMPRESSION_NONE, COMPRESSION_DEFLATE.
COMPRESS_ALGORITHMS = (0, 1)
#: Versions: 1; 2 adds zeroed-grain GTEs; 3 (changed block tracking, stream-optimized). qemu
#: refuses anything above 3.
SUPPORTED_VERSIONS = (1, 2, 3)
#: singleEndLineChar, nonEndLineChar, doubleEndLineChar1, doubleEndLineChar2: "\n", " ", "\r", "\n",
#: which a text-mode transfer would have rewritten.
NEWLINE_DETECTION_CHARS = (b"\n", b" ", b"\r", b"\n")
#: qemu's limits (vmdk_add_extent, vmdk_open_vmdk4): a grain of more than 0x200000 sectors (1 GiB)
#: "is unrealistic", a grain table has at most 512 entries (the spec's value), and the grain
#: directory at most 32 Mi entries.
#: VMware's importers (ESXi, vCenter) refuse a stream-optimized extent below version 3; qemu 2.1 to
#: 2.5 wrote version 1, later qemu-img writes 3 (the convert-stream fixture says so).
STREAM_MIN_VERSION = 3
STREAM_OPTIMIZED = "streamOptimized"
MAX_GRAIN_SECTORS = 0x200000
MAX_GTES_PER_GT = 512
MAX_GD_ENTRIES = 32 * 1024 * 1024
#: The virtual size in bytes must fit qemu's int64 offsets.
MAX_CAPACITY_SECTORS = (1 << 63) // SECTOR_SIZE - 1


class SparseExtentHeader(LittleEndianStructure):
    """SparseExtentHeader (spec "Hosted Sparse Extent Header"): sector 0 of a KDMV extent; a
    stream-optimized extent repeats it as its footer. SectorType fields count 512-byte sectors."""

    magic_number: bytes = chars(4)
    version: int = u32()
    flags: int = u32()
    capacity: int = u64()
    grain_size: int = u64()
    descriptor_offset: int = u64()
    descriptor_size: int = u64()
    num_gtes_per_gt: int = u32()
    rgd_offset: int = u64()
    gd_offset: int = u64()
    over_head: int = u64()
    unclean_shutdown: bool = boolean()
    single_end_line_char: bytes = char()
    non_end_line_char: bytes = char()
    double_end_line_char1: bytes = char()
    double_end_line_char2: bytes = char()
    compress_algorithm: int = u16()
    padding: None = pad(433)  # pad[433]


# --- Stream-optimized markers (spec "Stream-Optimized Compressed Sparse Extents") ---------------

MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3


class Marker(LittleEndianStructure):
    """A metadata marker: one sector; `val` counts the sectors of metadata that follow (0 for the
    end-of-stream marker), `size` is 0 (grain markers put the compressed length there instead)."""

    val: int = u64()
    size: int = u32()
    type: int = u32()
    padding: None = pad(496)  # pad[496]


#: The end of a stream-optimized extent: footer marker, footer (the header again), end-of-stream
#: marker, one sector each. qemu reads all three from the end of the file.
FOOTER_MARKER_FROM_END = 3 * SECTOR_SIZE
FOOTER_FROM_END = 2 * SECTOR_SIZE
EOS_MARKER_FROM_END = SECTOR_SIZE

# --- ESX Server sparse extent (spec "ESX Server Sparse Extent Header") --------------------------

COWD_MAGIC = b"COWD"
#: COWDisk_Header is 2048 bytes; only its leading fields matter here (the root/child union, the
#: generation, name and description are not read).
COWD_HEADER_SIZE = 2048


class CowdHeader(LittleEndianStructure):
    """COWDisk_Header's leading fields (spec "ESX Server Sparse Extent Header"); numSectors,
    grainSize, gdOffset and freeSector count sectors."""

    magic_number: bytes = chars(4)
    version: int = u32()
    flags: int = u32()
    num_sectors: int = u32()
    grain_size: int = u32()
    gd_offset: int = u32()
    num_gd_entries: int = u32()
    free_sector: int = u32()


# --- Descriptor (spec "The Descriptor File") ---------------------------------------------------

#: Where qemu reads CID, parentCID and parentFileNameHint in every sparse extent (s->desc_offset =
#: 0x200), whatever descriptorOffset says: the descriptor must be there for qemu and VMware to agree.
QEMU_DESCRIPTOR_SECTOR = 1
#: A descriptor file starts with this comment (qemu and VMware write "# Disk DescriptorFile").
DESCRIPTOR_MARKER = re.compile(rb"#\s*Disk\s*Descriptor\s*File", re.IGNORECASE)
VERSION_LINE = re.compile(rb"version\s*=\s*[0-9]+")
#: Control bytes that never appear in descriptor text (tab, LF and CR do).
CONTROL_BYTES = bytes(b for b in range(0x20) if b not in b"\t\n\r") + b"\x7f"
BINARY_BYTES = frozenset(CONTROL_BYTES)
#: How many leading lines the probe looks at before it must have seen `version=`.
PROBE_MAX_LINES = 64
#: How far into leading blank space the probe looks for `# Disk DescriptorFile`.
PROBE_MARKER_WINDOW = 256

#: ddb keys with typed shortcuts in the details (spec "The Disk Database").
DDB_ADAPTER_TYPE = "ddb.adapterType"
DDB_GEOMETRY = ("ddb.geometry.cylinders", "ddb.geometry.heads", "ddb.geometry.sectors")
DDB_BIOS_GEOMETRY = ("ddb.geometry.biosCylinders", "ddb.geometry.biosHeads", "ddb.geometry.biosSectors")
DDB_VIRTUAL_HW_VERSION = "ddb.virtualHWVersion"
DDB_TOOLS_VERSION = "ddb.toolsVersion"
#: VMware writes ddb.uuid as 16 hex bytes ("60 00 C2 9b ...-74 c4 ..."); VirtualBox ddb.uuid.image.
DDB_UUIDS = ("ddb.uuid", "ddb.uuid.image")
DDB_THIN_PROVISIONED = "ddb.thinProvisioned"
DDB_LONG_CONTENT_ID = "ddb.longContentID"
BOOLEANS = {"1": True, "true": True, "0": False, "false": False}
#: What qemu-img writes when not told (block/vmdk.c: adapter_type "ide", hwversion 4).
QEMU_DEFAULT_ADAPTER = "ide"
QEMU_DEFAULT_HW_VERSION = 4


# --- Details ------------------------------------------------------------------------------------


class SparseHeaderInfo(Frozen):
    """A hosted sparse extent header (or footer) as the file states it; offsets and sizes in sectors."""

    version: int
    flags: int
    valid_newline_detection: bool
    redundant_grain_table: bool
    zeroed_grain: bool
    compressed_grains: bool
    markers: bool
    capacity: int
    grain_size: int
    descriptor_offset: int
    descriptor_size: int
    num_gtes_per_gt: int
    rgd_offset: int
    gd_offset: int
    gd_at_end: bool
    overhead: int
    unclean_shutdown: bool
    compress_algorithm: int


class EsxSparseHeaderInfo(Frozen):
    """An ESX sparse (COWD) extent header; capacity is numSectors, sizes and offsets in sectors."""

    version: int
    flags: int
    capacity: int
    grain_size: int
    gd_offset: int
    num_gd_entries: int
    free_sector: int


class VmdkDetails(Frozen):
    """A VMDK: its layout, its sparse header (and footer) or COWD header, its descriptor, and the
    disk database values properties are made of. `layout` says where the data is: `sparse` in
    this file, `descriptor` in the files the extents name, `esx_sparse` in this COWD extent."""

    format: Literal["vmdk"] = "vmdk"
    layout: Literal["sparse", "descriptor", "esx_sparse"]
    version: int | None = None
    create_type: str | None = None
    cluster_size: int | None = None
    header: SparseHeaderInfo | None = None
    footer: SparseHeaderInfo | None = None
    esx_sparse_header: EsxSparseHeaderInfo | None = None
    descriptor: VmdkDescriptor | None = None
    adapter_type: str | None = None
    adapter_type_confidence: Literal["stated", "low"] | None = Field(
        None,
        description="`low` when the descriptor holds qemu-img's writer defaults (adapterType ide with "
        "virtualHWVersion 4), which may say nothing of the disk's real bus",
    )
    geometry: Geometry | None = None
    bios_geometry: Geometry | None = None
    virtual_hw_version: int | None = None
    tools_version: str | None = None
    uuid: str | None = None
    thin_provisioned: bool | None = None
    long_content_id: str | None = None
    backing_file: str | None = None
    backing_format: str | None = None


# --- Probe --------------------------------------------------------------------------------------


def probe(head: Head) -> bool:
    return head.data[:4] in (MAGIC, COWD_MAGIC) or _looks_like_descriptor(head.data)


#: The probe judges the first bytes only: a descriptor's header lines (version, CID, createType)
#: come first, and the parser checks the whole text anyway.
PROBE_WINDOW = 4096
#: What a descriptor can begin with: its `#` comments, `version=`, or blank space before either.
DESCRIPTOR_FIRST_BYTES = (b"#", b"v", b" ", b"\t", b"\r", b"\n")


def _looks_like_descriptor(data: bytes) -> bool:
    """A file that opens with `# Disk DescriptorFile` (whatever follows: binary after it makes a
    broken descriptor, not a raw disk), or text (NUL padding allowed at the end) whose leading
    comments include that line or whose first other line is `version=N`, and that says `createType=`."""
    if data[:1] not in DESCRIPTOR_FIRST_BYTES:
        return False
    if DESCRIPTOR_MARKER.match(data.lstrip(b" \t\r\n")[:PROBE_MARKER_WINDOW]):
        return True
    text, nul = descriptor_text(data[:PROBE_WINDOW])
    if nul is not None or len(text.translate(None, CONTROL_BYTES)) != len(text) or b"createType" not in text:
        return False
    for line in text.split(b"\n", PROBE_MAX_LINES)[:PROBE_MAX_LINES]:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(b"#"):
            if DESCRIPTOR_MARKER.match(stripped):
                return True
            continue
        return VERSION_LINE.fullmatch(stripped) is not None
    return False


# --- Inspect ------------------------------------------------------------------------------------


def inspect(reader: Reader, policy: Policy) -> Inspection[VmdkDetails]:
    magic = reader.read(0, len(MAGIC), "magic")
    if magic == MAGIC:
        return _inspect_sparse(reader)
    if magic == COWD_MAGIC:
        return _inspect_cowd(reader)
    text = reader.read_upto(0, DESCRIPTOR_MAX_SIZE, "descriptor file")
    _check_text(text)
    findings: list[Finding] = []
    if reader.size > DESCRIPTOR_MAX_SIZE:
        findings.append(
            DESCRIPTOR_LIMIT.finding(
                f"the descriptor file is {reader.size} bytes, more than the {DESCRIPTOR_MAX_SIZE} qemu reads: "
                f"what lies beyond is seen by VMware but not by qemu; {CONVERT}"
            )
        )
    return _descriptor_inspection(text, findings, header=None)


def _check_text(data: bytes) -> None:
    """A descriptor file is text: a control byte (a NUL other than the padding at the end, or than
    the one qemu's CID rewrite leaves before a few bytes of the text's end) in what qemu reads of it
    means it is a broken or hand-spliced file, which no reader can be trusted to see the same way."""
    text, nul = descriptor_text(data)
    if nul is not None:
        text = data[: end_of_data(data)]  # the NUL and what follows it are judged too
    if len(text.translate(None, CONTROL_BYTES)) == len(text):
        return
    at = next(i for i, byte in enumerate(text) if byte in BINARY_BYTES)
    raise BadField(
        DESCRIPTOR_NOT_TEXT,
        "descriptor file",
        f"binary (byte {text[at]:#04x})",
        "text without control bytes",
        offset=at,
        advice="the file starts as a VMDK descriptor but holds binary data: it is broken or was spliced "
        "onto other data; upload the descriptor the hypervisor wrote, or convert the disk where its "
        "extents are with `qemu-img convert -O vmdk -o subformat=streamOptimized`",
    )


def _inspect_sparse(reader: Reader) -> Inspection[VmdkDetails]:
    header = SparseExtentHeader.read(reader, "sparse extent header", 0)
    if header.capacity == 0 and header.descriptor_offset:
        # qemu (vmdk_open_vmdk4) reads such an extent's descriptor as a descriptor file and opens
        # the extents it names: the data is elsewhere, whatever this file holds.
        offset = _descriptor_start(header, reader.size)
        text = reader.read_upto(offset, DESCRIPTOR_MAX_SIZE, "embedded descriptor")
        return _descriptor_inspection(text, [], header=_header_info(header))
    footer = _read_footer(reader) if header.gd_offset == GD_AT_END else None
    effective = footer or header
    _check_header(effective, reader.size, "footer" if footer else "header")
    findings: list[Finding] = []
    if effective.unclean_shutdown:
        findings.append(
            UNCLEAN_SHUTDOWN.finding(
                "the sparse extent's uncleanShutdown flag is set: it was not closed cleanly and its grain "
                "tables may be stale; check it with `qemu-img check -f vmdk` or re-export it from VMware"
            )
        )
    descriptor = None
    if effective.descriptor_offset:
        if effective.descriptor_offset != QEMU_DESCRIPTOR_SECTOR:
            findings.append(
                DESCRIPTOR_LOCATION.finding(
                    f"the embedded descriptor is at sector {effective.descriptor_offset}, but qemu reads CID "
                    f"and parentFileNameHint at sector {QEMU_DESCRIPTOR_SECTOR}: the two readers may see "
                    f"different disks; {CONVERT}"
                )
            )
        length = effective.descriptor_size * SECTOR_SIZE
        if length > DESCRIPTOR_MAX_SIZE:
            findings.append(
                DESCRIPTOR_LIMIT.finding(
                    f"the embedded descriptor is {length} bytes, more than the {DESCRIPTOR_MAX_SIZE} qemu "
                    f"reads; {CONVERT}"
                )
            )
        raw = reader.read(
            _descriptor_start(effective, reader.size), min(length, DESCRIPTOR_MAX_SIZE), "embedded descriptor"
        )
        if raw[: end_of_data(raw)].strip(b"\0 \t\r\n"):  # NUL padding measured, not stripped
            descriptor, descriptor_findings = parse_descriptor(raw)
            findings.extend(descriptor_findings)
    if descriptor is None:
        # qemu's twoGbMaxExtentSparse extents have a descriptor area, left empty.
        findings.append(
            NO_DESCRIPTOR.finding(
                "the sparse extent has no embedded descriptor (it is one extent of a split disk): qemu "
                f"cannot open it alone and nothing says which adapter or geometry the disk had; {CONVERT}"
            )
        )
    stream = effective.flags & FLAG_COMPRESSED_GRAINS or (
        descriptor and descriptor.create_type == STREAM_OPTIMIZED
    )
    if stream and effective.version < STREAM_MIN_VERSION:
        findings.append(
            STREAM_VERSION.finding(
                f"the stream-optimized extent's sparse header is version {effective.version}: ESXi and vCenter "
                f"refuse stream-optimized disks below version {STREAM_MIN_VERSION} (qemu 2.1 to 2.5 wrote version "
                "1); convert it with a current `qemu-img convert -O vmdk -o subformat=streamOptimized`, which "
                f"writes version {STREAM_MIN_VERSION}"
            )
        )
    findings.extend(_grains_past_the_end(reader, effective))
    details = _details(
        "sparse",
        descriptor,
        version=effective.version,
        cluster_size=effective.grain_size * SECTOR_SIZE,
        header=_header_info(header),
        footer=_header_info(footer) if footer else None,
    )
    return Inspection(details, effective.capacity * SECTOR_SIZE, findings)


#: The grain directory and grain tables are read (in one read) only when all of them take at most
#: this much: 1 MiB of grain tables maps 256 Ki grains, a 16 GiB disk at qemu's 64 KiB grains.
#: Larger disks are not checked for missing grains (the header pass stays within its budget).
MAX_TABLES_READ = 1 << 20
#: Grain table entries that are not sectors: 0 unallocated, 1 a zeroed grain (version 2 and on).
GTE_UNALLOCATED = 0
GTE_ZEROED = 1


class GrainMarker(LittleEndianStructure):
    """The start of a compressed grain (spec "Stream-Optimized Compressed Sparse Extents"): its
    LBA, and the length of the compressed data that follows."""

    val: int = u64()
    size: int = u32()


def _sectors(length: int) -> int:
    """`length` bytes rounded up to whole sectors."""
    return -(-length // SECTOR_SIZE) * SECTOR_SIZE


def _grains_past_the_end(reader: Reader, header: SparseExtentHeader) -> list[Finding]:
    """Grains the grain tables point to past the end of the file: the image was cut short."""
    prefix = "the VMDK's grain tables map data past the end of the file"
    try:
        last = _last_grain(reader, header)
    except TruncatedImage as error:
        return [TRUNCATED.finding(f"{prefix}: {error}")]
    except BytesNotKept:
        return []  # a stream passed the tables: the check goes, the facts do not need them
    if last is None or last[1] <= reader.size:
        return []
    grain, end = last
    return [
        TRUNCATED.finding(
            f"{prefix}: the last grain (and what follows it) needs bytes {grain}..{end} but the file ends at "
            f"{reader.size}: the image was cut short; upload it again"
        )
    ]


def _last_grain(reader: Reader, header: SparseExtentHeader) -> tuple[int, int] | None:
    """Where the grain furthest into the file starts and ends, or None when nothing is allocated or the tables are too large to read. The grain
    directory and the grain tables that follow it (as qemu writes them) are read in one read when
    all of them fit `MAX_TABLES_READ`, tables elsewhere (a VMware stream's, before its footer) in
    one more; the last grain's marker (a compressed grain) says where it ends. At most three reads."""
    entries_per_gd = header.num_gtes_per_gt * header.grain_size
    gd_entries = -(-header.capacity // entries_per_gd)
    gt_bytes = header.num_gtes_per_gt * 4
    gd_start = header.gd_offset * SECTOR_SIZE
    gd_bytes = gd_entries * 4
    # qemu and VMware write the grain tables right after the directory: one read takes both.
    window = _sectors(gd_bytes) + gd_entries * _sectors(gt_bytes)
    if gd_entries == 0 or window > MAX_TABLES_READ:
        return None
    tables_window = reader.read_upto(gd_start, window, "grain directory and grain tables")
    directory = (
        tables_window[:gd_bytes]
        if len(tables_window) >= gd_bytes
        else reader.read(gd_start, gd_bytes, "grain directory")
    )
    tables = sorted({sector for (sector,) in struct.iter_unpack("<I", directory) if sector})
    if not tables:
        return None
    first, last = tables[0] * SECTOR_SIZE, tables[-1] * SECTOR_SIZE + gt_bytes
    if last - first > MAX_TABLES_READ:
        return None
    if gd_start <= first and last <= gd_start + len(tables_window):
        data, first = tables_window, gd_start
    else:
        data = reader.read(first, last - first, "grain tables")
    # Unallocated (0) and zeroed (1) entries are the two smallest: the largest entry is the last
    # grain unless it is one of them. Tables past the last nonzero byte of their span hold only
    # zeros (all of a new disk's): they are skipped unread.
    starts = [t * SECTOR_SIZE - first for t in tables]
    used_end = starts[0] + end_of_data(data, starts[0], starts[-1] + gt_bytes)
    largest = max(
        (largest_u32le(data, start, start + gt_bytes) for start in starts if start < used_end), default=0
    )
    if largest in (GTE_UNALLOCATED, GTE_ZEROED):
        return None
    grain = largest * SECTOR_SIZE
    if not header.flags & FLAG_COMPRESSED_GRAINS:
        return grain, grain + header.grain_size * SECTOR_SIZE
    marker = GrainMarker.read(reader, "last compressed grain's marker", grain)
    # The grain's own bytes only: qemu-img's streams can end right after their last grain (seen
    # with qemu 7.2 on incompressible data), so an end-of-stream marker is not required here.
    return grain, grain + GrainMarker.SIZE + marker.size


def _descriptor_start(header: SparseExtentHeader, size: int) -> int:
    offset = header.descriptor_offset * SECTOR_SIZE
    if offset >= size:
        raise BadField(
            BAD_HEADER,
            "descriptorOffset",
            header.descriptor_offset,
            f"a sector inside the file (it has {size // SECTOR_SIZE} sectors)",
            advice="the image is truncated or corrupt; upload it again",
        )
    if header.descriptor_size == 0:
        raise BadField(
            BAD_HEADER,
            "descriptorSize",
            0,
            "at least 1 sector when descriptorOffset is set",
            advice="the image is corrupt; re-export it",
        )
    return offset


def _read_footer(reader: Reader) -> SparseExtentHeader:
    """The footer of a stream-optimized extent (gdOffset = GD_AT_END in the header): footer marker,
    footer and end-of-stream marker in the last three sectors, which qemu reads instead of the header."""
    cut = ImageError(
        TRUNCATED,
        "the stream-optimized VMDK's header says its grain directory and real header follow the data "
        "(gdOffset = GD_AT_END), but the file does not end with the footer marker, footer and "
        "end-of-stream marker: the stream was cut short (a partial upload or download); upload it again",
        offset=reader.size,
        field="stream-optimized footer",
    )
    if reader.size % SECTOR_SIZE or reader.size < FOOTER_MARKER_FROM_END + SECTOR_SIZE:
        raise cut
    start = reader.size - FOOTER_MARKER_FROM_END
    data = reader.read(start, FOOTER_MARKER_FROM_END - EOS_MARKER_FROM_END, "stream-optimized footer")
    footer_marker = Marker.unpack(data)
    if footer_marker.type != MARKER_FOOTER:
        raise cut
    footer = SparseExtentHeader.unpack(data, FOOTER_MARKER_FROM_END - FOOTER_FROM_END)
    eos_offset = reader.size - EOS_MARKER_FROM_END
    eos = Marker.read(reader, "end-of-stream marker", eos_offset)
    checks = (
        ("footer marker type", footer_marker.type, MARKER_FOOTER, start),
        ("footer marker size", footer_marker.size, 0, start),
        ("end-of-stream marker type", eos.type, MARKER_EOS, eos_offset),
        ("end-of-stream marker size", eos.size, 0, eos_offset),
        ("end-of-stream marker val", eos.val, 0, eos_offset),
    )
    for field, actual, expected, offset in checks:
        if actual != expected:
            raise BadField(
                BAD_HEADER,
                field,
                actual,
                str(expected),
                offset=offset,
                advice="the stream-optimized image is truncated or corrupt; upload it again",
            )
    if footer.magic_number != MAGIC:
        raise BadField(
            BAD_HEADER,
            "footer magicNumber",
            footer.magic_number,
            repr(MAGIC),
            offset=reader.size - FOOTER_FROM_END,
            advice="the stream-optimized image is truncated or corrupt; upload it again",
        )
    if footer.gd_offset == GD_AT_END:
        raise BadField(
            BAD_HEADER,
            "footer gdOffset",
            footer.gd_offset,
            "the grain directory's sector, not GD_AT_END",
            offset=reader.size - FOOTER_FROM_END,
            advice="the image is corrupt; re-export it",
        )
    return footer


def _check_header(header: SparseExtentHeader, size: int, where: str) -> None:
    """Clamp every field qemu uses before anything is computed from it (qemu's vmdk_open_vmdk4)."""
    corrupt = "the image is corrupt; re-export it"
    if header.version not in SUPPORTED_VERSIONS:
        raise BadField(
            BAD_HEADER,
            f"{where} version",
            header.version,
            "1, 2 or 3",
            advice="qemu cannot open it; re-export it",
        )
    if header.flags & FLAG_VALID_NEWLINE_DETECTION:
        chars = (
            header.single_end_line_char,
            header.non_end_line_char,
            header.double_end_line_char1,
            header.double_end_line_char2,
        )
        if chars != NEWLINE_DETECTION_CHARS:
            raise BadField(
                BAD_HEADER,
                f"{where} newline detection characters",
                b"".join(chars),
                repr(b"".join(NEWLINE_DETECTION_CHARS)),
                advice="the file went through a text-mode transfer that rewrote its bytes; "
                "upload it again in binary mode",
            )
    _check_grain_size(header.grain_size, f"{where} grainSize")
    if not 1 <= header.num_gtes_per_gt <= MAX_GTES_PER_GT:
        raise BadField(
            BAD_HEADER,
            f"{where} numGTEsPerGT",
            header.num_gtes_per_gt,
            f"1 to {MAX_GTES_PER_GT}",
            advice=corrupt,
        )
    sectors_per_gd_entry = header.num_gtes_per_gt * header.grain_size
    if header.capacity > MAX_CAPACITY_SECTORS or -(-header.capacity // sectors_per_gd_entry) > MAX_GD_ENTRIES:
        raise BadField(
            BAD_HEADER,
            f"{where} capacity",
            header.capacity,
            f"at most {MAX_GD_ENTRIES} grain directory entries of {sectors_per_gd_entry} sectors "
            f"and at most {MAX_CAPACITY_SECTORS} sectors",
            advice=corrupt,
        )
    if header.compress_algorithm not in COMPRESS_ALGORITHMS:
        raise BadField(
            BAD_HEADER,
            f"{where} compressAlgorithm",
            header.compress_algorithm,
            "0 (none) or 1 (deflate)",
            advice=corrupt,
        )
    sectors = size // SECTOR_SIZE
    if header.over_head > sectors:
        # qemu: "File truncated, expecting at least N bytes". Checked before the tables it holds.
        raise TruncatedImage(
            "sparse extent metadata (overHead)", offset=0, length=header.over_head * SECTOR_SIZE, size=size
        )
    if not 0 < header.gd_offset < sectors:
        raise BadField(
            BAD_HEADER,
            f"{where} gdOffset",
            header.gd_offset,
            f"a sector inside the file, after the header (it has {sectors})",
            advice="the image is truncated or corrupt; upload it again",
        )
    if header.flags & FLAG_REDUNDANT_GRAIN_TABLE and header.rgd_offset >= sectors:
        raise BadField(
            BAD_HEADER,
            f"{where} rgdOffset",
            header.rgd_offset,
            f"a sector inside the file (it has {sectors})",
            advice="the image is truncated or corrupt; upload it again",
        )


def _check_grain_size(grain_size: int, field: str) -> None:
    """qemu's limit on a grain, in sectors (vmdk_add_extent): a power of two, and not unrealistic."""
    if grain_size == 0 or grain_size & (grain_size - 1) or grain_size > MAX_GRAIN_SECTORS:
        raise BadField(
            BAD_HEADER,
            field,
            grain_size,
            f"a power of two of at most {MAX_GRAIN_SECTORS} sectors",
            advice="the image is corrupt; re-export it",
        )


def _inspect_cowd(reader: Reader) -> Inspection[VmdkDetails]:
    header = CowdHeader.unpack(reader.read(0, COWD_HEADER_SIZE, "ESX sparse extent header"))
    corrupt = "the image is corrupt; re-export it"
    _check_grain_size(header.grain_size, "COWD grainSize")
    if header.num_gd_entries > MAX_GD_ENTRIES:
        raise BadField(
            BAD_HEADER,
            "COWD numGDEntries",
            header.num_gd_entries,
            f"at most {MAX_GD_ENTRIES}",
            advice=corrupt,
        )
    if not COWD_HEADER_SIZE <= header.gd_offset * SECTOR_SIZE < reader.size:
        raise BadField(
            BAD_HEADER,
            "COWD gdOffset",
            header.gd_offset,
            f"a sector inside the file, after the header (it has {reader.size // SECTOR_SIZE})",
            advice="the image is truncated or corrupt; upload it again",
        )
    info = EsxSparseHeaderInfo(
        version=header.version,
        flags=header.flags,
        capacity=header.num_sectors,
        grain_size=header.grain_size,
        gd_offset=header.gd_offset,
        num_gd_entries=header.num_gd_entries,
        free_sector=header.free_sector,
    )
    details = VmdkDetails(
        layout="esx_sparse",
        version=header.version,
        cluster_size=header.grain_size * SECTOR_SIZE,
        esx_sparse_header=info,
    )
    return Inspection(details, header.num_sectors * SECTOR_SIZE)


def _header_info(header: SparseExtentHeader) -> SparseHeaderInfo:
    return SparseHeaderInfo(
        version=header.version,
        flags=header.flags,
        valid_newline_detection=bool(header.flags & FLAG_VALID_NEWLINE_DETECTION),
        redundant_grain_table=bool(header.flags & FLAG_REDUNDANT_GRAIN_TABLE),
        zeroed_grain=bool(header.flags & FLAG_ZEROED_GRAIN),
        compressed_grains=bool(header.flags & FLAG_COMPRESSED_GRAINS),
        markers=bool(header.flags & FLAG_MARKERS),
        capacity=header.capacity,
        grain_size=header.grain_size,
        descriptor_offset=header.descriptor_offset,
        descriptor_size=header.descriptor_size,
        num_gtes_per_gt=header.num_gtes_per_gt,
        rgd_offset=header.rgd_offset,
        gd_offset=header.gd_offset,
        gd_at_end=header.gd_offset == GD_AT_END,
        overhead=header.over_head,
        unclean_shutdown=header.unclean_shutdown,
        compress_algorithm=header.compress_algorithm,
    )


def _descriptor_inspection(
    raw: bytes, findings: list[Finding], *, header: SparseHeaderInfo | None
) -> Inspection[VmdkDetails]:
    """A descriptor whose extents are other files: the virtual size is what qemu would sum."""
    descriptor, descriptor_findings = parse_descriptor(raw)
    if descriptor.create_type is None:
        raise BadField(
            DESCRIPTOR_SYNTAX,
            "descriptor createType",
            "missing",
            "a createType line (qemu refuses a descriptor without one)",
            advice=f"the descriptor is broken; {CONVERT}",
        )
    findings.extend(descriptor_findings)
    virtual_size = SECTOR_SIZE * sum(
        extent.sectors
        for extent in descriptor.extents
        if extent.access == "RW" and extent.type in QEMU_EXTENT_TYPES
    )
    details = _details("descriptor", descriptor, version=descriptor.version, cluster_size=None, header=header)
    return Inspection(details, virtual_size, findings)


def _details(
    layout: Literal["sparse", "descriptor"],
    descriptor: VmdkDescriptor | None,
    *,
    version: int | None,
    cluster_size: int | None,
    header: SparseHeaderInfo | None,
    footer: SparseHeaderInfo | None = None,
) -> VmdkDetails:
    ddb = descriptor.ddb if descriptor else {}
    hint = descriptor.parent_file_name_hint if descriptor else None
    return VmdkDetails(
        layout=layout,
        version=version,
        create_type=descriptor.create_type if descriptor else None,
        cluster_size=cluster_size,
        header=header,
        footer=footer,
        descriptor=descriptor,
        adapter_type=ddb.get(DDB_ADAPTER_TYPE),
        adapter_type_confidence=_adapter_confidence(ddb),
        geometry=_geometry(ddb, DDB_GEOMETRY),
        bios_geometry=_geometry(ddb, DDB_BIOS_GEOMETRY),
        virtual_hw_version=number(ddb.get(DDB_VIRTUAL_HW_VERSION)),
        tools_version=ddb.get(DDB_TOOLS_VERSION),
        uuid=next((u for key in DDB_UUIDS if (u := _uuid(ddb.get(key))) is not None), None),
        thin_provisioned=BOOLEANS.get(ddb.get(DDB_THIN_PROVISIONED, "").strip().lower()),
        long_content_id=ddb.get(DDB_LONG_CONTENT_ID),
        backing_file=hint,
        # A delta disk's parent is a VMDK by definition (qemu-img reports backing format vmdk too).
        backing_format="vmdk" if hint is not None else None,
    )


def _adapter_confidence(ddb: dict[str, str]) -> Literal["stated", "low"] | None:
    """qemu-img writes `ddb.adapterType = "ide"` and `ddb.virtualHWVersion = "4"` unless told
    otherwise (its adapter_type and hwversion options): together they are what any qemu-made VMDK
    says, not a statement about the disk's bus."""
    adapter = ddb.get(DDB_ADAPTER_TYPE)
    if adapter is None:
        return None
    defaults = adapter.strip().lower() == QEMU_DEFAULT_ADAPTER and number(
        ddb.get(DDB_VIRTUAL_HW_VERSION)
    ) == (QEMU_DEFAULT_HW_VERSION)
    return "low" if defaults else "stated"


def _geometry(ddb: dict[str, str], keys: tuple[str, str, str]) -> Geometry | None:
    cylinders, heads, sectors = (number(ddb.get(key)) for key in keys)
    if cylinders is None or heads is None or sectors is None:
        return None
    return Geometry(cylinders=cylinders, heads=heads, sectors=sectors)


def _uuid(value: str | None) -> str | None:
    if value is None:
        return None
    digits = re.sub(r"[\s-]", "", value)
    if not re.fullmatch(r"[0-9a-fA-F]{32}", digits):
        return None
    return str(uuid.UUID(digits))


# --- Checks -------------------------------------------------------------------------------------


def _extents(details: VmdkDetails) -> list[VmdkExtent]:
    return details.descriptor.extents if details.descriptor else []


def check_extent_paths(details: VmdkDetails, policy: Policy) -> Iterable[Finding]:
    """An extent named by an absolute path, a URL, a drive letter or with `..` reaches out of the
    directory the image is in, whoever opens it."""
    for extent in _extents(details):
        name = extent.file_name
        if name is None:
            continue
        if extent.file_name_truncated:
            yield EXTENT_PATH.finding(
                f"an extent file name is longer than {MAX_NAME_LENGTH} characters "
                f"({name[:QUOTE_LENGTH]!r}...): {CONVERT}"
            )
        elif _escapes(name):
            yield EXTENT_PATH.finding(
                f"the extent file name {name[:MAX_NAME_LENGTH]!r} is absolute or climbs out with `..`: "
                f"a hypervisor would open that file; {CONVERT}"
            )


def _escapes(name: str) -> bool:
    return (
        name.startswith(("/", "\\"))
        or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", name) is not None
        or ".." in re.split(r"[/\\]", name)
    )


def check_extents_in_file(details: VmdkDetails, policy: Policy) -> Iterable[Finding]:
    """A descriptor's extents are other files (never opened here, and absent from an upload); a
    monolithic sparse extent's descriptor must list exactly one SPARSE extent, this file."""
    extents = _extents(details)
    if details.layout == "descriptor":
        named = [e for e in extents if e.file_name is not None]
        if named:
            yield _descriptor_finding(details.create_type, named)
    elif details.layout == "sparse" and details.descriptor is not None and details.header is not None:
        capacity = (details.footer or details.header).capacity
        if len(extents) != 1 or extents[0].type != "SPARSE" or extents[0].sectors != capacity:
            listed = ", ".join(f"{e.type} {e.sectors}" for e in extents[:3]) or "none"
            yield EXTENT_OUTSIDE.finding(
                f"the embedded descriptor lists {len(extents)} extent(s) ({listed}) but a monolithic "
                f"sparse disk has exactly one SPARSE extent of {capacity} sectors, this file: "
                f"part of the disk would be read from elsewhere; {CONVERT}"
            )


#: Extent types whose file is the disk's bytes as they are (a raw disk, possibly at an offset).
FLAT_EXTENT_TYPES = frozenset({"FLAT", "VMFS", "VMFSRAW", "VMFSRDM"})
#: createTypes that split one disk into files of at most 2 GB (spec "The Descriptor File").
SPLIT_CREATE_TYPES = frozenset({"twoGbMaxExtentSparse", "twoGbMaxExtentFlat"})
#: How every descriptor finding ends: where all the files are, make one self-contained image.
JOIN = (
    "where all its files are, make one self-contained image: `qemu-img convert -f vmdk DESCRIPTOR.vmdk "
    "-O vmdk -o subformat=streamOptimized` (or `vmware-vdiskmanager -r DESCRIPTOR.vmdk -t 5`), and upload that"
)


def _descriptor_finding(create_type: str | None, named: list[VmdkExtent]) -> Finding:
    """What a descriptor file uploaded alone is, by how it splits the disk, each with its own code."""
    names = [e.file_name or "" for e in named]
    shown = ", ".join(repr(n[:QUOTE_LENGTH]) for n in names[:3]) + (", ..." if len(names) > 3 else "")
    if create_type in SPLIT_CREATE_TYPES:
        return DESCRIPTOR_SPLIT.finding(
            f"this is the descriptor of a split disk ({create_type}): its data is in {len(names)} other "
            f"file(s) ({shown}), not part of this upload; {JOIN}"
        )
    if len(named) > 1:
        return DESCRIPTOR_MULTI_EXTENT.finding(
            f"this is the descriptor of a disk made of {len(names)} extents in other files ({shown}), not part "
            f"of this upload; {JOIN}"
        )
    if named[0].type in FLAT_EXTENT_TYPES:
        return DESCRIPTOR_FLAT.finding(
            f"this is the descriptor of a flat disk: its data is {shown}, a raw disk not part of this upload; "
            f"upload that file itself as disk_format=raw (and this descriptor's adapter as hw_disk_bus), or, {JOIN}"
        )
    return DESCRIPTOR_ONLY.finding(
        f"this is only the descriptor of a disk whose data is the {named[0].type} extent {shown}, not part of "
        f"this upload; {JOIN}"
    )


def check_writer_defaults(details: VmdkDetails, policy: Policy) -> Iterable[Finding]:
    """qemu-img's writer defaults are recorded as stated, with low confidence, and said."""
    if details.adapter_type_confidence == "low":
        yield WRITER_DEFAULTS.finding(
            'the descriptor says ddb.adapterType = "ide" with ddb.virtualHWVersion = "4", what qemu-img writes '
            "when not told otherwise: the disk may have been on another bus; check how the VM booted it and "
            "set hw_disk_bus (or re-export with `qemu-img convert -O vmdk -o adapter_type=lsilogic`) if not IDE"
        )


def check_create_type(details: VmdkDetails, policy: Policy) -> Iterable[Finding]:
    create_type = details.create_type
    if create_type is not None and create_type not in policy.vmdk_create_types:
        allowed = ", ".join(sorted(policy.vmdk_create_types))
        yield CREATE_TYPE.finding(
            f"the createType is {create_type[:QUOTE_LENGTH]!r}, which the policy does not accept "
            f"(allowed: {allowed}); {CONVERT}"
        )


def check_delta(details: VmdkDetails, policy: Policy) -> Iterable[Finding]:
    descriptor = details.descriptor
    if descriptor is None:
        return
    parent_cid = _parent_cid(descriptor.parent_cid)
    has_parent = parent_cid is not None and parent_cid != NO_PARENT_CID
    if descriptor.parent_file_name_hint is not None or has_parent:
        hint = descriptor.parent_file_name_hint
        yield DELTA_DISK.finding(
            f"the disk is a delta of a parent disk (parentFileNameHint {hint!r}, parentCID "
            f"{descriptor.parent_cid!r}) and holds only the changes: flatten it with "
            "`qemu-img convert -O vmdk -o subformat=streamOptimized` on the top of the chain"
        )


def _parent_cid(value: str | None) -> int | None:
    if value is None or not re.fullmatch(r"[0-9a-fA-F]{1,8}", value.strip()):
        return None
    return int(value, 16)


def check_esx_sparse(details: VmdkDetails, policy: Policy) -> Iterable[Finding]:
    if details.layout == "esx_sparse":
        yield ESX_SPARSE.finding(
            "the file is an ESX sparse (COWD) extent: a vmfsSparse redo log or snapshot that needs "
            f"its descriptor and parent on a VMFS datastore; {CONVERT} from ESX"
        )


# --- Guest view ---------------------------------------------------------------------------------

#: A grain table entry and a grain directory entry: a sector number (uint32, little-endian).
SECTOR_ENTRY = struct.Struct("<I")
#: Compressed grains are decompressed whole: a grain larger than this (qemu and VMware write 64
#: KiB grains in every stream) is not viewed, so that one grain never costs more memory than this.
MAX_COMPRESSED_GRAIN = 1 << 20
#: qemu's bound on a grain marker's compressed length (vmdk_read_extent: the data must fit its
#: buffer of two grains, the marker's 12 bytes included); a larger `size` is hostile.
COMPRESSED_GRAIN_FACTOR = 2
#: The first read of a compressed grain: its marker and, for a grain that compresses well, all of
#: its data; a grain whose data is longer costs one more read of exactly the rest.
GRAIN_FIRST_READ = 4096
#: Decompressed grains kept (bytes), so that reading a grain piece by piece, at any time of a guest
#: pass, costs one read and one decompression (32 grains of 64 KiB; a guest pass touches about 30).
GRAIN_CACHE_BYTES = 2 << 20


class SparseExtentView(BlockMappedView):
    """The guest's disk in a hosted sparse extent (spec "Hosted Sparse Extent Header", "Grain
    Directories and Grain Tables"): the grain directory points to grain tables, whose entries are
    the sectors of the grains. An entry of 0 is a grain not allocated, 1 (with the zeroed-grain
    flag) a grain of zeros: both read as zeros (a delta disk's parent would hold the first, and is
    never read). The redundant grain directory is not read. A stream-optimized extent's entries
    point to grain markers: the grain's LBA and compressed length, then its deflate (zlib) data."""

    def __init__(self, reader: Reader, header: SparseHeaderInfo, incomplete: str | None) -> None:
        grain = header.grain_size * SECTOR_SIZE
        super().__init__(reader, size=header.capacity * SECTOR_SIZE, unit=grain, incomplete=incomplete)
        self.gtes_per_gt = header.num_gtes_per_gt
        directory_entries = -(-header.capacity // (header.num_gtes_per_gt * header.grain_size))
        self.directory = Table(
            header.gd_offset * SECTOR_SIZE, directory_entries, SECTOR_ENTRY, "grain directory"
        )
        self.zeroed_grains = header.zeroed_grain
        self.compressed = header.compressed_grains
        self.grain_sectors = header.grain_size
        # Keyed by the grain and where its table says it is: a marker is checked for each grain.
        self.grains: Lru[tuple[int, int], bytes] = Lru(GRAIN_CACHE_BYTES // grain)

    def spans(self, block: int, start: int, end: int) -> list[Span]:
        (table_sector,) = self.directory.get(self.pages, block // self.gtes_per_gt)
        if table_sector == 0:
            return []
        table = Table(table_sector * SECTOR_SIZE, self.gtes_per_gt, SECTOR_ENTRY, "grain table")
        (sector,) = table.get(self.pages, block % self.gtes_per_gt)
        if sector == GTE_UNALLOCATED or (sector == GTE_ZEROED and self.zeroed_grains):
            return []
        if self.compressed:
            return [Span(data=self._grain(block, sector))]
        return [Span(file_offset=sector * SECTOR_SIZE)]

    def _grain(self, block: int, sector: int) -> bytes:
        """A compressed grain's bytes, decompressed (at most the grain) and cached."""
        cached = self.grains.get((block, sector))
        if cached is not None:
            return cached
        offset = sector * SECTOR_SIZE
        first = self.reader.read_upto(offset, GRAIN_FIRST_READ, "grain marker")
        if len(first) < GrainMarker.SIZE:
            raise TruncatedImage(
                "grain marker", offset=offset, length=GrainMarker.SIZE, size=self.reader.size
            )
        marker = GrainMarker.unpack(first)
        largest = COMPRESSED_GRAIN_FACTOR * self.unit - GrainMarker.SIZE
        lba = block * self.grain_sectors
        corrupt = "the stream-optimized extent is corrupt; re-export it"
        if not 0 < marker.size <= largest:
            raise BadField(
                BAD_HEADER,
                "grain marker size",
                marker.size,
                f"1 to {largest} bytes",
                offset=offset,
                advice=corrupt,
            )
        if marker.val != lba:
            raise BadField(
                BAD_HEADER,
                "grain marker LBA",
                marker.val,
                f"{lba}, the sector of the grain whose table entry points here",
                offset=offset,
                advice=corrupt,
            )
        data = first[GrainMarker.SIZE : GrainMarker.SIZE + marker.size]
        if len(data) < marker.size:
            data += self.reader.read(offset + len(first), marker.size - len(data), "compressed grain")
        # The end of the disk may fall inside the last grain: only that much must come out.
        needed = min(self.unit, self.size - block * self.unit)
        try:
            grain = zlib.decompressobj().decompress(data, self.unit)
        except zlib.error as error:
            raise BadField(
                BAD_HEADER,
                "compressed grain",
                str(error),
                "deflate (zlib) data",
                offset=offset,
                advice=corrupt,
            ) from None
        if len(grain) < needed:
            raise BadField(
                BAD_HEADER,
                "compressed grain length",
                len(grain),
                f"{needed} bytes once decompressed",
                offset=offset,
                advice=corrupt,
            )
        self.grains.put((block, sector), grain)
        return grain


def guest_view(reader: Reader, details: VmdkDetails) -> SparseExtentView:
    """A hosted sparse extent whose embedded descriptor names it alone is its own disk; a
    descriptor file, a split disk's lone extent and an ESX redo log need files that are not here."""
    descriptor = details.descriptor
    header = details.footer or details.header
    if details.layout == "esx_sparse":
        raise ImageError(
            GUEST_NO_VIEW,
            "the file is an ESX sparse (COWD) redo log: the disk is its parent with these changes, and the "
            f"parent is not here; {CONVERT} from ESX",
        )
    if details.layout == "descriptor" or descriptor is None or header is None:
        extents = _extents(details)
        if not extents:
            raise ImageError(
                GUEST_NO_VIEW,
                "the sparse extent has no embedded descriptor: it is one extent of a split disk, whose "
                f"descriptor and other extents are not here; {CONVERT}",
            )
        raise ImageError(GUEST_NO_VIEW, f"the disk's data is in other files ({_named(extents)}); {JOIN}")
    extents = descriptor.extents
    if len(extents) != 1 or extents[0].type != "SPARSE" or extents[0].sectors != header.capacity:
        raise ImageError(
            GUEST_NO_VIEW,
            f"the embedded descriptor lists extents that are not (only) this file ({_named(extents)}): part of "
            f"the disk would be read from elsewhere; {CONVERT}",
        )
    if header.compressed_grains and header.grain_size * SECTOR_SIZE > MAX_COMPRESSED_GRAIN:
        raise ImageError(
            GUEST_NO_VIEW,
            f"the stream-optimized extent has grains of {header.grain_size * SECTOR_SIZE} bytes; introspect "
            f"decompresses grains of at most {MAX_COMPRESSED_GRAIN} (VMware and qemu write 65536); {CONVERT}",
        )
    return SparseExtentView(reader, header, _parent(descriptor))


def _named(extents: list[VmdkExtent]) -> str:
    shown = [f"{e.type} {e.file_name[:QUOTE_LENGTH]!r}" if e.file_name else e.type for e in extents[:3]]
    return ", ".join(shown) + (", ..." if len(extents) > 3 else "") if shown else "none"


def _parent(descriptor: VmdkDescriptor) -> str | None:
    """What holds the grains a delta disk does not: its parent, by the names the descriptor gives."""
    parent_cid = _parent_cid(descriptor.parent_cid)
    hint = descriptor.parent_file_name_hint
    if hint is None and (parent_cid is None or parent_cid == NO_PARENT_CID):
        return None
    name = repr(hint) if hint is not None else f"with CID {descriptor.parent_cid!r}"
    return f"the parent disk {name} (parentFileNameHint, parentCID), not read: its grains read as zeros"


# --- Properties -----------------------------------------------------------------------------------

#: createType -> vmware_disktype, the words of Glance 33.0.0's metadefs (compute-vmware.json):
#: monolithicSparse, twoGbMaxExtentSparse -> sparse; streamOptimized -> streamOptimized; every flat
#: or VMFS type -> preallocated, thin ones included (ddb.thinProvisioned = 1, vmfsThin). Nova 33.0.0
#: reads vmware_disktype as hw_disk_type (nova/objects/image_meta.py _legacy_property_map), and its
#: VMware driver sends sparse and streamOptimized images down their own paths and every flat
#: variant, `thin` and `preallocated` alike, down one (nova/virt/vmwareapi/vmops.py
#: _get_image_callbacks, constants.SUPPORTED_FLAT_VARIANTS): `thin` would change nothing in Nova
#: and is not in Glance's enum. The thin flag stays in the Report (details.thin_provisioned).
VMWARE_DISKTYPE = {
    "monolithicsparse": "sparse",
    "twogbmaxextentsparse": "sparse",
    "streamoptimized": "streamOptimized",
    "monolithicflat": "preallocated",
    "twogbmaxextentflat": "preallocated",
    "vmfs": "preallocated",
    "vmfspreallocated": "preallocated",
    "vmfseagerzeroedthick": "preallocated",
    "vmfsthin": "preallocated",
}

#: ddb.adapterType -> (vmware_adaptertype, hw_disk_bus, hw_scsi_model or None). Nova 33.0.0 derives
#: hw_disk_bus and hw_scsi_model from vmware_adaptertype itself (nova/objects/image_meta.py
#: _set_attr_from_legacy_names; fields.SCSIModel.coerce) and its VMware driver maps them back to
#: an adapter (nova/virt/vmwareapi/images.py VMwareImage.from_image). A BusLogic adapter gets no
#: hw_scsi_model: Nova's libvirt driver hands hw_scsi_model to libvirt as the SCSI controller
#: model (nova/virt/libvirt/driver.py _get_scsi_controller) and QEMU has no BusLogic controller
#: (libvirt's qemuBuildControllerSCSIDevProps: "Unsupported controller model"), so `buslogic`
#: there would only break a KVM boot; vmware_adaptertype=busLogic already tells the VMware driver.
ADAPTERS: dict[str, tuple[str, str, str | None]] = {
    "ide": ("ide", "ide", None),
    "buslogic": ("busLogic", "scsi", None),
    "lsilogic": ("lsiLogic", "scsi", "lsilogic"),
    "legacyesx": ("lsiLogic", "scsi", "lsilogic"),
    "lsisas1068": ("lsiLogicsas", "scsi", "lsisas1068"),
    "pvscsi": ("paraVirtual", "scsi", "vmpvscsi"),
}


def vmware_properties(details: VmdkDetails) -> dict[str, str]:
    """Nova's vmware_* and hw_* names, from the descriptor, when it states them."""
    properties = {}
    disktype = VMWARE_DISKTYPE.get((details.create_type or "").lower())
    if disktype:
        properties["vmware_disktype"] = disktype
    adapter = ADAPTERS.get((details.adapter_type or "").lower())
    if adapter:
        adaptertype, bus, scsi_model = adapter
        properties["vmware_adaptertype"] = adaptertype
        properties["hw_disk_bus"] = bus
        if scsi_model:
            properties["hw_scsi_model"] = scsi_model
    return properties


def properties(details: VmdkDetails) -> dict[str, str]:
    """Nova's names first (they decide how the VM boots), then ddb.geometry.*, the createType (when
    it is a word, as every createType is) and ddb.virtualHWVersion, and the sparse header's version
    and grain size."""
    mapped = {**vmware_properties(details), **geometry_properties(details.geometry)}
    if details.create_type and vocabulary.check("introspect_vmdk_create_type", details.create_type) is None:
        mapped["introspect_vmdk_create_type"] = details.create_type
    if details.virtual_hw_version is not None:
        mapped["introspect_virtual_hw_version"] = str(details.virtual_hw_version)
    mapped.update(header_properties(version=details.version, cluster_size=details.cluster_size))
    return mapped


FORMAT = Format(
    name="vmdk",
    qemu_name="vmdk",
    probe=probe,
    inspect=inspect,
    checks=(
        check_extent_paths,
        check_extents_in_file,
        check_create_type,
        check_delta,
        check_esx_sparse,
        check_writer_defaults,
    ),
    details=VmdkDetails,
    properties=properties,
    guest=guest_view,
)
