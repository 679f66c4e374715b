"""Microsoft Virtual Hard Disk (VHD), as qemu calls it `vpc`.

Spec: Microsoft "Virtual Hard Disk Image Format Specification" v1.0 (2006): "Hard Disk Footer
Format", "Dynamic Disk Header Format" (with its parent locator entries) and "Appendix: CHS
Calculation". Every VHD ends with a 512-byte footer (older tools wrote 511 bytes); dynamic and
differencing disks also keep a copy at offset 0 and point from it to a 1024-byte dynamic disk
header. All fields are big-endian.

What qemu-img (7.2, `block/vpc.c`) does, which decides `virtual_size`: it reads the footer at
offset 0 and falls back to the one at the end (then the disk is fixed for qemu), refuses a footer
whose checksum is wrong, and sizes the disk by its CHS geometry unless the creator application is
one known to write a reliable current size (Hyper-V, Disk2vhd, XenServer, XenConverter, qemu with
`force_size`) or the geometry is the CHS maximum, in which case it uses the footer's current size.
qemu 10.0 inverted that table (CHS only for "vpc " and "qemu", current size for everyone else,
Azure's "wa\\0\\0" included); `CURRENT_SIZE_CREATORS` follows the qemu-img this project runs (7.2),
and a test runs that qemu-img on rewritten creators to prove it.

The guest view: a fixed disk is its file before the footer (`RawGuestView`); a dynamic or
differencing disk is read through its BAT and each block's sector bitmap ("Block Allocation Table
and Data Blocks"), a page of either read once and kept in a bounded LRU. qemu reads a dynamic
disk's blocks whole and ignores their bitmaps (it sets every bit of a block it allocates); the spec
says a clear bit is a sector the block does not hold, which reads as zeros here. A differencing
disk's parent is never opened: its sectors read as zeros and the view's `incomplete` names it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field

from introspect.decode import padded_text, u32s, utf16_c_string, uuid_be
from introspect.errors import BadField, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.formats.blockmap import BlockMappedView, Span, Table, bitmap_runs
from introspect.formats.partitions import PartitionTable
from introspect.formats.raw import RawGuestView, read_disk
from introspect.model import Finding, Firmware, Frozen, Geometry, Severity
from introspect.properties import firmware_properties, geometry_properties, header_properties
from introspect.safety import TRUNCATED, Policy, rule
from introspect.sources import Reader
from introspect.structure import BigEndianStructure, chars, pad, u8, u16, u32, u64, unpack_array

# --- Rules -----------------------------------------------------------------------------------

INVALID = rule("vhd.invalid", Severity.REJECT, "a VHD structure holds a value the spec does not allow")
DIFFERENCING = rule(
    "vhd.differencing", Severity.REJECT, "the VHD is a differencing disk with a parent", names_files=True
)
FOOTER_CHECKSUM = rule(
    "vhd.footer_checksum", Severity.REJECT, "the footer qemu reads has a wrong checksum (qemu refuses it)"
)
FOOTER_COPY_CHECKSUM = rule(
    "vhd.footer_copy_checksum", Severity.WARN, "the other copy of the footer has a wrong checksum"
)
FOOTER_MISMATCH = rule("vhd.footer_mismatch", Severity.WARN, "the footers at offset 0 and at the end differ")
OLD_FOOTER = rule("vhd.old_footer", Severity.WARN, "the footer at the end is the old 511-byte form")
DYNAMIC_HEADER_CHECKSUM = rule(
    "vhd.dynamic_header_checksum", Severity.WARN, "the dynamic disk header has a wrong checksum"
)
SAVED_STATE = rule("vhd.saved_state", Severity.WARN, "the disk was left in a saved state")
# Reject: qemu 7.2 sizes most disks by CHS, Hyper-V, Azure and qemu 10 by the current size, so two
# hypervisors would see disks of different sizes (and one of them data the other cannot reach).
SIZE_FIELDS_DISAGREE = rule(
    "vhd.size_fields_disagree",
    Severity.REJECT,
    "the footer's current size and its CHS geometry describe disks of different sizes",
)

# --- Hard Disk Footer (spec: "Hard Disk Footer Format") --------------------------------------

FOOTER_SIZE = 512
#: Virtual PC before 2004 wrote a 511-byte footer; the spec says to accept it.
OLD_FOOTER_SIZE = 511
FOOTER_COOKIE = b"conectix"
FEATURE_TEMPORARY_BIT = 0
FEATURE_TEMPORARY = 1 << FEATURE_TEMPORARY_BIT
DiskType = Literal["fixed", "dynamic", "differencing"]
DISK_TYPES: dict[int, DiskType] = {2: "fixed", 3: "dynamic", 4: "differencing"}
#: Time stamps count seconds from 2000-01-01 00:00:00 UTC.
TIMESTAMP_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
SECTOR_SIZE = 512
#: The CHS maximum of the spec's appendix: 65535 cylinders, 16 heads, 255 sectors per track.
MAX_GEOMETRY = (65535, 16, 255)
#: The spec's largest disk (2040 GiB, in sectors); qemu refuses anything larger.
MAX_SECTORS = 0xFF000000
#: Creator applications whose Current Size qemu 7.2 trusts over the CHS geometry ("win " Hyper-V,
#: "qem2" qemu with force_size, "d2v " Disk2vhd, "CTXS" XenConverter, "tap\0" XenServer).
CURRENT_SIZE_CREATORS = frozenset({b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"})


class HardDiskFooter(BigEndianStructure):
    """The footer (spec: "Hard Disk Footer Format"); 427 reserved bytes follow, which the
    checksum covers."""

    cookie: bytes = chars(8)
    features: int = u32()
    file_format_version: int = u32()
    data_offset: int = u64()
    time_stamp: int = u32()
    creator_application: bytes = chars(4)
    creator_version: int = u32()
    creator_host_os: bytes = chars(4)
    original_size: int = u64()
    current_size: int = u64()
    cylinders: int = u16()  # Disk Geometry: cylinder, heads, sectors per track
    heads: int = u8()
    sectors_per_track: int = u8()
    disk_type: int = u32()
    checksum: int = u32()
    unique_id: bytes = chars(16)
    saved_state: int = u8()


#: The Checksum field, which the checksum skips.
FOOTER_CHECKSUM_OFFSET = HardDiskFooter.offset_of("checksum")


# --- Dynamic Disk Header (spec: "Dynamic Disk Header Format") --------------------------------

DYNAMIC_HEADER_SIZE = 1024
DYNAMIC_HEADER_COOKIE = b"cxsparse"
PARENT_LOCATOR_COUNT = 8
#: A block holds at least one sector (qemu's floor); the spec's default is 2 MiB.
MIN_BLOCK_SIZE = SECTOR_SIZE
#: The parent name as stored: 512 bytes of UTF-16 are at most 256 characters.
PARENT_NAME_BYTES = 512
BAT_ENTRY_SIZE = 4


class ParentLocatorEntry(BigEndianStructure):
    """Where a differencing disk's parent may be found (recorded, never read or opened)."""

    platform_code: bytes = chars(4)
    platform_data_space: int = u32()
    platform_data_length: int = u32()
    reserved: None = pad(4)
    platform_data_offset: int = u64()


