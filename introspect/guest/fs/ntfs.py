"""NTFS (versions 3.0 and 3.1): Windows system volumes, for the SOFTWARE hive and ntoskrnl.exe.

Microsoft publishes no NTFS specification. The structures are declared as ntfs-3g declares them
(include/ntfs-3g/layout.h: `NTFS_BOOT_SECTOR`, `MFT_RECORD`, `ATTR_RECORD`, `ATTR_LIST_ENTRY`,
`FILE_NAME_ATTR`, `INDEX_ROOT`, `INDEX_BLOCK`, `INDEX_HEADER`, `INDEX_ENTRY_HEADER`,
`REPARSE_POINT`), with their field names, and the reparse data of a symbolic link as [MS-FSCC]
§2.1.2.4 "Symbolic Link Reparse Data Buffer" declares it. Where ntfs-3g's comments or the Linux-NTFS
project's documentation describe a rule (the update sequence array, mapping pairs, index VCNs),
the code says so beside it.

What a lookup reads: the boot sector, $MFT's own record (for where the other records are), then
for each path component the directory's record, its $INDEX_ROOT and the $INDEX_ALLOCATION blocks
of one B-tree descent (names compared upper-cased, which is Windows' collation for ASCII; a name
with other characters, whose case Windows maps with the volume's $UpCase table, falls back to a
bounded walk of the whole index). Records and index blocks are kept in bounded caches.

Not read: compressed and encrypted files (`read` raises `guest.not_read`), and reparse points
other than relative symbolic links (their kind is OTHER: a junction or an absolute link names a
drive letter, and nothing outside this volume is followed). ntfs-3g's own symbolic links (Interix
"IntxLNK" system files) are read as links.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from introspect.errors import ImageError, UsageError
from introspect.guest.disk import Disk
from introspect.guest.fs.base import (
    MAX_LINK_TARGET,
    CorruptFilesystem,
    FilesystemType,
    Kind,
    LoopDetected,
    Node,
)
from introspect.lru import Lru
from introspect.structure import LittleEndianStructure, chars, i8, pad, u8, u16, u32, u64

NAME = "ntfs"

# --- NTFS_BOOT_SECTOR -----------------------------------------------------------------------------


class NtfsBootSector(LittleEndianStructure):
    """The boot sector (layout.h `NTFS_BOOT_SECTOR`, with its `BIOS_PARAMETER_BLOCK`)."""

    OFFSET: ClassVar[int] = 0

    jump: bytes = chars(3)
    oem_id: bytes = chars(8)
    bytes_per_sector: int = u16()
    sectors_per_cluster: int = u8()
    reserved_sectors: int = u16()
    fats: int = u8()
    root_entries: int = u16()
    sectors: int = u16()
    media_type: int = u8()
    sectors_per_fat: int = u16()
    sectors_per_track: int = u16()
    heads: int = u16()
    hidden_sectors: int = u32()
    large_sectors: int = u32()
    physical_drive: int = u8()
    current_head: int = u8()
    extended_boot_signature: int = u8()
    reserved2: None = pad(1)
    number_of_sectors: int = u64()
    mft_lcn: int = u64()
    mftmirr_lcn: int = u64()
    clusters_per_mft_record: int = i8()
    reserved0: None = pad(3)
    clusters_per_index_record: int = i8()
    reserved1: None = pad(3)
    volume_serial_number: int = u64()
    checksum: int = u32()


OEM_ID = b"NTFS    "
BOOT_SECTOR_SIZE = 512
#: Sector sizes NTFS is made with (ntfs-3g accepts 256 to 4096; Windows writes 512 and 4096).
SECTOR_SIZES = frozenset({256, 512, 1024, 2048, 4096})
#: sectors_per_cluster above 0x80 is a negative shift (Windows 10's clusters above 64 KiB):
#: the cluster is 2^(256 - value) bytes. Windows' largest cluster is 2 MiB.
SECTORS_PER_CLUSTER_SHIFT = 0x80
MAX_CLUSTER_SIZE = 2 * 1024 * 1024
#: MFT records and index records: clusters_per_*_record > 0 counts clusters, <= 0 is -log2(bytes).
#: Windows writes 1024-byte MFT records (4096 on 4Kn disks) and 4096-byte index records; Linux's
#: driver refuses records larger than a page, ntfs-3g larger than 64 KiB: so do we.
MIN_RECORD_SIZE = 512
MAX_RECORD_SIZE = 65536

# --- MFT_RECORD, the update sequence array --------------------------------------------------------


class MftRecord(LittleEndianStructure):
    """An MFT record's header (layout.h `MFT_RECORD`, NTFS 3.1)."""

    magic: bytes = chars(4)
    usa_ofs: int = u16()
    usa_count: int = u16()
    lsn: int = u64()
    sequence_number: int = u16()
    link_count: int = u16()
    attrs_offset: int = u16()
    flags: int = u16()
    bytes_in_use: int = u32()
    bytes_allocated: int = u32()
    base_mft_record: int = u64()
    next_attr_instance: int = u16()
    reserved: None = pad(2)
    mft_record_number: int = u32()


