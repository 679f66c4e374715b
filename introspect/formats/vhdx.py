"""Microsoft VHDX, as specified in [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format".

Layout ([MS-VHDX] 2.2 "Header Section"): the first 1 MiB holds the file type identifier (at 0),
two headers (at 64 KiB and 128 KiB, each checksummed with CRC-32C over its 4 KiB) and two copies
of the region table (at 192 KiB and 256 KiB, each checksummed over its 64 KiB). The region table
locates the BAT and the metadata region; the metadata table (2.6.1) locates the metadata items
(2.6.2): file parameters, virtual disk size, page 83 data, logical and physical sector size, and
the parent locator of a differencing disk. Everything is little-endian; GUIDs are Microsoft GUIDs
(first three fields little-endian).

Like qemu-img (7.2, `block/vhdx.c`): the current header is the valid one with the higher sequence
number (two identical headers, as Disk2vhd writes, are accepted); only the first region table is
used (a corrupt first copy is an error, a corrupt second copy a warning); the virtual size is the
Virtual Disk Size item.

Reads: the head (file type identifier), one read of 256 KiB for both headers and both region
tables, and one read of the metadata table with the 64 KiB after it, where every known writer
(Hyper-V, qemu) puts the items; an item placed elsewhere costs one more small read.

The guest view reads fixed, dynamic and differencing disks through the BAT (2.5), a page of it
read once and kept in a bounded LRU; a differencing disk's parent is never opened (its sectors
read as zeros, and `incomplete` names it). The log is not replayed: an image whose header says it
has an active log (LogGuid not zero) has no view (`guest.no_view`), since its BAT may be stale
until the replay the spec requires, and qemu refuses to read it read-only for the same reason.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from introspect.decode import KIB, MIB, guid, utf16_c_string
from introspect.errors import BadField, ImageError, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.formats.blockmap import BlockMappedView, Span, Table, bitmap_runs
from introspect.model import Finding, Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import GUEST_NO_VIEW, TRUNCATED, Policy, rule
from introspect.sources import Reader
from introspect.structure import LittleEndianStructure, StructureT, chars, pad, u16, u32, u64, unpack_array

# --- Rules -----------------------------------------------------------------------------------

INVALID = rule("vhdx.invalid", Severity.REJECT, "a VHDX structure holds a value the spec does not allow")
DIFFERENCING = rule(
    "vhdx.differencing", Severity.REJECT, "the VHDX is a differencing disk with a parent", names_files=True
)
HEADER_CHECKSUM = rule(
    "vhdx.header_checksum", Severity.WARN, "one of the two VHDX headers is corrupt; the other one is used"
)
REGION_TABLE_COPY = rule(
    "vhdx.region_table_copy", Severity.WARN, "the second copy of the region table is corrupt"
)
UNKNOWN_REQUIRED_REGION = rule(
    "vhdx.unknown_required_region", Severity.REJECT, "a region marked required is not one the spec defines"
)
UNKNOWN_REQUIRED_METADATA = rule(
    "vhdx.unknown_required_metadata",
    Severity.REJECT,
    "a metadata item marked required is not one the spec defines",
)
LOG_PENDING = rule("vhdx.log_pending", Severity.WARN, "the log is active: the image was not closed cleanly")


def crc32c_valid(data: bytes, checksum_offset: int, stored: int) -> bool:
    """CRC-32C over `data` with its 4-byte checksum field counted as zero ([MS-VHDX] 2.2.2)."""
    import google_crc32c  # here: the other formats' inspections need not load it

    # In three pieces, the field's as zeros: the 64 KiB region table is copied once, not twice
    # (google_crc32c takes bytes only, not views).
    crc = google_crc32c.extend(google_crc32c.value(data[:checksum_offset]), _CHECKSUM_AS_ZERO)
    return int(google_crc32c.extend(crc, data[checksum_offset + 4 :])) == stored


_CHECKSUM_AS_ZERO = bytes(4)


# --- File Type Identifier ([MS-VHDX] 2.2.1) --------------------------------------------------

FILE_TYPE_SIGNATURE = b"vhdxfile"


class FileTypeIdentifier(LittleEndianStructure):
    """The file type identifier: signature and the name of the tool that made the file."""

    OFFSET: ClassVar[int] = 0

    signature: bytes = chars(8)
    creator: bytes = chars(512)  # UTF-16LE, diagnostic only


# --- Headers ([MS-VHDX] 2.2.2) ---------------------------------------------------------------

HEADER_1_OFFSET = 64 * KIB
HEADER_2_OFFSET = 128 * KIB
HEADER_OFFSETS = (HEADER_1_OFFSET, HEADER_2_OFFSET)
#: The checksum covers the whole 4 KiB header, not just its fields.
HEADER_SIZE = 4 * KIB
HEADER_SIGNATURE = b"head"
HEADER_VERSION = 1


class VhdxHeaderRecord(LittleEndianStructure):
    """One header; 4016 reserved bytes follow, which the checksum covers."""

    signature: bytes = chars(4)
    checksum: int = u32()
    sequence_number: int = u64()
    file_write_guid: bytes = chars(16)
    data_write_guid: bytes = chars(16)
    log_guid: bytes = chars(16)
    log_version: int = u16()
    version: int = u16()
    log_length: int = u32()
    log_offset: int = u64()


HEADER_CHECKSUM_OFFSET = VhdxHeaderRecord.offset_of("checksum")


# --- Region table ([MS-VHDX] 2.2.3) ----------------------------------------------------------

REGION_TABLE_1_OFFSET = 192 * KIB
REGION_TABLE_2_OFFSET = 256 * KIB
REGION_TABLE_OFFSETS = (REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET)
REGION_TABLE_SIZE = 64 * KIB
REGION_TABLE_SIGNATURE = b"regi"
#: Required:1 + Reserved:31 of a region table entry.
REGION_ENTRY_REQUIRED_BIT = 0
REGION_ENTRY_REQUIRED = 1 << REGION_ENTRY_REQUIRED_BIT
#: "EntryCount ... MUST be less than or equal to 2047."
MAX_REGION_ENTRIES = 2047
BAT_GUID = "2dc27766-f623-4200-9d64-115e9bfd4a08"
METADATA_REGION_GUID = "8b7ca206-4790-4b9a-b8fe-575f050f886e"
KNOWN_REGIONS = {BAT_GUID: "bat", METADATA_REGION_GUID: "metadata"}
#: The LogGuid of a header whose log is empty.
NULL_GUID = guid(bytes(16))
#: The header section: file type identifier, headers and region tables ([MS-VHDX] 2.2).
HEADER_SECTION_SIZE = 1 * MIB
#: One read covers both headers and both region tables.
HEADERS_READ_OFFSET = HEADER_1_OFFSET
HEADERS_READ_LENGTH = REGION_TABLE_2_OFFSET + REGION_TABLE_SIZE - HEADER_1_OFFSET


class RegionTableHeader(LittleEndianStructure):
    """The region table header; the entries follow it."""

    signature: bytes = chars(4)
    checksum: int = u32()
    entry_count: int = u32()
    reserved: None = pad(4)


REGION_TABLE_CHECKSUM_OFFSET = RegionTableHeader.offset_of("checksum")


class RegionTableEntry(LittleEndianStructure):
    """One region table entry."""

    guid: bytes = chars(16)
    file_offset: int = u64()
    length: int = u32()
    flags: int = u32()  # Required:1, Reserved:31


# --- Metadata region ([MS-VHDX] 2.6) ---------------------------------------------------------

METADATA_TABLE_SIZE = 64 * KIB
METADATA_TABLE_SIGNATURE = b"metadata"
#: The flags of a metadata table entry: IsUser:1 IsVirtualDisk:1 IsRequired:1 Reserved:29.
IS_USER_BIT = 0
IS_VIRTUAL_DISK_BIT = 1
IS_REQUIRED_BIT = 2
IS_USER = 1 << IS_USER_BIT
IS_VIRTUAL_DISK = 1 << IS_VIRTUAL_DISK_BIT
IS_REQUIRED = 1 << IS_REQUIRED_BIT
#: "EntryCount ... MUST be less than or equal to 2047."
MAX_METADATA_ENTRIES = 2047
#: "Length ... MUST be less than or equal to 1 MB."
MAX_METADATA_ITEM = 1 * MIB
#: Recorded in the details (all are checked): real images have two regions and about six items.
MAX_RECORDED_ENTRIES = 64
#: Bytes read after the table in the same read: Hyper-V and qemu put every item there.
METADATA_ITEMS_WINDOW = 64 * KIB

FILE_PARAMETERS_GUID = "caa16737-fa36-4d43-b3b6-33f0aa44e76b"
VIRTUAL_DISK_SIZE_GUID = "2fa54224-cd1b-4876-b211-5dbed83bf4b8"
PAGE_83_DATA_GUID = "beca12ab-b2e6-4523-93ef-c309e000c746"
LOGICAL_SECTOR_SIZE_GUID = "8141bf1d-a96f-4709-ba47-f233a8faab5f"
PHYSICAL_SECTOR_SIZE_GUID = "cda348c7-445d-4471-9cc9-e9885251c556"
PARENT_LOCATOR_GUID = "a8d35f2d-b30b-454d-abf7-d3d84834ab0c"
KNOWN_METADATA = {
    FILE_PARAMETERS_GUID: "file_parameters",
    VIRTUAL_DISK_SIZE_GUID: "virtual_disk_size",
    PAGE_83_DATA_GUID: "page_83_data",
    LOGICAL_SECTOR_SIZE_GUID: "logical_sector_size",
    PHYSICAL_SECTOR_SIZE_GUID: "physical_sector_size",
    PARENT_LOCATOR_GUID: "parent_locator",
}
#: Every VHDX has these five; the parent locator only when HasParent is set (2.6.2).
REQUIRED_METADATA = (
    FILE_PARAMETERS_GUID,
    VIRTUAL_DISK_SIZE_GUID,
    PAGE_83_DATA_GUID,
    LOGICAL_SECTOR_SIZE_GUID,
    PHYSICAL_SECTOR_SIZE_GUID,
)

#: File Parameters flags (2.6.2.1): LeaveBlockAllocated:1 HasParent:1 Reserved:30.
LEAVE_BLOCK_ALLOCATED_BIT = 0
HAS_PARENT_BIT = 1
LEAVE_BLOCK_ALLOCATED = 1 << LEAVE_BLOCK_ALLOCATED_BIT
HAS_PARENT = 1 << HAS_PARENT_BIT
#: "BlockSize ... MUST be a power of 2 ... at least 1 MB and at most 256 MB."
MIN_BLOCK_SIZE = 1 * MIB
MAX_BLOCK_SIZE = 256 * MIB
#: Logical Sector Size (2.6.2.4) and Physical Sector Size (2.6.2.5): 512 or 4096.
SECTOR_SIZES = (512, 4096)
VHDX_PARENT_LOCATOR_TYPE = "b04aefb7-d19e-4a81-b789-25b8e9445913"
#: The spec's VHDX locator has five keys; more than this many is not a locator we record.
MAX_PARENT_LOCATOR_ENTRIES = 32
#: A recorded key or value is capped (the spec's paths fit in far less).
MAX_LOCATOR_STRING_BYTES = 2048
#: Keys that name the parent, in the order a reader tries them (2.6.2.6.3).
PARENT_PATH_KEYS = ("relative_path", "volume_path", "absolute_win32_path")
#: The BAT interleaves one sector bitmap block per chunk (2.5): 2^23 sectors per chunk.
SECTORS_PER_CHUNK = 1 << 23
BAT_ENTRY_SIZE = 8


class MetadataTableHeader(LittleEndianStructure):
    """The metadata table header (2.6.1.1); the entries follow it."""

    signature: bytes = chars(8)
    reserved: None = pad(2)
    entry_count: int = u16()
    reserved2: None = pad(20)


class MetadataTableEntry(LittleEndianStructure):
    """One metadata table entry (2.6.1.2); Offset is relative to the metadata region."""

    item_id: bytes = chars(16)
    offset: int = u32()
    length: int = u32()
    flags: int = u32()  # IsUser:1 IsVirtualDisk:1 IsRequired:1 Reserved:29
    reserved2: None = pad(4)


class FileParameters(LittleEndianStructure):
    """The File Parameters item (2.6.2.1)."""

    block_size: int = u32()
    flags: int = u32()  # LeaveBlockAllocated:1 HasParent:1 Reserved:30


class VirtualDiskSize(LittleEndianStructure):
    """The Virtual Disk Size item (2.6.2.2)."""

    virtual_disk_size: int = u64()


class Page83Data(LittleEndianStructure):
    """The Page 83 Data item (2.6.2.3): the virtual disk's SCSI page 83 identifier, a GUID."""

    page_83_data: bytes = chars(16)