class DynamicDiskHeader(BigEndianStructure):
    """The dynamic disk header (spec: "Dynamic Disk Header Format"); 256 reserved bytes follow."""

    cookie: bytes = chars(8)
    data_offset: int = u64()
    table_offset: int = u64()
    header_version: int = u32()
    max_table_entries: int = u32()
    block_size: int = u32()
    checksum: int = u32()
    parent_unique_id: bytes = chars(16)
    parent_time_stamp: int = u32()
    reserved: None = pad(4)
    parent_unicode_name: bytes = chars(PARENT_NAME_BYTES)  # UTF-16BE
    parent_locator_entries: bytes = chars(PARENT_LOCATOR_COUNT * ParentLocatorEntry.SIZE)


#: The Checksum field within the header.
DYNAMIC_HEADER_CHECKSUM_OFFSET = DynamicDiskHeader.offset_of("checksum")


def checksum(data: bytes, checksum_offset: int) -> int:
    """One's complement of the byte sum, the checksum field counted as zero (spec, "Checksum")."""
    total = sum(data) - sum(data[checksum_offset : checksum_offset + 4])
    return ~total & 0xFFFFFFFF


# --- Details ----------------------------------------------------------------------------------


class VhdFooter(Frozen):
    """The hard disk footer qemu reads (offset 0 when present, else the end of the file)."""

    cookie: str
    features: int
    temporary: bool
    file_format_version: int
    data_offset: int
    timestamp: int
    timestamp_utc: str
    creator_application: str
    creator_version: str
    creator_host_os: str
    original_size: int
    current_size: int
    geometry: Geometry
    disk_type: DiskType
    checksum: int
    checksum_valid: bool
    uuid: str
    saved_state: bool


