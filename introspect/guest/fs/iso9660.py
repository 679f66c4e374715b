"""ISO 9660 with Rock Ridge and Joliet: installer media, cloud-init seed ISOs, driver discs.

Specs:
- ECMA-119 4th edition (2019): §6.8.1 (a directory's records never cross a logical sector; a zero
  byte pads a sector's end), §6.8.2.2 (a directory's first two records are itself and its parent),
  §9.1 (the Directory Record, with §9.1.6 File Flags: Multi-Extent files are consecutive records of
  one name), §7.5.1 (file identifiers end in ";version"). The volume descriptors are declared once,
  in `introspect.formats.iso`, and imported from there.
- IEEE P1281 (SUSP 1.12): §4.1 the System Use Entry header, §5.1 CE (Continuation Area), §5.3 SP
  (SUSP present, and the bytes to skip), §5.4 ST (terminator).
- IEEE P1282 (Rock Ridge 1.12): §4.1.1 PX (POSIX mode), §4.1.3 SL (symbolic link components),
  §4.1.4 NM (alternate name), §4.1.5 CL/PL/RE (relocated deep directories).
- Joliet Specification (Microsoft, 1995): a Supplementary Volume Descriptor with escape sequence
  `%/@`, `%/C` or `%/E`, whose own directory tree names files in UCS-2 big-endian.

Which tree is read is Linux's choice: the primary tree with Rock Ridge names (case-sensitive) when
its root directory carries SUSP's SP entry, else the Joliet tree, else the primary tree's plain
names (case-insensitive both, as on Windows). `label` and `uuid` are what libblkid's `iso9660`
prober reports: the volume identifier (rebuilt from Joliet's and the primary's, as libblkid does),
and the volume modification date (else the creation date) as YYYY-MM-DD-HH-MM-SS-cc.

What a lookup reads: the descriptors once, then a directory's sectors until its name is found; a
Rock Ridge entry's continuation areas only for the names compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from introspect.errors import UsageError
from introspect.formats.iso import (
    JOLIET_ESCAPE_SIZE,
    JOLIET_LEVELS,
    MAX_VOLUME_DESCRIPTORS,
    SECTOR_SIZE,
    STANDARD_IDENTIFIER,
    TYPE_PRIMARY,
    TYPE_SUPPLEMENTARY,
    TYPE_TERMINATOR,
    VALID_LOGICAL_BLOCK_SIZES,
    VOLUME_DESCRIPTOR_SET_SECTOR,
    DecDatetime,
    VolumeDescriptor,
    VolumeDescriptorBody,
)
from introspect.guest.disk import Disk
from introspect.guest.fs.base import (
    MAX_LINK_TARGET,
    CorruptFilesystem,
    FilesystemType,
    Kind,
    LoopDetected,
    Node,
)
from introspect.structure import LittleEndianStructure, chars, u8, u16, u32

NAME = "iso9660"

# --- Directory Record (ECMA-119 §9.1) ------------------------------------------------------------


class DirectoryRecord(LittleEndianStructure):
    """A Directory Record's fixed part (ECMA-119 §9.1), before its File Identifier; both-byte-order
    numbers keep their big-endian halves raw (Linux reads the little-endian ones, as we do)."""

    length_of_directory_record: int = u8()
    extended_attribute_record_length: int = u8()
    location_of_extent: int = u32()
    location_of_extent_be: bytes = chars(4)
    data_length: int = u32()
    data_length_be: bytes = chars(4)
    recording_date_and_time: bytes = chars(7)
    file_flags: int = u8()
    file_unit_size: int = u8()
    interleave_gap_size: int = u8()
    volume_sequence_number: int = u16()
    volume_sequence_number_be: bytes = chars(2)
    length_of_file_identifier: int = u8()


#: File Flags (§9.1.6) by bit number: Existence (hidden), Directory, Associated File, Multi-Extent.
FLAG_DIRECTORY_BIT = 1
FLAG_ASSOCIATED_BIT = 2
FLAG_MULTI_EXTENT_BIT = 7
FLAG_DIRECTORY = 1 << FLAG_DIRECTORY_BIT
FLAG_ASSOCIATED = 1 << FLAG_ASSOCIATED_BIT
FLAG_MULTI_EXTENT = 1 << FLAG_MULTI_EXTENT_BIT
#: The File Identifiers of a directory's own record and its parent's (§6.8.2.2).
SELF_IDENTIFIER = b"\x00"
PARENT_IDENTIFIER = b"\x01"
#: A file's extents at most: xorriso's own limit is 100 extents of 4 GiB - 2 KiB
#: (`-file_size_limit`), and Linux's isofs stops at the same count.
MAX_EXTENTS = 100
#: A directory is read this many bytes at a time (two CD sectors), so a lookup stops at its name.
DIRECTORY_CHUNK = 2 * SECTOR_SIZE

# --- System Use Sharing Protocol and Rock Ridge (IEEE P1281, P1282) -----------------------------


class SystemUseEntry(LittleEndianStructure):
    """A System Use Entry's header (SUSP §4.1): signature, length (header included), version."""

    signature_word: bytes = chars(2)
    length: int = u8()
    system_use_entry_version: int = u8()