class LogicalSectorSize(LittleEndianStructure):
    """The Logical Sector Size item (2.6.2.4)."""

    logical_sector_size: int = u32()


class PhysicalSectorSize(LittleEndianStructure):
    """The Physical Sector Size item (2.6.2.5)."""

    physical_sector_size: int = u32()


class ParentLocatorHeader(LittleEndianStructure):
    """The parent locator item's header (2.6.2.6.1); the key/value entries follow it."""

    locator_type: bytes = chars(16)
    reserved: None = pad(2)
    key_value_count: int = u16()


class ParentLocatorEntry(LittleEndianStructure):
    """One key/value pair of a parent locator (2.6.2.6.2); offsets are relative to the item."""

    key_offset: int = u32()
    value_offset: int = u32()
    key_length: int = u16()
    value_length: int = u16()


# --- Details ----------------------------------------------------------------------------------


class VhdxHeader(Frozen):
    """One of the two headers, and whether it is valid (signature, version 1, CRC-32C)."""

    offset: int
    signature: str
    checksum: int
    checksum_valid: bool
    valid: bool
    sequence_number: int
    file_write_guid: str
    data_write_guid: str
    log_guid: str
    log_version: int
    version: int
    log_length: int
    log_offset: int


class VhdxRegionTable(Frozen):
    """One copy of the region table's header, and whether it is valid."""

    offset: int
    signature: str
    checksum: int
    checksum_valid: bool
    entry_count: int
    valid: bool