FILE_MAGIC = b"FILE"
INDX_MAGIC = b"INDX"
#: NTFS 3.0's record header (`MFT_RECORD_OLD`) is 42 bytes: attributes start after it at the earliest.
MIN_ATTRS_OFFSET = 42
#: MFT_RECORD flags: MFT_RECORD_IN_USE, MFT_RECORD_IS_DIRECTORY.
MFT_RECORD_IN_USE = 0x0001
MFT_RECORD_IS_DIRECTORY = 0x0002
#: The update sequence array protects each 512-byte stride (NTFS_BLOCK_SIZE) of a multi-sector
#: record: its last two bytes hold the update sequence number, and the array their real value.
NTFS_BLOCK_SIZE = 512
#: A file reference: the MFT record number in its low 48 bits, the sequence number above.
MREF_BITS = 48
MREF_MASK = (1 << MREF_BITS) - 1
#: System files (layout.h `NTFS_SYSTEM_FILES`): $MFT, $Volume, the root directory, and the first
#: user record; records below it are metadata, left out of listings.
FILE_MFT = 0
FILE_VOLUME = 3
FILE_ROOT = 5
FILE_FIRST_USER = 16

# --- ATTR_RECORD ----------------------------------------------------------------------------------


class AttrRecord(LittleEndianStructure):
    """An attribute's common header (layout.h `ATTR_RECORD`, its first 16 bytes)."""

    type: int = u32()
    length: int = u32()
    non_resident: int = u8()
    name_length: int = u8()
    name_offset: int = u16()
    flags: int = u16()
    instance: int = u16()


class ResidentAttr(LittleEndianStructure):
    """A resident attribute's header after the common part (`ATTR_RECORD`'s resident union)."""

    value_length: int = u32()
    value_offset: int = u16()
    resident_flags: int = u8()
    reservedR: None = pad(1)


class NonResidentAttr(LittleEndianStructure):
    """A non-resident attribute's header after the common part (`ATTR_RECORD`'s non-resident union)."""

    lowest_vcn: int = u64()
    highest_vcn: int = u64()
    mapping_pairs_offset: int = u16()
    compression_unit: int = u8()
    reserved1: None = pad(5)
    allocated_size: int = u64()
    data_size: int = u64()
    initialized_size: int = u64()


#: ATTR_TYPES used here.
AT_ATTRIBUTE_LIST = 0x20
AT_FILE_NAME = 0x30
AT_VOLUME_NAME = 0x60
AT_DATA = 0x80
AT_INDEX_ROOT = 0x90
AT_INDEX_ALLOCATION = 0xA0
AT_REPARSE_POINT = 0xC0
AT_END = 0xFFFFFFFF
#: ATTR_FLAGS: ATTR_COMPRESSION_MASK, ATTR_IS_ENCRYPTED, ATTR_IS_SPARSE.
ATTR_COMPRESSION_MASK = 0x00FF
ATTR_IS_ENCRYPTED = 0x4000
#: Attribute records are at least this long (the common header plus a resident one's).
MIN_ATTRIBUTE_LENGTH = AttrRecord.SIZE + ResidentAttr.SIZE
#: The name of the directory index's attributes.
I30 = "$I30"


class AttrListEntry(LittleEndianStructure):
    """One entry of an $ATTRIBUTE_LIST (layout.h `ATTR_LIST_ENTRY`): where an attribute's extent is."""

    type: int = u32()
    length: int = u16()
    name_length: int = u8()
    name_offset: int = u8()
    lowest_vcn: int = u64()
    mft_reference: int = u64()
    instance: int = u16()


#: An attribute list of a file in 65536 extents is unheard of; Windows' own lists of fragmented
#: files stay under a few KiB. 256 KiB bounds what is read and parsed.
MAX_ATTRIBUTE_LIST = 256 * 1024
#: Extension records followed for one file (the fixture's sparse file needs 3).
MAX_EXTENSION_RECORDS = 256
#: Data runs decoded for one attribute (all its extents): a 64 KiB attribute list's worth.
MAX_RUNS = 65536
#: A mapping pair's length and offset fields are 1 to 8 bytes (they are 64-bit numbers).
MAX_MAPPING_PAIR_FIELD = 8

# --- FILE_NAME_ATTR -------------------------------------------------------------------------------


class FileNameAttr(LittleEndianStructure):
    """A $FILE_NAME attribute's value and an $I30 index key (layout.h `FILE_NAME_ATTR`)."""

    parent_directory: int = u64()
    creation_time: int = u64()
    last_data_change_time: int = u64()
    last_mft_change_time: int = u64()
    last_access_time: int = u64()
    allocated_size: int = u64()
    data_size: int = u64()
    file_attributes: int = u32()
    reparse_point_tag: int = u32()
    file_name_length: int = u8()
    file_name_type: int = u8()


#: FILE_NAME_TYPE_FLAGS: the namespaces. A DOS-only name is the 8.3 alias of a WIN32 one.
FILE_NAME_POSIX = 0x00
FILE_NAME_WIN32 = 0x01
FILE_NAME_DOS = 0x02
FILE_NAME_WIN32_AND_DOS = 0x03
#: FILE_ATTR_FLAGS used here.
FILE_ATTR_SYSTEM = 0x00000004

# --- INDEX_ROOT, INDEX_BLOCK, INDEX_HEADER, INDEX_ENTRY -------------------------------------------


class IndexRoot(LittleEndianStructure):
    """The $INDEX_ROOT value's header (layout.h `INDEX_ROOT`), an `INDEX_HEADER` after it."""

    type: int = u32()
    collation_rule: int = u32()
    index_block_size: int = u32()
    clusters_per_index_block: int = u8()
    reserved: None = pad(3)