class ContinuationArea(LittleEndianStructure):
    """The CE entry's body (SUSP §5.1): where the System Use Area goes on."""

    block_location_of_continuation_area: int = u32()
    block_location_be: bytes = chars(4)
    offset_to_start_of_continuation_area: int = u32()
    offset_be: bytes = chars(4)
    length_of_the_continuation_area: int = u32()
    length_be: bytes = chars(4)


class SharingProtocolIndicator(LittleEndianStructure):
    """The SP entry's body (SUSP §5.3): check bytes BE EF, then the bytes to skip in each area."""

    check_bytes: bytes = chars(2)
    len_skp: int = u8()


SP_CHECK_BYTES = b"\xbe\xef"
#: Continuation areas followed for one record: Linux's isofs stops at RR_MAX_CE_ENTRIES (32).
MAX_CONTINUATIONS = 32
#: System Use Entries read for one record (its own area and its continuations): a name and a link
#: target of PATH_MAX bytes split in 250-byte pieces need 20; 256 is far past any writer.
MAX_SYSTEM_USE_ENTRIES = 256
#: NM and SL component flags (P1282 §4.1.4, §4.1.3.1): CONTINUE, CURRENT, PARENT, ROOT.
CONTINUE_BIT, CURRENT_BIT, PARENT_BIT, ROOT_BIT = 0, 1, 2, 3
CONTINUE = 1 << CONTINUE_BIT
CURRENT = 1 << CURRENT_BIT
PARENT = 1 << PARENT_BIT
ROOT = 1 << ROOT_BIT
#: PX's file mode (P1282 §4.1.1): the POSIX file type bits.
S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000
#: A name is at most this long (NAME_MAX bytes in Linux; an NM name is cut there).
MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class Extents:
    """A file's or directory's handle: its extents (byte offset, length), and a link's target."""

    extents: tuple[tuple[int, int], ...]
    target: str | None = None


@dataclass(frozen=True, slots=True)
class _Record:
    """One directory record, its System Use Area, and where it is (for continuation loops)."""

    record: DirectoryRecord
    identifier: bytes
    system_use: bytes
    extents: tuple[tuple[int, int], ...]
    size: int


@dataclass(slots=True)
class _RockRidge:
    """What one record's Rock Ridge entries say."""

    name: str | None = None
    mode: int | None = None
    target: str | None = None
    child: int | None = None
    relocated: bool = False


def probe(disk: Disk) -> bool:
    """The standard identifier CD001 in the first volume descriptor (sector 16)."""
    start = VOLUME_DESCRIPTOR_SET_SECTOR * SECTOR_SIZE
    if disk.size < start + SECTOR_SIZE:
        return False
    descriptor = VolumeDescriptor.read(disk, "ISO 9660 volume descriptor", start)
    return descriptor.standard_identifier == STANDARD_IDENTIFIER