class VhdParentLocator(Frozen):
    """One used parent locator entry: where the parent's name is stored (never read)."""

    platform_code: str
    platform_data_space: int
    platform_data_length: int
    platform_data_offset: int


class VhdDynamicHeader(Frozen):
    """The dynamic disk header of a dynamic or differencing VHD."""

    offset: int
    cookie: str
    data_offset: int
    table_offset: int
    header_version: int
    max_table_entries: int
    block_size: int
    checksum: int
    checksum_valid: bool
    parent_uuid: str | None
    parent_timestamp: int
    parent_unicode_name: str | None
    parent_locators: list[VhdParentLocator]


class VhdDetails(Frozen):
    """A VHD's footer(s) and dynamic header, and how its virtual size was derived."""

    format: Literal["vhd"] = "vhd"
    version: int
    footer: VhdFooter
    footer_at_start: bool
    footer_at_end: bool
    footer_end_length: int | None
    footers_match: bool | None
    footer_copy_checksum_valid: bool | None
    disk_type: DiskType
    geometry: Geometry
    uuid: str
    chs_size: int
    current_size: int
    size_from: Literal["chs", "current_size"]
    block_size: int | None
    dynamic_header: VhdDynamicHeader | None
    backing_file: str | None
    partition_table: PartitionTable | None = Field(
        None, description="a fixed disk's partition table: its data is a raw disk from offset 0"
    )
    firmware: Firmware | None = Field(
        None, description="what a fixed disk's partition table says of firmware"
    )


# --- Parsing ----------------------------------------------------------------------------------


def probe(head: Head) -> bool:
    return (
        head.data.startswith(FOOTER_COOKIE)
        or head.tail[-FOOTER_SIZE:].startswith(FOOTER_COOKIE)
        or head.tail[-OLD_FOOTER_SIZE:].startswith(FOOTER_COOKIE)
    )


def _uuid(raw: bytes) -> str | None:
    return None if raw == bytes(16) else uuid_be(raw)


@dataclass(frozen=True, slots=True)
class _FooterCopy:
    footer: HardDiskFooter
    offset: int
    length: int
    checksum_valid: bool


def _read_footer(data: bytes, offset: int) -> _FooterCopy:
    length = len(data)
    footer = HardDiskFooter.unpack(data.ljust(FOOTER_SIZE, b"\0"))
    return _FooterCopy(footer, offset, length, checksum(data, FOOTER_CHECKSUM_OFFSET) == footer.checksum)