class IndexHeader(LittleEndianStructure):
    """Where a node's entries are (layout.h `INDEX_HEADER`), offsets from its own start."""

    entries_offset: int = u32()
    index_length: int = u32()
    allocated_size: int = u32()
    ih_flags: int = u8()
    reserved: None = pad(3)


class IndexBlock(LittleEndianStructure):
    """An $INDEX_ALLOCATION block's header (layout.h `INDEX_BLOCK`), an `INDEX_HEADER` after it."""

    magic: bytes = chars(4)
    usa_ofs: int = u16()
    usa_count: int = u16()
    lsn: int = u64()
    index_block_vcn: int = u64()


class IndexEntryHeader(LittleEndianStructure):
    """An index entry's header (layout.h `INDEX_ENTRY_HEADER`), its key after it."""

    indexed_file: int = u64()
    length: int = u16()
    key_length: int = u16()
    ie_flags: int = u16()
    reserved: None = pad(2)


#: INDEX_ENTRY_FLAGS: INDEX_ENTRY_NODE (a sub-node VCN ends the entry), INDEX_ENTRY_END.
INDEX_ENTRY_NODE = 0x01
INDEX_ENTRY_END = 0x02
VCN_SIZE = 8
#: A B-tree of 4 KiB nodes holding a million names is 4 levels deep; 32 is past any directory.
MAX_INDEX_DEPTH = 32
#: Index blocks visited by one walk of a whole index (a listing, a lookup's fallback): 4 MiB of
#: 4 KiB blocks, the whole guest budget.
MAX_INDEX_BLOCKS = 1024
#: Entries of one index node: a 64 KiB node of the smallest entries (16-byte headers, an 8-byte
#: VCN, 66-byte keys) holds fewer than 1024.
MAX_NODE_ENTRIES = 1024
#: Parsed index nodes kept (a path walk's directories, a large directory's blocks).
INDEX_CACHE_SIZE = 64
RECORD_CACHE_SIZE = 128

# --- REPARSE_POINT, symbolic links ----------------------------------------------------------------


class ReparsePoint(LittleEndianStructure):
    """A $REPARSE_POINT value's header (layout.h `REPARSE_POINT`)."""

    reparse_tag: int = u32()
    reparse_data_length: int = u16()
    reserved: None = pad(2)


class SymbolicLinkReparseBuffer(LittleEndianStructure):
    """[MS-FSCC] §2.1.2.4: a symbolic link's reparse data, the path buffer after it."""

    substitute_name_offset: int = u16()
    substitute_name_length: int = u16()
    print_name_offset: int = u16()
    print_name_length: int = u16()
    flags: int = u32()


IO_REPARSE_TAG_SYMLINK = 0xA000000C
#: [MS-FSCC] §2.1.2.4 Flags: SYMLINK_FLAG_RELATIVE, the substitute name is relative to the link.
SYMLINK_FLAG_RELATIVE = 0x00000001
#: ntfs-3g's Interix symbolic link: a SYSTEM file whose data is this, then the UTF-16LE target.
INTERIX_SYMLINK = b"IntxLNK\x01"


@dataclass(frozen=True, slots=True)
class Run:
    """A data run: `length` clusters from `vcn`, at `lcn` (None for a sparse run)."""

    vcn: int
    lcn: int | None
    length: int


@dataclass(frozen=True, slots=True)
class Attribute:
    """An attribute, its extents joined: a resident value, or non-resident runs and sizes."""

    type: int
    name: str
    flags: int
    value: bytes | None
    runs: tuple[Run, ...] = ()
    data_size: int = 0
    initialized_size: int = 0

    @property
    def size(self) -> int:
        return len(self.value) if self.value is not None else self.data_size


@dataclass(frozen=True, slots=True)
class _Extent:
    """One attribute record as found in a record (a non-resident one may be one of several)."""

    type: int
    name: str
    flags: int
    value: bytes | None
    lowest_vcn: int = 0
    runs: tuple[Run, ...] = ()
    data_size: int = 0
    initialized_size: int = 0


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """An $I30 index entry: the file it names, its key and name (with the name's collation key),
    and the sub-node holding the names before it. The END entry has no key."""

    reference: int
    key: FileNameAttr | None
    name: str
    collation: bytes
    subnode: int | None


@dataclass(frozen=True, slots=True)
class _File:
    """A base record's attributes, with its flags."""

    number: int
    flags: int
    sequence_number: int
    attributes: tuple[Attribute, ...]

    def find(self, kind: int, name: str = "") -> Attribute | None:
        return next((a for a in self.attributes if a.type == kind and a.name == name), None)


def probe(disk: Disk) -> bool:
    """The OEM ID "NTFS    " and a boot sector whose sizes are possible."""
    if disk.size < BOOT_SECTOR_SIZE:
        return False
    boot = NtfsBootSector.read(disk, "NTFS boot sector")
    try:
        _sizes(boot)
    except CorruptFilesystem:
        return False
    return boot.oem_id == OEM_ID