class VhdxRegion(Frozen):
    """A region table entry: which object (BAT, metadata, unknown) lives where."""

    guid: str
    name: str | None
    file_offset: int
    length: int
    required: bool


class VhdxMetadataItem(Frozen):
    """A metadata table entry: which item lives where in the metadata region."""

    item_id: str
    name: str | None
    offset: int
    length: int
    is_user: bool
    is_virtual_disk: bool
    is_required: bool


class VhdxParentLocatorEntry(Frozen):
    """One key/value pair of the parent locator (recorded, never followed)."""

    key: str
    value: str


class VhdxParentLocator(Frozen):
    """Where a differencing disk says its parent is."""

    locator_type: str
    key_value_count: int
    entries: list[VhdxParentLocatorEntry]


class VhdxDetails(Frozen):
    """A VHDX's headers, region table, metadata table and known metadata items."""

    format: Literal["vhdx"] = "vhdx"
    version: int
    creator: str
    headers: list[VhdxHeader]
    current_header: int
    region_tables: list[VhdxRegionTable]
    regions: list[VhdxRegion]
    metadata_offset: int
    metadata_entry_count: int
    metadata_items: list[VhdxMetadataItem]
    block_size: int
    leave_blocks_allocated: bool
    has_parent: bool
    virtual_disk_size: int
    logical_sector_size: int
    physical_sector_size: int
    virtual_disk_id: str
    uuid: str
    parent_locator: VhdxParentLocator | None
    backing_file: str | None