def _find_footers(reader: Reader) -> tuple[_FooterCopy | None, _FooterCopy | None]:
    """The copy at offset 0 (dynamic disks) and the one at the end (every disk), if present."""
    start = None
    if reader.read_upto(0, len(FOOTER_COOKIE), "footer cookie") == FOOTER_COOKIE:
        start = _read_footer(reader.read(0, FOOTER_SIZE, "hard disk footer at offset 0"), 0)
    end = None
    tail = reader.tail()
    for length in (FOOTER_SIZE, OLD_FOOTER_SIZE):
        if len(tail) >= length and tail[-length:].startswith(FOOTER_COOKIE):
            end = _read_footer(tail[-length:], reader.size - length)
            break
    return start, end


def _footer_model(copy: _FooterCopy) -> VhdFooter:
    f = copy.footer
    disk_type = DISK_TYPES.get(f.disk_type)
    if disk_type is None:
        raise BadField(
            INVALID,
            "footer disk type",
            f.disk_type,
            "2 (fixed), 3 (dynamic) or 4 (differencing)",
            offset=copy.offset,
            advice="the footer is corrupt; re-export the disk from the tool that made it",
        )
    return VhdFooter(
        cookie=padded_text(f.cookie),
        features=f.features,
        temporary=bool(f.features & FEATURE_TEMPORARY),
        file_format_version=f.file_format_version,
        data_offset=f.data_offset,
        timestamp=f.time_stamp,
        timestamp_utc=(TIMESTAMP_EPOCH + timedelta(seconds=f.time_stamp)).isoformat(),
        creator_application=padded_text(f.creator_application),
        creator_version=f"{f.creator_version >> 16}.{f.creator_version & 0xFFFF}",
        creator_host_os=padded_text(f.creator_host_os),
        original_size=f.original_size,
        current_size=f.current_size,
        geometry=Geometry(cylinders=f.cylinders, heads=f.heads, sectors=f.sectors_per_track),
        disk_type=disk_type,
        checksum=f.checksum,
        checksum_valid=copy.checksum_valid,
        uuid=uuid_be(f.unique_id),
        saved_state=bool(f.saved_state),
    )


def virtual_sectors(footer: HardDiskFooter) -> tuple[int, Literal["chs", "current_size"]]:
    """Disk size in sectors exactly as qemu 7.2's vpc_open computes it, and which field it used."""
    chs = footer.cylinders * footer.heads * footer.sectors_per_track
    geometry = (footer.cylinders, footer.heads, footer.sectors_per_track)
    if footer.creator_application in CURRENT_SIZE_CREATORS or geometry == MAX_GEOMETRY:
        return footer.current_size // SECTOR_SIZE, "current_size"
    return chs, "chs"


def _size_disagreement(footer: HardDiskFooter, size_from: Literal["chs", "current_size"]) -> Finding | None:
    """The two sizes a footer states, when they are further apart than CHS rounding explains.

    The spec's CHS algorithm (Appendix) rounds the sector count to whole cylinders, so in a
    consistent footer the two differ by less than one cylinder (qemu without force_size makes them
    equal; Hyper-V and Virtual PC round the geometry down). The CHS maximum is no size claim: every
    reader then uses the current size (qemu with force_size writes it so)."""
    chs = footer.cylinders * footer.heads * footer.sectors_per_track * SECTOR_SIZE
    current = footer.current_size
    cylinder = footer.heads * footer.sectors_per_track * SECTOR_SIZE
    at_maximum = (footer.cylinders, footer.heads, footer.sectors_per_track) == MAX_GEOMETRY
    if at_maximum or abs(current - chs) < max(cylinder, SECTOR_SIZE):
        return None
    used, other = ("CHS geometry", "current size") if size_from == "chs" else ("current size", "CHS geometry")
    return SIZE_FIELDS_DISAGREE.finding(
        f"the VHD footer's current size ({current} bytes) and its CHS geometry "
        f"{footer.cylinders}/{footer.heads}/{footer.sectors_per_track} ({chs} bytes) describe different disks: "
        f"qemu-img 7.2 uses the {used} for this creator, Hyper-V, Azure and qemu 10 the current size, so "
        f"hypervisors would disagree on the disk (the {other} is ignored here); rebuild the footer from the "
        "size that is right, e.g. `qemu-img convert -O vpc -o subformat=fixed,force_size=on`"
    )