def _sizes(boot: NtfsBootSector) -> tuple[int, int, int]:
    """The cluster, MFT record and index record sizes, each clamped."""
    if boot.oem_id != OEM_ID:
        raise CorruptFilesystem(NAME, f"the OEM ID is {boot.oem_id!r}, not {OEM_ID!r}")
    if boot.bytes_per_sector not in SECTOR_SIZES:
        raise CorruptFilesystem(NAME, f"{boot.bytes_per_sector} bytes per sector")
    per_cluster = boot.sectors_per_cluster
    if per_cluster > SECTORS_PER_CLUSTER_SHIFT:
        cluster = 1 << min(256 - per_cluster, 31)
    else:
        cluster = per_cluster * boot.bytes_per_sector
    if cluster == 0 or cluster & (cluster - 1) or cluster > MAX_CLUSTER_SIZE:
        raise CorruptFilesystem(NAME, f"a cluster of {cluster} bytes (sectors_per_cluster {per_cluster})")
    return (
        cluster,
        _record_size(boot.clusters_per_mft_record, cluster),
        _record_size(boot.clusters_per_index_record, cluster),
    )


def _record_size(clusters_per_record: int, cluster: int) -> int:
    size = clusters_per_record * cluster if clusters_per_record > 0 else 1 << min(-clusters_per_record, 31)
    if not MIN_RECORD_SIZE <= size <= MAX_RECORD_SIZE or size & (size - 1):
        raise CorruptFilesystem(NAME, f"a record of {size} bytes (clusters per record {clusters_per_record})")
    return size