# --- Parsing ----------------------------------------------------------------------------------


def probe(head: Head) -> bool:
    return head.data.startswith(FILE_TYPE_SIGNATURE)


def _header(section: bytes, offset: int) -> VhdxHeader:
    start = offset - HEADERS_READ_OFFSET
    data = section[start : start + HEADER_SIZE]
    h = VhdxHeaderRecord.unpack(data)
    checksum_valid = crc32c_valid(data, HEADER_CHECKSUM_OFFSET, h.checksum)
    return VhdxHeader(
        offset=offset,
        signature=h.signature.decode("ascii", errors="replace"),
        checksum=h.checksum,
        checksum_valid=checksum_valid,
        valid=checksum_valid and h.signature == HEADER_SIGNATURE and h.version == HEADER_VERSION,
        sequence_number=h.sequence_number,
        file_write_guid=guid(h.file_write_guid),
        data_write_guid=guid(h.data_write_guid),
        log_guid=guid(h.log_guid),
        log_version=h.log_version,
        version=h.version,
        log_length=h.log_length,
        log_offset=h.log_offset,
    )


def _current_header(section: bytes, headers: list[VhdxHeader]) -> int:
    """Index of the current header: the valid one, or the valid one with the higher sequence."""
    first, second = headers
    if not first.valid and not second.valid:
        raise BadField(
            INVALID,
            "headers",
            "both corrupt",
            "at least one header with signature 'head', version 1 and a valid CRC-32C",
            offset=HEADER_1_OFFSET,
            advice="no valid VHDX header was found; the image is corrupt, re-export it from Hyper-V",
        )
    if first.valid != second.valid:
        return 0 if first.valid else 1
    if first.sequence_number != second.sequence_number:
        return 0 if first.sequence_number > second.sequence_number else 1
    # Disk2vhd writes two identical headers; qemu accepts that, and only that, tie.
    starts = [o - HEADERS_READ_OFFSET for o in HEADER_OFFSETS]
    raw = [section[start : start + VhdxHeaderRecord.SIZE] for start in starts]
    if raw[0] != raw[1]:
        raise BadField(
            INVALID,
            "header sequence numbers",
            first.sequence_number,
            "different in the two headers, or identical headers",
            offset=HEADER_2_OFFSET,
            advice="neither header is current; the image is corrupt",
        )
    return 0


def _region_table(section: bytes, offset: int) -> tuple[VhdxRegionTable, bytes]:
    start = offset - HEADERS_READ_OFFSET
    data = section[start : start + REGION_TABLE_SIZE]
    h = RegionTableHeader.unpack(data)
    checksum_valid = crc32c_valid(data, REGION_TABLE_CHECKSUM_OFFSET, h.checksum)
    table = VhdxRegionTable(
        offset=offset,
        signature=h.signature.decode("ascii", errors="replace"),
        checksum=h.checksum,
        checksum_valid=checksum_valid,
        entry_count=h.entry_count,
        valid=checksum_valid
        and h.signature == REGION_TABLE_SIGNATURE
        and h.entry_count <= MAX_REGION_ENTRIES,
    )
    return table, data


def _regions(data: bytes, entry_count: int) -> list[VhdxRegion]:
    regions = []
    for entry in unpack_array(RegionTableEntry, data, entry_count, RegionTableHeader.SIZE):
        region_guid = guid(entry.guid)
        regions.append(
            VhdxRegion(
                guid=region_guid,
                name=KNOWN_REGIONS.get(region_guid),
                file_offset=entry.file_offset,
                length=entry.length,
                required=bool(entry.flags & REGION_ENTRY_REQUIRED),
            )
        )
    for name in KNOWN_REGIONS.values():
        count = sum(1 for r in regions if r.name == name)
        if count != 1:
            raise BadField(
                INVALID,
                f"{name} region entries",
                count,
                "exactly one",
                offset=REGION_TABLE_1_OFFSET,
                advice="the region table is corrupt; re-export the image from Hyper-V",
            )
    return regions


def _check_overlaps(regions: list[VhdxRegion], header: VhdxHeader) -> None:
    """Regions, the log and the header section must not overlap (qemu refuses overlaps)."""
    spans = [(0, HEADER_SECTION_SIZE, "header section")]
    if header.log_length:
        spans.append((header.log_offset, header.log_offset + header.log_length, "log"))
    spans += [(r.file_offset, r.file_offset + r.length, r.name or r.guid) for r in regions if r.length]
    spans.sort()
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        if start < end:
            raise BadField(
                INVALID,
                f"{other} region offset",
                start,
                f"at or after {end}, where the {name} ends",
                offset=REGION_TABLE_1_OFFSET,
                advice="regions overlap; the image is corrupt",
            )