class IsoFilesystem:
    """An opened ISO 9660 volume (see the module docstring)."""

    name = NAME

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        primary, joliet = _descriptors(disk)
        block = primary.logical_block_size
        if block not in VALID_LOGICAL_BLOCK_SIZES:
            raise CorruptFilesystem(NAME, f"the logical block size is {block}, not 512, 1024 or 2048")
        self.block_size = block
        self.label = _label(primary, joliet)
        self.uuid = _uuid(primary)
        self.skip = 0
        self.rock_ridge = False
        self.joliet = False
        root = self._root_record(primary)
        first = next(self._records(root, check_self=True), None)
        if first is not None and (skip := _sp_skip(first.system_use)) is not None:
            self.rock_ridge, self.skip = True, skip
        elif joliet is not None:
            self.joliet = True
            root = self._root_record(joliet)
        self._root = Node(Extents(root.extents), Kind.DIRECTORY, root.size)
        self.case_sensitive = self.rock_ridge

    # --- the Filesystem contract ---

    def root(self) -> Node:
        return self._root

    def lookup(self, directory: Node, name: str) -> Node | None:
        wanted = name if self.case_sensitive else name.casefold()
        for entry_name, record, rock in self._entries(directory):
            if (entry_name if self.case_sensitive else entry_name.casefold()) == wanted:
                return self._node(record, rock)
        return None

    def read(self, node: Node, offset: int, length: int) -> bytes:
        end = min(node.size, offset + length)
        if offset < 0 or offset >= end:
            return b""
        parts: list[bytes] = []
        start = 0
        for at, size in _handle(node).extents:
            low, high = max(offset, start), min(end, start + size)
            if low < high:
                parts.append(self.disk.read(at + low - start, high - low, "ISO 9660 file extent"))
            start += size
        return b"".join(parts)

    def readlink(self, node: Node) -> str:
        target = _handle(node).target
        if target is None:
            raise UsageError("not a Rock Ridge symbolic link")
        return target

    def list(self, directory: Node, limit: int) -> list[str]:
        names: list[str] = []
        for entry_name, _, _ in self._entries(directory):
            if len(names) >= limit:
                break
            names.append(entry_name)
        return names

    # --- directories ---

    def _root_record(self, descriptor: VolumeDescriptorBody) -> _Record:
        raw = descriptor.root_directory_record
        record = DirectoryRecord.unpack(raw)
        if not record.file_flags & FLAG_DIRECTORY:
            raise CorruptFilesystem(NAME, "the root directory record does not describe a directory")
        return self._record(record, raw[DirectoryRecord.SIZE :], ())

    def _record(self, record: DirectoryRecord, rest: bytes, before: tuple[tuple[int, int], ...]) -> _Record:
        identifier = rest[: record.length_of_file_identifier]
        # A padding byte follows an identifier of even length (§9.1.12).
        used = (
            DirectoryRecord.SIZE
            + record.length_of_file_identifier
            + (record.length_of_file_identifier + 1) % 2
        )
        start = (record.location_of_extent + record.extended_attribute_record_length) * self.block_size
        extents = (*before, (start, record.data_length))
        return _Record(
            record=record,
            identifier=identifier,
            system_use=rest[
                used - DirectoryRecord.SIZE : record.length_of_directory_record - DirectoryRecord.SIZE
            ],
            extents=extents,
            size=sum(length for _, length in extents),
        )

    def _records(self, directory: _Record | Node, *, check_self: bool = False) -> Iterator[_Record]:
        """The records of a directory, multi-extent files joined, "." first when `check_self`."""
        extents = directory.extents if isinstance(directory, _Record) else _handle(directory).extents
        pending: tuple[tuple[int, int], ...] = ()
        first = True
        for start, size in extents:
            for chunk_at in range(start, start + size, DIRECTORY_CHUNK):
                chunk = self.disk.read(
                    chunk_at, min(DIRECTORY_CHUNK, start + size - chunk_at), "ISO 9660 directory"
                )
                for sector in range(0, len(chunk), SECTOR_SIZE):
                    for raw in _sector_records(chunk[sector : sector + SECTOR_SIZE], chunk_at + sector):
                        record = self._record(
                            DirectoryRecord.unpack(raw), raw[DirectoryRecord.SIZE :], pending
                        )
                        if first:
                            first = False
                            if record.identifier != SELF_IDENTIFIER:
                                raise CorruptFilesystem(
                                    NAME, f"the directory at byte {start} does not start with its own record"
                                )
                            if check_self:
                                yield record
                            continue
                        if record.record.file_flags & FLAG_MULTI_EXTENT:
                            if len(record.extents) >= MAX_EXTENTS:
                                raise CorruptFilesystem(NAME, f"a file has more than {MAX_EXTENTS} extents")
                            pending = record.extents
                            continue
                        pending = ()
                        yield record
        if first:
            raise CorruptFilesystem(NAME, "a directory has no records")

    def _entries(self, directory: Node) -> Iterator[tuple[str, _Record, _RockRidge | None]]:
        """(name, record, its Rock Ridge entries) of each file and directory as this tree names
        them, "." and "..", associated files and relocated directories left out."""
        for record in self._records(directory):
            if record.identifier in (SELF_IDENTIFIER, PARENT_IDENTIFIER):
                continue
            if record.record.file_flags & FLAG_ASSOCIATED:
                continue
            if self.rock_ridge:
                rock = self._rock_ridge(record)
                if rock.relocated:
                    continue
                yield rock.name or _plain_name(record.identifier), record, rock
            elif self.joliet:
                yield _strip_version(record.identifier.decode("utf-16-be", errors="replace")), record, None
            else:
                yield _plain_name(record.identifier), record, None

    def _node(self, record: _Record, rock: _RockRidge | None) -> Node:
        if rock is None:
            kind = Kind.DIRECTORY if record.record.file_flags & FLAG_DIRECTORY else Kind.FILE
            return Node(Extents(record.extents), kind, record.size)
        if rock.child is not None:  # a relocated directory: its records are where CL says
            at = rock.child * self.block_size
            moved = next(
                self._records(
                    Node(Extents(((at, SECTOR_SIZE),)), Kind.DIRECTORY, SECTOR_SIZE), check_self=True
                )
            )
            return Node(Extents(moved.extents), Kind.DIRECTORY, moved.size)
        file_type = rock.mode & S_IFMT if rock.mode is not None else None
        if file_type == S_IFLNK or (file_type is None and rock.target is not None):
            return Node(Extents(record.extents, rock.target or ""), Kind.SYMLINK, len(rock.target or ""))
        if file_type in (S_IFDIR, None) and record.record.file_flags & FLAG_DIRECTORY:
            return Node(Extents(record.extents), Kind.DIRECTORY, record.size)
        if file_type in (S_IFREG, None):
            return Node(Extents(record.extents), Kind.FILE, record.size)
        return Node(Extents(record.extents), Kind.OTHER, record.size)

    # --- Rock Ridge ---

    def _rock_ridge(self, record: _Record) -> _RockRidge:
        rock = _RockRidge()
        name: list[str] = []
        link: list[str] = []
        link_ended = True
        for signature, data in self._system_use(record.system_use[self.skip :]):
            if signature == b"NM" and data:
                flags = data[0]
                if not flags & (CURRENT | PARENT) and sum(map(len, name)) < MAX_NAME:
                    name.append(data[1:].decode("utf-8", errors="replace"))
            elif signature == b"PX" and len(data) >= 4:
                rock.mode = int.from_bytes(data[:4], "little")
            elif signature == b"SL" and data:
                link_ended = _link_components(data[1:], link, link_ended)
            elif signature == b"CL" and len(data) >= 4:
                rock.child = int.from_bytes(data[:4], "little")
            elif signature == b"RE":
                rock.relocated = True
        if name:
            rock.name = "".join(name)[:MAX_NAME]
        if link:
            rock.target = "".join(link)[:MAX_LINK_TARGET]
        return rock

    def _system_use(self, area: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(signature, data) of each System Use Entry, continuation areas followed (bounded)."""
        seen: set[tuple[int, int]] = set()
        entries = 0
        while True:
            continuation: ContinuationArea | None = None
            at = 0
            while at + SystemUseEntry.SIZE <= len(area):
                entries += 1
                if entries > MAX_SYSTEM_USE_ENTRIES:
                    raise CorruptFilesystem(
                        NAME, f"a record has more than {MAX_SYSTEM_USE_ENTRIES} System Use entries"
                    )
                header = SystemUseEntry.unpack(area, at)
                if header.length < SystemUseEntry.SIZE or at + header.length > len(area):
                    break  # padding, or a damaged entry: the area ends there, as in Linux
                data = area[at + SystemUseEntry.SIZE : at + header.length]
                at += header.length
                if header.signature_word == b"ST":
                    break
                if header.signature_word == b"CE" and len(data) >= ContinuationArea.SIZE:
                    continuation = ContinuationArea.unpack(data)
                    continue
                yield header.signature_word, data
            if continuation is None:
                return
            where = (
                continuation.block_location_of_continuation_area,
                continuation.offset_to_start_of_continuation_area,
            )
            if where in seen:
                raise LoopDetected(f"the Rock Ridge continuation areas (block {where[0]}, offset {where[1]})")
            seen.add(where)
            if len(seen) > MAX_CONTINUATIONS:
                raise CorruptFilesystem(
                    NAME, f"a record has more than {MAX_CONTINUATIONS} continuation areas"
                )
            offset, length = where[1], continuation.length_of_the_continuation_area
            # A continuation area lies within one logical block (SUSP §5.1).
            if offset >= self.block_size or length > self.block_size - offset:
                raise CorruptFilesystem(
                    NAME, f"a continuation area of {length} bytes at offset {offset} leaves its block"
                )
            area = self.disk.read(where[0] * self.block_size + offset, length, "Rock Ridge continuation area")


def _sector_records(sector: bytes, position: int) -> Iterator[bytes]:
    """The records of one sector: a zero length byte pads to the sector's end (§6.8.1)."""
    at = 0
    while at < len(sector) and sector[at] != 0:
        length = sector[at]
        if length < DirectoryRecord.SIZE or at + length > len(sector):
            raise CorruptFilesystem(NAME, f"a directory record of {length} bytes at byte {position + at}")
        if DirectoryRecord.SIZE + sector[at + DirectoryRecord.SIZE - 1] > length:
            raise CorruptFilesystem(NAME, f"a file identifier longer than its record at byte {position + at}")
        yield sector[at : at + length]
        at += length


def _link_components(data: bytes, link: list[str], ended: bool) -> bool:
    """Append an SL entry's components to `link` (P1282 §4.1.3.1); True when the last component
    ended (was not continued)."""
    at = 0
    while at + 2 <= len(data):
        flags, length = data[at], data[at + 1]
        content = data[at + 2 : at + 2 + length].decode("utf-8", errors="replace")
        at += 2 + length
        if flags & ROOT:
            link.clear()
            link.append("/")
            ended = True
            continue
        if ended and link and link[-1] != "/":
            link.append("/")
        link.append("." if flags & CURRENT else ".." if flags & PARENT else content)
        ended = not flags & CONTINUE
    return ended


def _sp_skip(system_use: bytes) -> int | None:
    """LEN_SKP of the SP entry that opens the root's "." record (SUSP §5.3), or None."""
    if len(system_use) < SystemUseEntry.SIZE + SharingProtocolIndicator.SIZE:
        return None
    header = SystemUseEntry.unpack(system_use)
    indicator = SharingProtocolIndicator.unpack(system_use, SystemUseEntry.SIZE)
    if header.signature_word != b"SP" or indicator.check_bytes != SP_CHECK_BYTES:
        return None
    return indicator.len_skp


def _handle(node: Node) -> Extents:
    if not isinstance(node.id, Extents):
        raise UsageError(f"not an ISO 9660 node: {node!r}")
    return node.id


def _strip_version(name: str) -> str:
    """A name without its ";version" (§7.5.1)."""
    return name.rsplit(";", 1)[0] if ";" in name else name


def _plain_name(identifier: bytes) -> str:
    """A d-character name without its version, and without the dot of an empty extension."""
    name = _strip_version(identifier.decode("ascii", errors="replace"))
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def _descriptors(disk: Disk) -> tuple[VolumeDescriptorBody, VolumeDescriptorBody | None]:
    """The Primary Volume Descriptor and the first Joliet one, up to the terminator (bounded)."""
    primary = joliet = None
    for index in range(MAX_VOLUME_DESCRIPTORS):
        at = (VOLUME_DESCRIPTOR_SET_SECTOR + index) * SECTOR_SIZE
        data = disk.read_upto(at, VolumeDescriptorBody.SIZE, "ISO 9660 volume descriptor")
        if len(data) < VolumeDescriptorBody.SIZE:
            break
        descriptor = VolumeDescriptorBody.unpack(data)
        if (
            descriptor.standard_identifier != STANDARD_IDENTIFIER
            or descriptor.volume_descriptor_type == TYPE_TERMINATOR
        ):
            break
        if descriptor.volume_descriptor_type == TYPE_PRIMARY and primary is None:
            primary = descriptor
        elif (
            descriptor.volume_descriptor_type == TYPE_SUPPLEMENTARY
            and joliet is None
            and descriptor.escape_sequences[:JOLIET_ESCAPE_SIZE] in JOLIET_LEVELS
        ):
            joliet = descriptor
    if primary is None:
        raise CorruptFilesystem(NAME, "no primary volume descriptor")
    return primary, joliet


def _label(primary: VolumeDescriptorBody, joliet: VolumeDescriptorBody | None) -> str | None:
    """libblkid's label: Joliet's volume identifier (16 UCS-2 characters) completed by the
    primary's (32 ASCII ones, '_' for what ASCII cannot say) when one is a prefix of the other."""
    ascii_id = primary.volume_identifier.decode("ascii", errors="replace")
    if joliet is None:
        return ascii_id.rstrip(" \0") or None
    ucs = joliet.volume_identifier.decode("utf-16-be", errors="replace")
    merged: list[str] = []
    for mine, theirs in zip(ucs, ascii_id, strict=False):
        if theirs == "_":
            merged.append(mine)
        elif mine == "_":
            merged.append(theirs)
        elif mine.isascii() and mine.upper() == theirs.upper():
            merged.append(mine if theirs.isupper() else theirs)
        else:
            return ucs.rstrip(" \0") or None
    merged.append(ascii_id[len(ucs) :])
    return "".join(merged).rstrip(" \0") or None


def _uuid(primary: VolumeDescriptorBody) -> str | None:
    """libblkid's UUID: the modification date's digits (else the creation date's), dashed."""
    for raw in (primary.volume_modification_date_and_time, primary.volume_creation_date_and_time):
        date = DecDatetime.unpack(raw)
        digits = (date.year, date.month, date.day, date.hour, date.minute, date.second, date.hundredths)
        if all(set(part) == {ord("0")} for part in digits) and date.gmt_offset == 0:
            continue
        return "-".join(part.decode("ascii", errors="replace") for part in digits)
    return None


def open_iso9660(disk: Disk) -> IsoFilesystem:
    return IsoFilesystem(disk)


FILESYSTEM = FilesystemType(name=NAME, probe=probe, open=open_iso9660)