class NtfsFilesystem:
    """An opened NTFS volume (see the module docstring)."""

    name = NAME
    case_sensitive = False

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        boot = NtfsBootSector.read(disk, "NTFS boot sector")
        self.cluster_size, self.record_size, _ = _sizes(boot)
        # The volume's clusters as declared: a run past them contradicts the boot sector; one past
        # the image's end (a truncated image) is TruncatedImage, from the Disk.
        self.clusters = boot.number_of_sectors * boot.bytes_per_sector // self.cluster_size
        self.uuid: str | None = f"{boot.volume_serial_number:016X}"
        self._records: Lru[int, _File] = Lru(RECORD_CACHE_SIZE)
        self._nodes: Lru[tuple[int, int], tuple[IndexEntry, ...]] = Lru(INDEX_CACHE_SIZE)
        # $MFT's record 0 is where the boot sector says; its $DATA says where every record is.
        if boot.mft_lcn >= self.clusters:
            raise CorruptFilesystem(
                NAME, f"$MFT at cluster {boot.mft_lcn}, past the volume's {self.clusters}"
            )
        first = _fixed(
            disk.read(boot.mft_lcn * self.cluster_size, self.record_size, "$MFT record 0"),
            FILE_MAGIC,
            "$MFT record 0",
        )
        own = [e for e in self._extents(first, FILE_MFT) if e.type == AT_DATA and not e.name]
        if not own:
            raise CorruptFilesystem(NAME, "$MFT's record has no $DATA attribute")
        self._mft = self._join(AT_DATA, "", own, "$MFT")
        mft = self._file(FILE_MFT)
        data = mft.find(AT_DATA)
        if data is None or data.value is not None:
            raise CorruptFilesystem(NAME, "$MFT has no non-resident $DATA")
        self._mft = data
        volume_name = self._file(FILE_VOLUME).find(AT_VOLUME_NAME)
        label = (
            volume_name.value.decode("utf-16-le", errors="replace")
            if volume_name and volume_name.value
            else ""
        )
        self.label: str | None = label or None

    # --- the Filesystem contract ---

    def root(self) -> Node:
        return self._node(FILE_ROOT)

    def lookup(self, directory: Node, name: str) -> Node | None:
        reference = self._index_lookup(_number(directory), name)
        if reference is None:
            return None
        number, sequence = reference & MREF_MASK, reference >> MREF_BITS
        if sequence and sequence != self._file(number).sequence_number:
            raise CorruptFilesystem(
                NAME,
                f"the entry {name!r} names MFT record {number} of sequence {sequence}, but the record is of another file",
            )
        return self._node(number)

    def read(self, node: Node, offset: int, length: int) -> bytes:
        data = self._file(_number(node)).find(AT_DATA)
        if data is None:
            return b""
        if data.flags & ATTR_COMPRESSION_MASK or data.flags & ATTR_IS_ENCRYPTED:
            from introspect.safety import GUEST_NOT_READ

            how = "compressed" if data.flags & ATTR_COMPRESSION_MASK else "encrypted"
            raise ImageError(
                GUEST_NOT_READ,
                f"ntfs: the file in MFT record {node.id} is {how}, and {how} NTFS files are not read",
            )
        return self._read(data, offset, length, f"the file in MFT record {node.id}")

    def readlink(self, node: Node) -> str:
        target = self._link(self._file(_number(node)))
        if target is None:
            raise UsageError(f"MFT record {node.id} is not a symbolic link read here")
        return target

    def list(self, directory: Node, limit: int) -> list[str]:
        names: list[str] = []
        for number, key, name in self._index_entries(_number(directory), MAX_INDEX_BLOCKS):
            if len(names) >= limit:
                break
            if key.file_name_type != FILE_NAME_DOS and number >= FILE_FIRST_USER:
                names.append(name)
        return names

    # --- files ---

    def _node(self, number: int) -> Node:
        file = self._file(number)
        reparse = file.find(AT_REPARSE_POINT)
        if reparse is not None or self._interix(file) is not None:
            target = self._link(file)
            if target is None:
                return Node(number, Kind.OTHER, 0)
            return Node(number, Kind.SYMLINK, len(target))
        if file.flags & MFT_RECORD_IS_DIRECTORY:
            return Node(number, Kind.DIRECTORY, 0)
        data = file.find(AT_DATA)
        return Node(number, Kind.FILE, data.size if data else 0)

    def _link(self, file: _File) -> str | None:
        """A relative Windows symbolic link's or an Interix link's target, with '/' separators."""
        interix = self._interix(file)
        if interix is not None:
            return interix
        reparse = file.find(AT_REPARSE_POINT)
        value = self._value(reparse, MAX_LINK_TARGET * 4, "reparse point") if reparse else b""
        if len(value) < ReparsePoint.SIZE + SymbolicLinkReparseBuffer.SIZE:
            return None
        if ReparsePoint.unpack(value).reparse_tag != IO_REPARSE_TAG_SYMLINK:
            return None
        link = SymbolicLinkReparseBuffer.unpack(value, ReparsePoint.SIZE)
        if not link.flags & SYMLINK_FLAG_RELATIVE:
            return None
        start = ReparsePoint.SIZE + SymbolicLinkReparseBuffer.SIZE + link.substitute_name_offset
        raw = value[start : start + link.substitute_name_length]
        target = raw.decode("utf-16-le", errors="replace").replace("\\", "/")
        return target[:MAX_LINK_TARGET] or None

    def _interix(self, file: _File) -> str | None:
        """ntfs-3g's symbolic link: a SYSTEM file whose resident data starts with IntxLNK\\1."""
        name = file.find(AT_FILE_NAME)
        data = file.find(AT_DATA)
        if name is None or data is None or data.value is None or not data.value.startswith(INTERIX_SYMLINK):
            return None
        if (
            not FileNameAttr.unpack(_padded(name.value or b"", FileNameAttr.SIZE)).file_attributes
            & FILE_ATTR_SYSTEM
        ):
            return None
        raw = data.value[len(INTERIX_SYMLINK) : len(INTERIX_SYMLINK) + MAX_LINK_TARGET * 2]
        return raw.decode("utf-16-le", errors="replace") or None

    def _value(self, attribute: Attribute, limit: int, what: str) -> bytes:
        """An attribute's value (resident or not), at most `limit` bytes."""
        if attribute.value is not None:
            return attribute.value[:limit]
        return self._read(attribute, 0, min(attribute.data_size, limit), what)

    # --- records and attributes ---

    def _file(self, number: int) -> _File:
        return self._records.get_or_make(number, lambda: self._load(number))

    def _load(self, number: int) -> _File:
        record, header = self._record(number)
        if not header.flags & MFT_RECORD_IN_USE:
            raise CorruptFilesystem(NAME, f"MFT record {number} is not in use")
        extents = list(self._extents(record, number))
        listed = next((e for e in extents if e.type == AT_ATTRIBUTE_LIST), None)
        if listed is not None:
            extents = [e for e in extents if e.type != AT_ATTRIBUTE_LIST]
            extents += self._listed_extents(number, listed)
        groups: dict[tuple[int, str], list[_Extent]] = {}
        for extent in extents:
            groups.setdefault((extent.type, extent.name), []).append(extent)
        attributes = tuple(
            self._join(kind, name, group, f"MFT record {number}") for (kind, name), group in groups.items()
        )
        return _File(number, header.flags, header.sequence_number, attributes)

    def _listed_extents(self, number: int, listed: _Extent) -> Sequence[_Extent]:
        """The extents an $ATTRIBUTE_LIST places in extension records (those in the base record
        were read with it)."""
        if listed.value is not None:
            value = listed.value
        else:
            joined = self._join(AT_ATTRIBUTE_LIST, "", [listed], f"the attribute list of MFT record {number}")
            value = self._read(joined, 0, min(joined.data_size, MAX_ATTRIBUTE_LIST), "$ATTRIBUTE_LIST")
        others: list[int] = []
        at = 0
        while at + AttrListEntry.SIZE <= len(value):
            entry = AttrListEntry.unpack(value, at)
            if entry.length < AttrListEntry.SIZE or at + entry.length > len(value):
                raise CorruptFilesystem(
                    NAME, f"an $ATTRIBUTE_LIST entry of {entry.length} bytes in MFT record {number}"
                )
            at += entry.length
            other = entry.mft_reference & MREF_MASK
            if other != number and other not in others:
                others.append(other)
                if len(others) > MAX_EXTENSION_RECORDS:
                    raise CorruptFilesystem(
                        NAME, f"MFT record {number} lists more than {MAX_EXTENSION_RECORDS} extension records"
                    )
        extents: list[_Extent] = []
        for other in others:
            record, header = self._record(other)
            if header.base_mft_record & MREF_MASK != number:
                raise CorruptFilesystem(
                    NAME,
                    f"MFT record {other}, listed by record {number}, belongs to {header.base_mft_record & MREF_MASK}",
                )
            extents += self._extents(record, other)
        return extents

    def _record(self, number: int) -> tuple[bytes, MftRecord]:
        """MFT record `number`, its update sequence array applied and checked."""
        offset = number * self.record_size
        if offset + self.record_size > self._mft.data_size:
            raise CorruptFilesystem(NAME, f"MFT record {number} is past the end of $MFT")
        data = self._read(self._mft, offset, self.record_size, f"MFT record {number}")
        record = _fixed(data, FILE_MAGIC, f"MFT record {number}")
        return record, MftRecord.unpack(record)

    def _extents(self, record: bytes, number: int) -> Iterator[_Extent]:
        """The attribute records of one MFT record, each length checked against the record."""
        header = MftRecord.unpack(record)
        end = min(header.bytes_in_use, len(record))
        at = header.attrs_offset
        if at < MIN_ATTRS_OFFSET or at >= end:
            raise CorruptFilesystem(
                NAME, f"MFT record {number}'s attributes start at {at}, outside its {end} bytes"
            )
        while at + 4 <= end:
            if int.from_bytes(record[at : at + 4], "little") == AT_END:
                return
            if at + MIN_ATTRIBUTE_LENGTH > end:
                break
            attr = AttrRecord.unpack(record, at)
            if attr.length < MIN_ATTRIBUTE_LENGTH or at + attr.length > end:
                raise CorruptFilesystem(
                    NAME, f"an attribute of {attr.length} bytes at byte {at} of MFT record {number}"
                )
            body = record[at : at + attr.length]
            at += attr.length
            yield self._extent(attr, body, number)
        raise CorruptFilesystem(
            NAME, f"MFT record {number}'s attributes run past its bytes in use without an end marker"
        )

    def _extent(self, attr: AttrRecord, body: bytes, number: int) -> _Extent:
        name = ""
        if attr.name_length:
            name_end = attr.name_offset + 2 * attr.name_length
            if name_end > len(body):
                raise CorruptFilesystem(NAME, f"an attribute name past its attribute in MFT record {number}")
            name = body[attr.name_offset : name_end].decode("utf-16-le", errors="replace")
        if not attr.non_resident:
            resident = ResidentAttr.unpack(body, AttrRecord.SIZE)
            if resident.value_offset + resident.value_length > len(body):
                raise CorruptFilesystem(NAME, f"a resident value past its attribute in MFT record {number}")
            value = body[resident.value_offset : resident.value_offset + resident.value_length]
            return _Extent(attr.type, name, attr.flags, value)
        if len(body) < AttrRecord.SIZE + NonResidentAttr.SIZE:
            raise CorruptFilesystem(
                NAME, f"a non-resident attribute of {len(body)} bytes in MFT record {number}"
            )
        header = NonResidentAttr.unpack(body, AttrRecord.SIZE)
        if header.mapping_pairs_offset >= len(body) or header.highest_vcn + 1 < header.lowest_vcn:
            raise CorruptFilesystem(
                NAME, f"a non-resident attribute's mapping pairs are outside it in MFT record {number}"
            )
        runs = self._mapping_pairs(body[header.mapping_pairs_offset :], header.lowest_vcn, number)
        return _Extent(
            attr.type,
            name,
            attr.flags,
            None,
            header.lowest_vcn,
            runs,
            header.data_size,
            header.initialized_size,
        )

    def _mapping_pairs(self, pairs: bytes, vcn: int, number: int) -> tuple[Run, ...]:
        """Decode mapping pairs (Linux-NTFS documentation, "Data runs"): a header byte whose low
        nibble is the size of the run length and high nibble the size of the signed LCN delta
        (none: a sparse run), each run checked against the volume."""
        runs: list[Run] = []
        lcn = 0
        at = 0
        while at < len(pairs) and pairs[at]:
            size_length, size_offset = pairs[at] & 0x0F, pairs[at] >> 4
            at += 1
            if not 1 <= size_length <= MAX_MAPPING_PAIR_FIELD or size_offset > MAX_MAPPING_PAIR_FIELD:
                raise CorruptFilesystem(
                    NAME,
                    f"a mapping pair with {size_length}-byte length and {size_offset}-byte offset in MFT record {number}",
                )
            if at + size_length + size_offset > len(pairs):
                raise CorruptFilesystem(
                    NAME, f"mapping pairs run past their attribute in MFT record {number}"
                )
            length = int.from_bytes(pairs[at : at + size_length], "little", signed=True)
            at += size_length
            if length <= 0:
                raise CorruptFilesystem(NAME, f"a data run of {length} clusters in MFT record {number}")
            if size_offset:
                lcn += int.from_bytes(pairs[at : at + size_offset], "little", signed=True)
                at += size_offset
                if lcn < 0 or lcn + length > self.clusters:
                    raise CorruptFilesystem(
                        NAME,
                        f"a data run of MFT record {number} at clusters {lcn}..{lcn + length - 1}, past the volume's {self.clusters}",
                    )
                runs.append(Run(vcn, lcn, length))
            else:
                runs.append(Run(vcn, None, length))
            vcn += length
            if len(runs) > MAX_RUNS:
                raise CorruptFilesystem(NAME, f"more than {MAX_RUNS} data runs in MFT record {number}")
        return tuple(runs)

    def _join(self, kind: int, name: str, extents: Sequence[_Extent], what: str) -> Attribute:
        """One attribute from its extents: the first's value or sizes, every extent's runs in VCN
        order (each must start where the previous ended)."""
        extents = sorted(extents, key=lambda e: e.lowest_vcn)
        first = extents[0]
        if first.value is not None:
            return Attribute(kind, name, first.flags, first.value)
        runs: list[Run] = []
        vcn = 0
        for extent in extents:
            if extent.value is not None or extent.lowest_vcn != vcn:
                raise CorruptFilesystem(
                    NAME,
                    f"the extents of an attribute of {what} do not follow each other (VCN {extent.lowest_vcn}, expected {vcn})",
                )
            runs += extent.runs
            vcn = runs[-1].vcn + runs[-1].length if runs else vcn
            if len(runs) > MAX_RUNS:
                raise CorruptFilesystem(NAME, f"more than {MAX_RUNS} data runs in {what}")
        return Attribute(kind, name, first.flags, None, tuple(runs), first.data_size, first.initialized_size)

    def _read(self, attribute: Attribute, offset: int, length: int, what: str) -> bytes:
        """Bytes of an attribute's value: runs read, sparse runs and bytes past the initialized
        size as zeros."""
        if attribute.value is not None:
            return attribute.value[max(0, offset) : max(0, offset + length)]
        end = min(attribute.data_size, offset + length)
        if offset < 0 or offset >= end:
            return b""
        cluster = self.cluster_size
        parts: list[bytes] = []
        for run in attribute.runs:
            start, stop = run.vcn * cluster, (run.vcn + run.length) * cluster
            low, high = max(offset, start), min(end, stop)
            if low >= high:
                continue
            if run.lcn is None:
                parts.append(bytes(high - low))
            else:
                parts.append(self.disk.read(run.lcn * cluster + low - start, high - low, what))
        data = b"".join(parts)
        if len(data) < end - offset:
            raise CorruptFilesystem(
                NAME, f"the data runs of {what} end before its size ({attribute.data_size} bytes)"
            )
        initialized = attribute.initialized_size - offset
        if initialized < len(data):
            data = data[: max(0, initialized)] + bytes(len(data) - max(0, initialized))
        return data

    # --- directory indexes ($I30) ---

    def _index_node(self, number: int, vcn: int | None) -> tuple[IndexEntry, ...]:
        """The entries of a directory's index root (`vcn` None) or of one of its index blocks,
        parsed once and kept."""
        return self._nodes.get_or_make(
            (number, -1 if vcn is None else vcn), lambda: self._parse_node(number, vcn)
        )

    def _parse_node(self, number: int, vcn: int | None) -> tuple[IndexEntry, ...]:
        file = self._file(number)
        root = file.find(AT_INDEX_ROOT, I30)
        if root is None or root.value is None or len(root.value) < IndexRoot.SIZE + IndexHeader.SIZE:
            raise CorruptFilesystem(NAME, f"MFT record {number} is not a directory (no $INDEX_ROOT)")
        if vcn is None:
            return tuple(
                _node_entries(root.value[IndexRoot.SIZE :], f"the index root of MFT record {number}")
            )
        block = self._index_block(file, IndexRoot.unpack(root.value), vcn)
        return tuple(_node_entries(block, f"index block {vcn} of MFT record {number}"))

    def _index_lookup(self, number: int, name: str) -> int | None:
        """The B-tree descent: in each node, the first entry whose name is not below `name`
        (upper-cased, compared as UTF-16 code units) is the match or the subtree to go down."""
        wanted = _collation_key(name)
        visited: set[int] = set()
        node = self._index_node(number, None)
        for _ in range(MAX_INDEX_DEPTH):
            child: int | None = None
            for entry in node:
                if entry.key is None:  # the END entry
                    child = entry.subnode
                    break
                if entry.collation == wanted:
                    return entry.reference
                if wanted < entry.collation:
                    child = entry.subnode
                    break
            if child is None:
                break
            if child in visited:
                raise LoopDetected(f"the index B-tree of MFT record {number} (block VCN {child})")
            visited.add(child)
            node = self._index_node(number, child)
        if name.isascii():
            return None
        # Other characters: Windows upper-cases them with $UpCase, which may order them otherwise.
        folded = name.casefold()
        for entry_number, _, entry_name in self._index_entries(number, MAX_INDEX_BLOCKS):
            if entry_name.casefold() == folded:
                return entry_number
        return None

    def _index_entries(self, number: int, max_blocks: int) -> Iterator[tuple[int, FileNameAttr, str]]:
        """Every entry of a directory index in order (record number, key, name): the B-tree
        walked depth first, at most `max_blocks` blocks, each once."""
        visited: set[int] = set()
        # A stack of pending node iterators; a sub-node is walked before its entry.
        stack: list[Iterator[IndexEntry]] = [iter(self._index_node(number, None))]
        pending: list[tuple[int, FileNameAttr, str] | None] = [None]
        while stack:
            if len(stack) > MAX_INDEX_DEPTH:
                raise CorruptFilesystem(
                    NAME, f"the index of MFT record {number} is deeper than {MAX_INDEX_DEPTH}"
                )
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                after = pending.pop()
                if after is not None:
                    yield after
                continue
            subnode = step.subnode
            entry = (step.reference & MREF_MASK, step.key, step.name) if step.key is not None else None
            if subnode is None:
                if entry is not None:
                    yield entry
                continue
            if subnode in visited:
                raise LoopDetected(f"the index B-tree of MFT record {number} (block VCN {subnode})")
            visited.add(subnode)
            if len(visited) > max_blocks:
                raise CorruptFilesystem(
                    NAME, f"the index of MFT record {number} has more than {max_blocks} blocks"
                )
            stack.append(iter(self._index_node(number, subnode)))
            pending.append(entry)

    def _index_block(self, file: _File, root: IndexRoot, vcn: int) -> bytes:
        """The INDEX_HEADER and entries of the $INDEX_ALLOCATION block at `vcn`, fixed up."""
        size = root.index_block_size
        if not MIN_RECORD_SIZE <= size <= MAX_RECORD_SIZE or size & (size - 1):
            raise CorruptFilesystem(NAME, f"index blocks of {size} bytes in MFT record {file.number}")
        allocation = file.find(AT_INDEX_ALLOCATION, I30)
        if allocation is None or allocation.value is not None:
            raise CorruptFilesystem(
                NAME, f"MFT record {file.number}'s index names a block but it has no $INDEX_ALLOCATION"
            )
        # ntfs-3g (index_vcn_size): VCNs count clusters when a block is at least a cluster, else
        # 512-byte units.
        unit = self.cluster_size if size >= self.cluster_size else NTFS_BLOCK_SIZE
        what = f"index block {vcn} of MFT record {file.number}"

        data = _fixed(self._read(allocation, vcn * unit, size, what), INDX_MAGIC, what)
        if len(data) < size:
            raise CorruptFilesystem(NAME, f"{what} is past the end of its $INDEX_ALLOCATION")
        if IndexBlock.unpack(data).index_block_vcn != vcn:
            raise CorruptFilesystem(
                NAME, f"{what} says it is block {IndexBlock.unpack(data).index_block_vcn}"
            )
        return data[IndexBlock.SIZE :]