def _metadata_items(table: bytes, entry_count: int, offset: int) -> list[VhdxMetadataItem]:
    items = []
    for entry in unpack_array(MetadataTableEntry, table, entry_count, MetadataTableHeader.SIZE):
        item_id = guid(entry.item_id)
        items.append(
            VhdxMetadataItem(
                item_id=item_id,
                name=KNOWN_METADATA.get(item_id),
                offset=entry.offset,
                length=entry.length,
                is_user=bool(entry.flags & IS_USER),
                is_virtual_disk=bool(entry.flags & IS_VIRTUAL_DISK),
                is_required=bool(entry.flags & IS_REQUIRED),
            )
        )
    for item_id, name in KNOWN_METADATA.items():
        count = sum(1 for i in items if i.item_id == item_id)
        if count > 1 or (count == 0 and item_id in REQUIRED_METADATA):
            raise BadField(
                INVALID,
                f"{name} metadata entries",
                count,
                "exactly one",
                offset=offset,
                advice="the metadata table is corrupt; re-export the image from Hyper-V",
            )
    return items


@dataclass(slots=True)
class _MetadataRegion:
    """The metadata region: where it starts, how long it says it is, and the bytes read so far."""

    reader: Reader
    offset: int
    length: int
    window: bytes

    def item(self, item: VhdxMetadataItem, needed: int) -> bytes:
        """The item's bytes (at least `needed`, at most MAX_METADATA_ITEM), from the window if there."""
        name = item.name or item.item_id
        if item.length < needed:
            raise BadField(
                INVALID,
                f"{name} metadata length",
                item.length,
                f"at least {needed} bytes",
                offset=self.offset,
                advice="the metadata table is corrupt",
            )
        length = min(item.length, MAX_METADATA_ITEM)
        if item.offset < METADATA_TABLE_SIZE or item.offset + length > self.length:
            raise BadField(
                INVALID,
                f"{name} metadata offset",
                item.offset,
                f"an item after the {METADATA_TABLE_SIZE}-byte table and inside the {self.length}-byte "
                "metadata region",
                offset=self.offset,
                advice="the metadata table is corrupt",
            )
        if item.offset + length <= len(self.window):
            return self.window[item.offset : item.offset + length]
        return self.reader.read(self.offset + item.offset, length, f"{name} metadata item")

    def structure(self, kind: type[StructureT], item: VhdxMetadataItem) -> StructureT:
        """An item whose content is the structure `kind`."""
        return kind.unpack(self.item(item, kind.SIZE), 0)


def _parent_locator(data: bytes) -> VhdxParentLocator:
    h = ParentLocatorHeader.unpack(data, 0)
    count = min(h.key_value_count, MAX_PARENT_LOCATOR_ENTRIES)
    entries = []
    for e in unpack_array(ParentLocatorEntry, data, count, ParentLocatorHeader.SIZE):
        key = data[e.key_offset : e.key_offset + min(e.key_length, MAX_LOCATOR_STRING_BYTES)]
        value = data[e.value_offset : e.value_offset + min(e.value_length, MAX_LOCATOR_STRING_BYTES)]
        entries.append(
            VhdxParentLocatorEntry(key=utf16_c_string(key, "little"), value=utf16_c_string(value, "little"))
        )
    return VhdxParentLocator(
        locator_type=guid(h.locator_type), key_value_count=h.key_value_count, entries=entries
    )