def _dynamic_header(reader: Reader, copy: _FooterCopy, sectors: int) -> VhdDynamicHeader:
    offset = copy.footer.data_offset
    last = reader.size - DYNAMIC_HEADER_SIZE
    if last < offset < MAX_SECTORS * SECTOR_SIZE:
        # Where a VHD could hold it, but the file stops first: cut short.
        raise TruncatedImage(
            "dynamic disk header", offset=offset, length=DYNAMIC_HEADER_SIZE, size=reader.size
        )
    if offset > last:
        raise BadField(
            INVALID,
            "footer data offset",
            offset,
            f"the offset of the dynamic disk header, at most {last}",
            offset=copy.offset,
            advice="the footer is corrupt or the image was cut short; upload it again",
        )
    data = reader.read(offset, DYNAMIC_HEADER_SIZE, "dynamic disk header")
    h = DynamicDiskHeader.unpack(data)
    if h.cookie != DYNAMIC_HEADER_COOKIE:
        raise BadField(
            INVALID,
            "dynamic disk header cookie",
            h.cookie,
            repr(DYNAMIC_HEADER_COOKIE),
            offset=offset,
            advice="the footer points at something else; the image is corrupt",
        )
    block_size = h.block_size
    if block_size < MIN_BLOCK_SIZE or block_size & (block_size - 1):
        raise BadField(
            INVALID,
            "dynamic disk header block size",
            block_size,
            f"a power of two of at least {MIN_BLOCK_SIZE} bytes",
            offset=offset,
            advice="the dynamic header is corrupt; qemu refuses it",
        )
    max_entries = -(-MAX_SECTORS * SECTOR_SIZE // block_size)
    needed = -(-sectors * SECTOR_SIZE // block_size)
    if not needed <= h.max_table_entries <= max_entries:
        raise BadField(
            INVALID,
            "dynamic disk header max table entries",
            h.max_table_entries,
            f"between {needed} (to cover the disk) and {max_entries} (2040 GiB in {block_size}-byte blocks)",
            offset=offset,
            advice="the block allocation table does not fit the disk; the image is corrupt",
        )
    table_end = -(-(h.table_offset + h.max_table_entries * BAT_ENTRY_SIZE) // SECTOR_SIZE) * SECTOR_SIZE
    if table_end > reader.size:
        raise TruncatedImage(
            "block allocation table",
            offset=h.table_offset,
            length=table_end - h.table_offset,
            size=reader.size,
        )
    locators = [
        VhdParentLocator(
            platform_code=padded_text(entry.platform_code),
            platform_data_space=entry.platform_data_space,
            platform_data_length=entry.platform_data_length,
            platform_data_offset=entry.platform_data_offset,
        )
        for entry in unpack_array(ParentLocatorEntry, h.parent_locator_entries, PARENT_LOCATOR_COUNT)
        if entry.platform_code.strip(b"\0")
    ]
    return VhdDynamicHeader(
        offset=offset,
        cookie=padded_text(h.cookie),
        data_offset=h.data_offset,
        table_offset=h.table_offset,
        header_version=h.header_version,
        max_table_entries=h.max_table_entries,
        block_size=block_size,
        checksum=h.checksum,
        checksum_valid=checksum(data, DYNAMIC_HEADER_CHECKSUM_OFFSET) == h.checksum,
        parent_uuid=_uuid(h.parent_unique_id),
        parent_timestamp=h.parent_time_stamp,
        parent_unicode_name=utf16_c_string(h.parent_unicode_name, "big") or None,
        parent_locators=locators,
    )


#: The block allocation table is read (once) only when it is at most this large: 256 Ki entries,
#: a 512 GiB disk in 2 MiB blocks. Larger tables are not checked for blocks past the end.
MAX_BAT_READ = 1 << 20
#: A BAT entry for a block that is not allocated.
BAT_UNALLOCATED = 0xFFFFFFFF


def _cut_short(reader: Reader, dynamic: VhdDynamicHeader, end: _FooterCopy | None) -> list[Finding]:
    """What a dynamic disk's footer and BAT say must exist but the file lacks: the copy of the
    footer at the end (every dynamic disk ends with it) and the blocks the BAT places (each block
    is its sector bitmap, then its data). One read of the BAT at most, when it is small enough."""
    if end is None:
        return [
            TRUNCATED.finding(
                "the dynamic VHD does not end with the copy of its footer that every VHD ends with: the file "
                "was cut short (a partial upload or download) and blocks may be missing; upload it again"
            )
        ]
    length = dynamic.max_table_entries * BAT_ENTRY_SIZE
    if length > MAX_BAT_READ:
        return []
    bat = reader.read(dynamic.table_offset, length, "block allocation table")
    # The largest sector of an allocated block, found in C (a max over an array, the unallocated
    # entries filtered out), not by unpacking each entry (a 1 TiB disk's BAT has 512 Ki of them).
    largest = max(filter(BAT_UNALLOCATED.__ne__, u32s(bat, "big")), default=None)
    if largest is None:
        return []
    bitmap = -(-dynamic.block_size // SECTOR_SIZE // 8 // SECTOR_SIZE) * SECTOR_SIZE
    last = largest * SECTOR_SIZE
    block_end = last + bitmap + dynamic.block_size
    if block_end <= end.offset:
        return []
    return [
        TRUNCATED.finding(
            f"the VHD's block allocation table places a block at bytes {last}..{block_end}, past the footer "
            f"copy at {end.offset}: the file was cut short or corrupted; upload it again"
        )
    ]


def _footer_findings(
    primary: _FooterCopy, other: _FooterCopy | None, end: _FooterCopy | None
) -> Iterator[Finding]:
    where = "at offset 0" if primary.offset == 0 else "at the end of the file"
    if not primary.checksum_valid:
        yield FOOTER_CHECKSUM.finding(
            f"the VHD footer {where} has a wrong checksum, so qemu refuses the image: re-export it from "
            "the tool that made it"
        )
    if other is not None and not other.checksum_valid:
        yield FOOTER_COPY_CHECKSUM.finding(
            "the copy of the VHD footer at the end of the file has a wrong checksum: convert the image with "
            "`qemu-img convert -O vpc` to rewrite both copies"
        )
    if other is not None and other.footer != primary.footer:
        yield FOOTER_MISMATCH.finding(
            "the VHD footers at offset 0 and at the end of the file differ; qemu reads the one at offset 0: "
            "convert the image with `qemu-img convert -O vpc` to rewrite both copies"
        )
    if end is not None and end.length == OLD_FOOTER_SIZE:
        yield OLD_FOOTER.finding(
            "the VHD ends with the old 511-byte footer, which qemu does not read: re-export the disk with a "
            "current tool, or convert it with `qemu-img convert -O vpc`"
        )


def inspect(reader: Reader, policy: Policy) -> Inspection[VhdDetails]:
    start, end = _find_footers(reader)
    primary = start or end
    if primary is None:
        raise BadField(
            INVALID,
            "hard disk footer cookie",
            "missing",
            repr(FOOTER_COOKIE),
            offset=0,
            advice="this is not a VHD",
        )
    other = end if primary is start else None
    footer_model = _footer_model(primary)
    footer = primary.footer
    if start is None and footer_model.disk_type != "fixed":
        raise BadField(
            INVALID,
            "footer at offset 0",
            "missing",
            f"a copy of the footer for a {footer_model.disk_type} disk",
            offset=0,
            advice="qemu would read this image as a fixed disk and return its raw bytes; "
            "the image is corrupt",
        )
    if start is not None and footer_model.disk_type == "fixed":
        raise BadField(
            INVALID,
            "footer disk type at offset 0",
            "fixed",
            "dynamic or differencing (a footer at offset 0 marks a dynamic disk)",
            offset=0,
            advice="qemu refuses this image; the image is corrupt",
        )
    sectors, size_from = virtual_sectors(footer)
    disagreement = _size_disagreement(footer, size_from)
    if sectors > MAX_SECTORS:
        raise BadField(
            INVALID,
            "disk size",
            sectors * SECTOR_SIZE,
            f"at most {MAX_SECTORS * SECTOR_SIZE} bytes (2040 GiB, the VHD maximum)",
            offset=primary.offset,
            advice="use VHDX or qcow2 for disks this large",
        )
    if footer_model.disk_type == "fixed" and reader.size < sectors * SECTOR_SIZE + primary.length:
        # A fixed disk is its data followed by the footer: the file must hold both.
        raise TruncatedImage(
            "fixed disk (data and footer)",
            offset=0,
            length=sectors * SECTOR_SIZE + primary.length,
            size=reader.size,
        )
    fixed = footer_model.disk_type == "fixed"
    dynamic = None if fixed else _dynamic_header(reader, primary, sectors)
    findings = list(_footer_findings(primary, other, end))
    if disagreement is not None:
        findings.append(disagreement)
    # A fixed disk's data is a raw disk from offset 0 to the footer: its partition table (and the
    # firmware it points to) is read as a raw disk's is, over the disk the guest sees.
    disk = read_disk(reader, sectors * SECTOR_SIZE, "the disk") if fixed else None
    if disk is not None:
        findings.extend(_on_the_guest_disk(f) for f in disk.findings)
    if dynamic is not None:
        findings.extend(_cut_short(reader, dynamic, end))
    if dynamic is not None and not dynamic.checksum_valid:
        findings.append(
            DYNAMIC_HEADER_CHECKSUM.finding(
                "the VHD dynamic disk header has a wrong checksum: convert the image with "
                "`qemu-img convert -O vpc` to rewrite it"
            )
        )
    if footer_model.saved_state:
        findings.append(
            SAVED_STATE.finding(
                "the VHD was left in a saved state by the VM that used it: resume and shut down that VM, "
                "or discard its saved state, before uploading"
            )
        )
    details = VhdDetails(
        version=footer.file_format_version >> 16,
        footer=footer_model,
        footer_at_start=start is not None,
        footer_at_end=end is not None,
        footer_end_length=end.length if end else None,
        footers_match=None if other is None else other.footer == footer,
        footer_copy_checksum_valid=None if other is None else other.checksum_valid,
        disk_type=footer_model.disk_type,
        geometry=footer_model.geometry,
        uuid=footer_model.uuid,
        chs_size=footer.cylinders * footer.heads * footer.sectors_per_track * SECTOR_SIZE,
        current_size=footer.current_size,
        size_from=size_from,
        block_size=dynamic.block_size if dynamic else None,
        dynamic_header=dynamic,
        backing_file=dynamic.parent_unicode_name
        if dynamic and footer_model.disk_type == "differencing"
        else None,
        partition_table=disk.partition_table if disk else None,
        firmware=disk.firmware if disk else None,
    )
    return Inspection(details=details, virtual_size=sectors * SECTOR_SIZE, findings=findings)


def check_differencing(details: VhdDetails, policy: Policy) -> Iterator[Finding]:
    """A differencing disk is only half a disk: its parent (never opened) holds the rest."""
    if details.disk_type == "differencing":
        parent = details.backing_file or "an unnamed parent"
        yield DIFFERENCING.finding(
            f"the VHD is a differencing disk whose parent is {parent!r}, which is not uploaded with it: "
            "flatten the chain first (merge it in Hyper-V, or `qemu-img convert -O vpc` on the host that "
            "has the parent)"
        )


def properties(details: VhdDetails) -> dict[str, str]:
    """A fixed disk's firmware, the footer's CHS geometry and version, and a dynamic disk's block size."""
    return {
        **firmware_properties(details.firmware),
        **geometry_properties(details.geometry),
        **header_properties(version=details.version, block_size=details.block_size),
    }


def _on_the_guest_disk(finding: Finding) -> Finding:
    """Partition table advice (`sgdisk -e`...) is for the disk inside the VHD, never the .vhd file
    itself: a tool that writes the file's last sectors would overwrite the footer."""
    if not finding.code.startswith(("gpt.", "mbr.")):
        return finding
    return finding.model_copy(
        update={
            "message": f"{finding.message} (inside the guest, or on the raw disk `qemu-img convert -O raw` "
            "makes of this VHD; never on the .vhd file, whose footer follows the disk)"
        }
    )


def is_fixed(details: VhdDetails) -> bool:
    """A fixed disk is its data from offset 0, then the footer: a raw disk with a trailer."""
    return details.disk_type == "fixed"


def guest_size(details: VhdDetails) -> int:
    """The disk the guest sees, in bytes: as qemu 7.2 sizes it (see `virtual_sectors`)."""
    if details.size_from == "chs":
        return details.chs_size
    return details.current_size // SECTOR_SIZE * SECTOR_SIZE


#: A BAT entry: the sector where a block (its sector bitmap, then its data) starts.
BAT_ENTRY = struct.Struct(">I")


class DynamicDiskView(BlockMappedView):
    """The guest's disk in a dynamic or differencing VHD (spec "Block Allocation Table and Data
    Blocks"): the BAT gives each block's first sector, where the block's sector bitmap (one bit a
    sector, the most significant bit of byte 0 first, padded to whole sectors) precedes its data.
    An unallocated block, or a sector whose bit is clear, reads as zeros: in a differencing disk
    that is a sector of the parent, which is never opened (`incomplete` names it)."""

    def __init__(self, reader: Reader, details: VhdDetails, dynamic: VhdDynamicHeader) -> None:
        parent = None
        if details.disk_type == "differencing":
            locators = ", ".join(locator.platform_code for locator in dynamic.parent_locators)
            name = (
                f"{dynamic.parent_unicode_name!r} (parent unicode name)"
                if dynamic.parent_unicode_name
                else f"named only by its parent locators ({locators or 'none'})"
            )
            parent = f"the parent disk {name}, not read: its sectors read as zeros"
        super().__init__(reader, size=guest_size(details), unit=dynamic.block_size, incomplete=parent)
        self.bat = Table(dynamic.table_offset, dynamic.max_table_entries, BAT_ENTRY, "block allocation table")
        self.bitmap_size = -(-dynamic.block_size // SECTOR_SIZE // 8 // SECTOR_SIZE) * SECTOR_SIZE

    def spans(self, block: int, start: int, end: int) -> list[Span]:
        (entry,) = self.bat.get(self.pages, block)
        if entry == BAT_UNALLOCATED:
            return []
        bitmap = entry * SECTOR_SIZE
        data = bitmap + self.bitmap_size
        runs = bitmap_runs(
            self.pages,
            bitmap,
            self.bitmap_size,
            start // SECTOR_SIZE,
            -(-end // SECTOR_SIZE),
            lsb_first=False,
            what="sector bitmap",
        )
        return [
            Span(first * SECTOR_SIZE, (stop - first) * SECTOR_SIZE, data + first * SECTOR_SIZE)
            for first, stop, present in runs
            if present
        ]


def guest_view(reader: Reader, details: VhdDetails) -> RawGuestView | DynamicDiskView:
    """A fixed disk's guest view is the identity over the disk before the footer; a dynamic or
    differencing disk's goes through its BAT and sector bitmaps."""
    if details.dynamic_header is None:
        return RawGuestView(reader, guest_size(details))
    return DynamicDiskView(reader, details, details.dynamic_header)


FORMAT = Format(
    name="vhd",
    qemu_name="vpc",
    probe=probe,
    inspect=inspect,
    checks=(check_differencing,),
    details=VhdDetails,
    properties=properties,
    guest=guest_view,
    data_at_zero=is_fixed,
)