def _node_entries(node: bytes, what: str) -> Iterator[IndexEntry]:
    """The entries of a node (an INDEX_HEADER and what follows it); the END entry has no key."""
    header = IndexHeader.unpack(node)
    end = min(header.index_length, len(node))
    at = header.entries_offset
    for _ in range(MAX_NODE_ENTRIES):
        if at < IndexHeader.SIZE or at + IndexEntryHeader.SIZE > end:
            raise CorruptFilesystem(NAME, f"{what}: an entry at byte {at} is outside the node's {end} bytes")
        entry = IndexEntryHeader.unpack(node, at)
        if entry.length < IndexEntryHeader.SIZE or at + entry.length > end:
            raise CorruptFilesystem(NAME, f"{what}: an index entry of {entry.length} bytes at byte {at}")
        subnode = None
        if entry.ie_flags & INDEX_ENTRY_NODE:
            if entry.length < IndexEntryHeader.SIZE + VCN_SIZE:
                raise CorruptFilesystem(NAME, f"{what}: an index entry too short for its sub-node VCN")
            subnode = int.from_bytes(node[at + entry.length - VCN_SIZE : at + entry.length], "little")
        if entry.ie_flags & INDEX_ENTRY_END:
            yield IndexEntry(0, None, "", b"", subnode)
            return
        key_at = at + IndexEntryHeader.SIZE
        if entry.key_length < FileNameAttr.SIZE or key_at + entry.key_length > at + entry.length:
            raise CorruptFilesystem(NAME, f"{what}: an index key of {entry.key_length} bytes")
        key = FileNameAttr.unpack(node, key_at)
        name_at = key_at + FileNameAttr.SIZE
        if name_at + 2 * key.file_name_length > key_at + entry.key_length:
            raise CorruptFilesystem(NAME, f"{what}: a file name longer than its key")
        name = node[name_at : name_at + 2 * key.file_name_length].decode("utf-16-le", errors="replace")
        yield IndexEntry(entry.indexed_file, key, name, _collation_key(name), subnode)
        at += entry.length
    raise CorruptFilesystem(NAME, f"{what}: more than {MAX_NODE_ENTRIES} entries in one node")