def _bat_entries(virtual_disk_size: int, block_size: int, logical_sector_size: int, has_parent: bool) -> int:
    """How many BAT entries the disk needs (2.5: payload blocks plus one bitmap per chunk)."""
    chunk_ratio = SECTORS_PER_CHUNK * logical_sector_size // block_size
    data_blocks = -(-virtual_disk_size // block_size)
    if has_parent:
        return -(-data_blocks // chunk_ratio) * (chunk_ratio + 1)
    return data_blocks + max(0, data_blocks - 1) // chunk_ratio


#: The BAT is read (once) only when its entries take at most this much: 128 Ki entries, a 4 TiB
#: disk in qemu's 32 MiB blocks. Larger BATs are not checked for blocks past the end.
MAX_BAT_READ = 1 << 20
#: BAT entry (2.5.1): the state in bits 0-2, the block's offset in MiB in bits 20-63. States 6 and
#: 7 (PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT; SB_BLOCK_PRESENT is 6) are blocks
#: the file holds.
BAT_STATE_BITS = 3
BAT_STATE_MASK = (1 << BAT_STATE_BITS) - 1
BAT_FILE_OFFSET_SHIFT = 20
PRESENT_STATES = frozenset({6, 7})
#: A BAT entry's first byte -> 1 when its state is one of PRESENT_STATES (a `bytes.translate` table).
_PRESENT_BY_FIRST_BYTE = bytes(int(byte & BAT_STATE_MASK in PRESENT_STATES) for byte in range(256))


def _blocks_past_the_end(
    reader: Reader, bat: VhdxRegion, entries: int, block_size: int, logical_sector_size: int
) -> list[Finding]:
    """Blocks the BAT says the file holds but that run past its end: the upload was cut short.
    Every sector bitmap block (one after each chunk of payload blocks) is 1 MiB."""
    length = entries * BAT_ENTRY_SIZE
    if length > MAX_BAT_READ:
        return []
    try:
        data = reader.read(bat.file_offset, length, "BAT")
    except TruncatedImage as error:
        return [TRUNCATED.finding(f"the VHDX block allocation table runs past the end of the file: {error}")]
    chunk_ratio = SECTORS_PER_CHUNK * logical_sector_size // block_size
    # Only the entries of blocks present are unpacked, found by their state (the low bits of each
    # little-endian entry's first byte) in C: qemu marks every block of a new disk ZERO, and a
    # 1 TiB disk's BAT (33,024 entries) unpacked whole took ~1 ms.
    present = data[::BAT_ENTRY_SIZE].translate(_PRESENT_BY_FIRST_BYTE)
    ends = []
    index = present.find(1)
    while index >= 0:
        (entry,) = struct.unpack_from("<Q", data, index * BAT_ENTRY_SIZE)
        size = MIB if index % (chunk_ratio + 1) == chunk_ratio else block_size
        ends.append(((entry >> BAT_FILE_OFFSET_SHIFT) * MIB, size))
        index = present.find(1, index + 1)
    if not ends:
        return []
    start, size = max(ends, key=lambda block: block[0] + block[1])
    if start + size <= reader.size:
        return []
    return [
        TRUNCATED.finding(
            f"the VHDX block allocation table places a block at bytes {start}..{start + size}, but the file "
            f"ends at {reader.size}: the image was cut short (a partial upload or download); upload it again"
        )
    ]


def _table_findings(
    headers: list[VhdxHeader],
    tables: list[VhdxRegionTable],
    regions: list[VhdxRegion],
    items: list[VhdxMetadataItem],
    current: VhdxHeader,
) -> Iterator[Finding]:
    for header in headers:
        if not header.valid:
            yield HEADER_CHECKSUM.finding(
                f"the VHDX header at offset {header.offset} is corrupt (bad signature, version or "
                "CRC-32C) and the other one is used: open and close the image once in Hyper-V, or "
                "convert it with `qemu-img convert -O vhdx`, to rewrite both"
            )
    second = tables[1]
    if not second.valid:
        yield REGION_TABLE_COPY.finding(
            f"the copy of the VHDX region table at offset {second.offset} is corrupt: open and close the "
            "image once in Hyper-V, or convert it with `qemu-img convert -O vhdx`, to rewrite it"
        )
    for region in regions:
        if region.required and region.name is None:
            yield UNKNOWN_REQUIRED_REGION.finding(
                f"the VHDX has a required region {region.guid} that no reader but its maker understands, so "
                "qemu refuses it: convert it with Hyper-V's Convert-VHD to a plain VHDX"
            )
    for item in items:
        if item.is_required and item.name is None:
            yield UNKNOWN_REQUIRED_METADATA.finding(
                f"the VHDX has a required metadata item {item.item_id} that no reader but its maker "
                "understands, so qemu refuses it: convert it with Hyper-V's Convert-VHD to a plain VHDX"
            )
    if current.log_guid != NULL_GUID:
        yield LOG_PENDING.finding(
            "the VHDX log is active, so the image was not closed cleanly; open it once in Hyper-V or run "
            "`qemu-img check -r all` on it, then upload it again"
        )


def inspect(reader: Reader, policy: Policy) -> Inspection[VhdxDetails]:
    identifier = FileTypeIdentifier.read(reader, "file type identifier")
    section = reader.read(HEADERS_READ_OFFSET, HEADERS_READ_LENGTH, "header section")
    headers = [_header(section, offset) for offset in HEADER_OFFSETS]
    current_index = _current_header(section, headers)
    current = headers[current_index]

    (first, first_data), (second, _) = (_region_table(section, o) for o in REGION_TABLE_OFFSETS)
    if not first.valid:
        state = "valid" if first.checksum_valid else "wrong"
        raise BadField(
            INVALID,
            "region table",
            f"signature {first.signature!r}, {first.entry_count} entries, {state} CRC-32C",
            f"signature 'regi', at most {MAX_REGION_ENTRIES} entries and a valid CRC-32C",
            offset=REGION_TABLE_1_OFFSET,
            advice="qemu reads only this copy and refuses the image; open and close it once in Hyper-V "
            "to repair it from the second copy, then upload it again",
        )
    regions = _regions(first_data, first.entry_count)
    _check_overlaps(regions, current)
    metadata_region = next(r for r in regions if r.name == "metadata")
    bat_region = next(r for r in regions if r.name == "bat")

    meta_offset = metadata_region.file_offset
    window = reader.read_upto(meta_offset, METADATA_TABLE_SIZE + METADATA_ITEMS_WINDOW, "metadata table")
    if len(window) < METADATA_TABLE_SIZE:
        raise TruncatedImage(
            "metadata table", offset=meta_offset, length=METADATA_TABLE_SIZE, size=reader.size
        )
    table = MetadataTableHeader.unpack(window, 0)
    if table.signature != METADATA_TABLE_SIGNATURE:
        raise BadField(
            INVALID,
            "metadata table signature",
            table.signature,
            repr(METADATA_TABLE_SIGNATURE),
            offset=meta_offset,
            advice="the metadata region entry points elsewhere; the image is corrupt",
        )
    if table.entry_count > MAX_METADATA_ENTRIES:
        raise BadField(
            INVALID,
            "metadata table entry count",
            table.entry_count,
            f"at most {MAX_METADATA_ENTRIES}",
            offset=meta_offset,
            advice="the metadata table is corrupt",
        )
    items = _metadata_items(window, table.entry_count, meta_offset)
    by_id = {item.item_id: item for item in items}
    region = _MetadataRegion(reader, meta_offset, metadata_region.length, window)

    parameters = region.structure(FileParameters, by_id[FILE_PARAMETERS_GUID])
    block_size, parameter_flags = parameters.block_size, parameters.flags
    virtual_disk_size = region.structure(VirtualDiskSize, by_id[VIRTUAL_DISK_SIZE_GUID]).virtual_disk_size
    page_83 = region.structure(Page83Data, by_id[PAGE_83_DATA_GUID]).page_83_data
    logical_sector_size = region.structure(
        LogicalSectorSize, by_id[LOGICAL_SECTOR_SIZE_GUID]
    ).logical_sector_size
    physical_sector_size = region.structure(
        PhysicalSectorSize, by_id[PHYSICAL_SECTOR_SIZE_GUID]
    ).physical_sector_size
    has_parent = bool(parameter_flags & HAS_PARENT)

    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise BadField(
            INVALID,
            "file parameters block size",
            block_size,
            f"a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}",
            offset=meta_offset,
            advice="the metadata is corrupt; qemu refuses it",
        )
    if logical_sector_size not in SECTOR_SIZES:
        raise BadField(
            INVALID,
            "logical sector size",
            logical_sector_size,
            "512 or 4096",
            offset=meta_offset,
            advice="the metadata is corrupt",
        )
    if virtual_disk_size % logical_sector_size:
        raise BadField(
            INVALID,
            "virtual disk size",
            virtual_disk_size,
            f"a multiple of the logical sector size {logical_sector_size}",
            offset=meta_offset,
            advice="the metadata is corrupt",
        )
    bat_entries = _bat_entries(virtual_disk_size, block_size, logical_sector_size, has_parent)
    if bat_entries * BAT_ENTRY_SIZE > bat_region.length:
        raise BadField(
            INVALID,
            "BAT region length",
            bat_region.length,
            f"at least {bat_entries * BAT_ENTRY_SIZE} bytes for {bat_entries} entries",
            offset=REGION_TABLE_1_OFFSET,
            advice="the BAT cannot cover the disk; the image is corrupt",
        )

    locator = None
    if PARENT_LOCATOR_GUID in by_id:
        locator = _parent_locator(region.item(by_id[PARENT_LOCATOR_GUID], ParentLocatorHeader.SIZE))
    elif has_parent:
        raise BadField(
            INVALID,
            "parent locator",
            "missing",
            "a parent locator when HasParent is set",
            offset=meta_offset,
            advice="the metadata is corrupt",
        )
    values = {e.key: e.value for e in locator.entries} if locator else {}
    backing_file = next((values[k] for k in PARENT_PATH_KEYS if values.get(k)), None) if has_parent else None

    virtual_disk_id = guid(page_83)
    details = VhdxDetails(
        version=current.version,
        creator=utf16_c_string(identifier.creator, "little"),
        headers=headers,
        current_header=current_index,
        region_tables=[first, second],
        regions=regions[:MAX_RECORDED_ENTRIES],
        metadata_offset=meta_offset,
        metadata_entry_count=table.entry_count,
        metadata_items=items[:MAX_RECORDED_ENTRIES],
        block_size=block_size,
        leave_blocks_allocated=bool(parameter_flags & LEAVE_BLOCK_ALLOCATED),
        has_parent=has_parent,
        virtual_disk_size=virtual_disk_size,
        logical_sector_size=logical_sector_size,
        physical_sector_size=physical_sector_size,
        virtual_disk_id=virtual_disk_id,
        uuid=virtual_disk_id,
        parent_locator=locator,
        backing_file=backing_file,
    )
    findings = list(_table_findings(headers, [first, second], regions, items, current))
    findings.extend(_blocks_past_the_end(reader, bat_region, bat_entries, block_size, logical_sector_size))
    return Inspection(details=details, virtual_size=virtual_disk_size, findings=findings)


# --- Guest view ([MS-VHDX] 2.4 "Blocks", 2.5 "BAT") -----------------------------------------

BAT_ENTRY = struct.Struct("<Q")
#: Payload BAT entry states (2.5.1.1); 4 and 5 are reserved.
PAYLOAD_BLOCK_NOT_PRESENT = 0
PAYLOAD_BLOCK_UNDEFINED = 1
PAYLOAD_BLOCK_ZERO = 2
PAYLOAD_BLOCK_UNMAPPED = 3
PAYLOAD_BLOCK_FULLY_PRESENT = 6
PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
#: States whose reads may return zeros (2.5.1.1: "Return zero data" is allowed for each), as qemu
#: does; NOT_PRESENT in a differencing disk is the parent's, read as zeros too.
ZERO_STATES = frozenset(
    {PAYLOAD_BLOCK_NOT_PRESENT, PAYLOAD_BLOCK_UNDEFINED, PAYLOAD_BLOCK_ZERO, PAYLOAD_BLOCK_UNMAPPED}
)
#: Sector bitmap BAT entry state (2.5.1.2): the chunk's 1 MiB bitmap is in the file.
SB_BLOCK_PRESENT = 6
SECTOR_BITMAP_BLOCK_SIZE = 1 * MIB


class VhdxGuestView(BlockMappedView):
    """The guest's disk through the BAT (2.5): payload block entries, and after each chunk of
    `chunk_ratio` of them the entry of the chunk's sector bitmap block. A fully present block is in
    the file; a partially present one (differencing disks only) is in the file where its sector's
    bit is set (bit 0 of byte 0 first, 2.4) and the parent's elsewhere, which is never opened and
    reads as zeros (`incomplete` names it); every other state reads as zeros."""

    def __init__(self, reader: Reader, details: VhdxDetails) -> None:
        parent = None
        if details.has_parent:
            name = repr(details.backing_file) if details.backing_file else "an unnamed parent"
            parent = f"the parent disk {name} (parent locator), not read: its sectors read as zeros"
        super().__init__(reader, size=details.virtual_disk_size, unit=details.block_size, incomplete=parent)
        self.has_parent = details.has_parent
        self.sector_size = details.logical_sector_size
        self.chunk_ratio = SECTORS_PER_CHUNK * details.logical_sector_size // details.block_size
        bat = next(r for r in details.regions if r.name == "bat")
        entries = _bat_entries(
            details.virtual_disk_size, details.block_size, details.logical_sector_size, details.has_parent
        )
        self.bat = Table(bat.file_offset, entries, BAT_ENTRY, "BAT")

    def spans(self, block: int, start: int, end: int) -> list[Span]:
        index = block + block // self.chunk_ratio
        state, offset = self._entry(index)
        if state in ZERO_STATES:
            return []
        if state == PAYLOAD_BLOCK_FULLY_PRESENT:
            return [Span(file_offset=offset)]
        if state != PAYLOAD_BLOCK_PARTIALLY_PRESENT or not self.has_parent:
            raise BadField(
                INVALID,
                "payload BAT entry state",
                state,
                "0, 1, 2, 3, 6, or 7 in a differencing disk",
                offset=self.bat.offset + index * BAT_ENTRY.size,
                advice="the BAT is corrupt; the image cannot be read",
            )
        chunk = block // self.chunk_ratio
        bitmap_index = chunk * (self.chunk_ratio + 1) + self.chunk_ratio
        bitmap_state, bitmap = self._entry(bitmap_index)
        if bitmap_state != SB_BLOCK_PRESENT:
            raise BadField(
                INVALID,
                "sector bitmap BAT entry state",
                bitmap_state,
                f"{SB_BLOCK_PRESENT} (SB_BLOCK_PRESENT) for a chunk with a partially present block",
                offset=self.bat.offset + bitmap_index * BAT_ENTRY.size,
                advice="the BAT is corrupt; the image cannot be read",
            )
        first_sector = block % self.chunk_ratio * (self.unit // self.sector_size)
        runs = bitmap_runs(
            self.pages,
            bitmap,
            SECTOR_BITMAP_BLOCK_SIZE,
            first_sector + start // self.sector_size,
            first_sector + -(-end // self.sector_size),
            lsb_first=True,
            what="sector bitmap block",
        )
        return [
            Span(
                (first - first_sector) * self.sector_size,
                (stop - first) * self.sector_size,
                offset + (first - first_sector) * self.sector_size,
            )
            for first, stop, present in runs
            if present
        ]

    def _entry(self, index: int) -> tuple[int, int]:
        """A BAT entry's state and file offset; a block placed in the header section is refused
        (2.5.1: blocks "must reside after the header section")."""
        (entry,) = self.bat.get(self.pages, index)
        state, offset = entry & BAT_STATE_MASK, (entry >> BAT_FILE_OFFSET_SHIFT) * MIB
        if state in PRESENT_STATES and offset < HEADER_SECTION_SIZE:
            raise BadField(
                INVALID,
                "BAT entry file offset",
                offset,
                f"at least {HEADER_SECTION_SIZE} (a block after the header section)",
                offset=self.bat.offset + index * BAT_ENTRY.size,
                advice="the BAT is corrupt; the image cannot be read",
            )
        return state, offset


def guest_view(reader: Reader, details: VhdxDetails) -> VhdxGuestView:
    """Fixed, dynamic and differencing disks alike, through the BAT; an image whose log is active
    is refused, as qemu refuses it read-only: the spec (2.3.3) says the log MUST be replayed before
    the image is read, and without the replay its BAT and blocks may be stale."""
    current = details.headers[details.current_header]
    if current.log_guid != NULL_GUID:
        raise ImageError(
            GUEST_NO_VIEW,
            f"the VHDX log is active (LogGuid {current.log_guid}) and introspect does not replay it, so its "
            "BAT and blocks may be stale: open and close the image once in Hyper-V, or run "
            "`qemu-img check -r all` on it, then upload it again",
        )
    return VhdxGuestView(reader, details)


def check_differencing(details: VhdxDetails, policy: Policy) -> Iterator[Finding]:
    """A differencing disk is only half a disk: its parent (never opened) holds the rest."""
    if details.has_parent:
        parent = details.backing_file or "an unnamed parent"
        yield DIFFERENCING.finding(
            f"the VHDX is a differencing disk whose parent is {parent!r}, which is not uploaded with it: "
            "flatten the chain first (merge it in Hyper-V, or `qemu-img convert -O vhdx` on the host that "
            "has the parent)"
        )


def properties(details: VhdxDetails) -> dict[str, str]:
    """The header's version and the block size."""
    return header_properties(version=details.version, block_size=details.block_size)


FORMAT = Format(
    name="vhdx",
    qemu_name="vhdx",
    probe=probe,
    inspect=inspect,
    checks=(check_differencing,),
    details=VhdxDetails,
    properties=properties,
    guest=guest_view,
)