def _fixed(record: bytes, magic: bytes, what: str) -> bytes:
    """A multi-sector record with its update sequence array applied (ntfs-3g `ntfs_mst_post_read_fixup`):
    the last two bytes of each 512-byte stride must hold the update sequence number."""
    header = IndexBlock.unpack(
        _padded(record, IndexBlock.SIZE)
    )  # magic, usa_ofs, usa_count lead both headers
    if header.magic != magic:
        raise CorruptFilesystem(NAME, f"{what} has the magic {header.magic!r}, not {magic!r}")
    strides = len(record) // NTFS_BLOCK_SIZE
    usa_end = header.usa_ofs + 2 * header.usa_count
    if header.usa_count != strides + 1 or header.usa_ofs & 1 or usa_end > NTFS_BLOCK_SIZE - 2:
        raise CorruptFilesystem(
            NAME,
            f"{what}: an update sequence array of {header.usa_count} entries at {header.usa_ofs} for {strides} sectors",
        )
    fixed = bytearray(record)
    usn = record[header.usa_ofs : header.usa_ofs + 2]
    for stride in range(strides):
        tail = (stride + 1) * NTFS_BLOCK_SIZE - 2
        if record[tail : tail + 2] != usn:
            raise CorruptFilesystem(
                NAME, f"{what}: sector {stride} fails its update sequence check (torn write or damage)"
            )
        saved = header.usa_ofs + 2 * (stride + 1)
        fixed[tail : tail + 2] = record[saved : saved + 2]
    return bytes(fixed)


def _padded(data: bytes, size: int) -> bytes:
    return data if len(data) >= size else data + bytes(size - len(data))


def _collation_key(name: str) -> bytes:
    """COLLATION_FILE_NAME for ASCII: names upper-cased, compared as UTF-16 code units."""
    upper = "".join(c.upper() if c.isascii() else c for c in name)
    return upper.encode("utf-16-be", errors="surrogatepass")


def _number(node: Node) -> int:
    if not isinstance(node.id, int):
        raise UsageError(f"not an NTFS node: {node!r}")
    return node.id


def open_ntfs(disk: Disk) -> NtfsFilesystem:
    return NtfsFilesystem(disk)


FILESYSTEM = FilesystemType(name=NAME, probe=probe, open=open_ntfs)
