"""FAT12, FAT16 and FAT32, with VFAT long names: EFI System Partitions, boot floppies, USB sticks.

Spec: Microsoft "FAT: General Overview of On-Disk Format" (FAT32 File System Specification 1.03,
2000), whose section names the comments cite: "Boot Sector and BPB" (the BPB, and its FAT12/16 and
FAT32 extensions from offset 36), "FAT Type Determination" (the type from the count of clusters),
"FAT Data Structure" (cluster chains, EOC marks, the bad cluster mark), "FAT Directory Structure"
(the 32-byte directory entry), "FAT Long Directory Entries" (the VFAT long name entries and their
checksum). The lowercase bits of DIR_NTRes are Windows NT's, as Linux's vfat reads them.

How the volume is recognised and named follows libblkid's `vfat` prober, so `name`, `label` and
`uuid` are what `blkid` prints: a FAT32 volume is the one whose 16-bit FAT size is zero (as in
Linux's fat driver, whatever its cluster count), the label is the root directory's volume label
entry, else the boot sector's (neither when it is "NO NAME"), and the UUID is the volume serial
number as XXXX-XXXX.

What a lookup reads: the boot sector once, a directory's clusters until the name is found, and the
FAT entries of the chains it follows, each FAT sector read once (and kept in a bounded cache).
A FAT16/FAT32 chain is walked by runs, not by clusters: the FAT is decoded once into its entries,
a window at a time (the sectors in one block of the disk's cache), and where a run of consecutive
clusters stops is the first entry that differs from the cluster numbers that would continue it
(found in C, in one integer holding the window's entries XOR those numbers), so reaching the end
of a contiguous loader on an ESP (shim's string table is there) costs a few operations a window,
not one per cluster. FAT12 volumes are small: their
chains are walked entry by entry (an entry may straddle two sectors there).
"""

from __future__ import annotations

import functools
import sys
from array import array
from bisect import bisect_right, insort
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import ClassVar

from introspect.errors import UsageError
from introspect.guest.disk import Disk
from introspect.guest.fs.base import (
    MAX_INDEXED_DIRECTORIES,
    CorruptFilesystem,
    DirectoryIndex,
    FilesystemType,
    Kind,
    LoopDetected,
    Node,
)
from introspect.lru import Lru
from introspect.structure import LittleEndianStructure, chars, u8, u16, u32

NAME = "vfat"

# --- Boot Sector and BPB -----------------------------------------------------------------------


class BiosParameterBlock(LittleEndianStructure):
    """The boot sector's first 36 bytes, common to FAT12, FAT16 and FAT32 ("Boot Sector and BPB")."""

    OFFSET: ClassVar[int] = 0

    BS_jmpBoot: bytes = chars(3)
    BS_OEMName: bytes = chars(8)
    BPB_BytsPerSec: int = u16()
    BPB_SecPerClus: int = u8()
    BPB_RsvdSecCnt: int = u16()
    BPB_NumFATs: int = u8()
    BPB_RootEntCnt: int = u16()
    BPB_TotSec16: int = u16()
    BPB_Media: int = u8()
    BPB_FATSz16: int = u16()
    BPB_SecPerTrk: int = u16()
    BPB_NumHeads: int = u16()
    BPB_HiddSec: int = u32()
    BPB_TotSec32: int = u32()


class Fat16Extension(LittleEndianStructure):
    """The FAT12/FAT16 boot sector from offset 36 ("Boot Sector and BPB", "Fat12 and Fat16
    Structure Starting at Offset 36")."""

    OFFSET: ClassVar[int] = 36

    BS_DrvNum: int = u8()
    BS_Reserved1: int = u8()
    BS_BootSig: int = u8()
    BS_VolID: int = u32()
    BS_VolLab: bytes = chars(11)
    BS_FilSysType: bytes = chars(8)


class Fat32Extension(LittleEndianStructure):
    """The FAT32 boot sector from offset 36 ("FAT32 Structure Starting at Offset 36")."""

    OFFSET: ClassVar[int] = 36

    BPB_FATSz32: int = u32()
    BPB_ExtFlags: int = u16()
    BPB_FSVer: int = u16()
    BPB_RootClus: int = u32()
    BPB_FSInfo: int = u16()
    BPB_BkBootSec: int = u16()
    BPB_Reserved: bytes = chars(12)
    BS_DrvNum: int = u8()
    BS_Reserved1: int = u8()
    BS_BootSig: int = u8()
    BS_VolID: int = u32()
    BS_VolLab: bytes = chars(11)
    BS_FilSysType: bytes = chars(8)


#: The boot sector's signature, bytes 510-511 (0x55 0xAA).
SIGNATURE_OFFSET = 510
SIGNATURE = b"\x55\xaa"
BOOT_SECTOR_SIZE = 512
#: The type strings (BS_FilSysType, or an OEM name there) libblkid accepts without the signature.
FILESYSTEM_TYPES = (b"FAT12   ", b"FAT16   ", b"FAT32   ", b"FAT     ", b"MSDOS", b"MSWIN")
#: BPB_BytsPerSec: "may take on only the following values: 512, 1024, 2048 or 4096".
SECTOR_SIZES = frozenset({512, 1024, 2048, 4096})
#: BPB_SecPerClus: "1, 2, 4, 8, 16, 32, 64, and 128" (a power of two).
MAX_SECTORS_PER_CLUSTER = 128
#: BPB_Media: 0xF0, or 0xF8 to 0xFF.
MEDIA_FLOPPY = 0xF0
MEDIA_FIXED_MIN = 0xF8
#: BPB_ExtFlags (FAT32): bit 7 set means only one FAT is active, the one in bits 0-3.
EXT_FLAGS_SINGLE_FAT_BIT = 7
EXT_FLAGS_SINGLE_FAT = 1 << EXT_FLAGS_SINGLE_FAT_BIT
EXT_FLAGS_ACTIVE_FAT_MASK = 0x0F
#: The label of a volume that has none.
NO_NAME = b"NO NAME    "

# --- FAT Type Determination, FAT Data Structure --------------------------------------------------

#: Fewer clusters than this: FAT12; fewer than FAT16_CLUSTERS: FAT16 ("FAT Type Determination").
FAT12_CLUSTERS = 4085
FAT16_CLUSTERS = 65525
#: The first data cluster's number: clusters 0 and 1 are reserved entries of the FAT.
FIRST_CLUSTER = 2
#: Entry values at or above these end a chain (EOC); the one below is the bad cluster mark.
END_OF_CHAIN = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}
#: The bad cluster mark, just below the EOC marks: a chain that reaches it is broken.
BAD_CLUSTER = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}
#: FAT32's cluster numbers stop below the bad cluster mark (FAT12/16 stop below 4085 and 65525).
MAX_FAT32_CLUSTERS = BAD_CLUSTER[32] - FIRST_CLUSTER
#: FAT32 entries are 28 bits: "the high 4 bits of a FAT32 FAT entry are reserved".
FAT32_MASK = 0x0FFFFFFF
FAT16_MASK = 0xFFFF
FAT12_MASK = 0xFFF
#: FAT16 and FAT32 entries are decoded a window at a time (see `FatFilesystem._window`) into an
#: array of the C type of their size, raw: a FAT32 entry is masked when it is read, and an entry
#: whose reserved bits are set breaks a run where it is (FAT12's 12-bit entries are read one by one).
ENTRY_TYPES = {bits: next(code for code in "HIL" if array(code).itemsize == bits // 8) for bits in (16, 32)}
#: FAT sectors kept read (FAT12): 64 sectors of 512 bytes cover the FAT of any FAT12 volume.
FAT_CACHE_SECTORS = 64
#: FAT16/FAT32 windows kept decoded: at most a block of the disk's cache each (4 KiB, 2048 FAT16
#: or 1024 FAT32 entries), so 16 cover the chains of an ESP's files in 64 KiB of memory.
FAT_CACHE_WINDOWS = 16
#: Cluster chains kept (their runs), by first cluster: the files and directories of one walk.
CHAIN_CACHE_SIZE = 64
#: The longest chain walked: a file of 2^20 clusters (512 MiB with 512-byte clusters, 32 GiB with
#: 32 KiB ones) is past any file the guest pass reads, and it bounds the memory of loop detection.
MAX_CHAIN_CLUSTERS = 1 << 20
#: Loop detection keeps the clusters a chain has walked as intervals, sorted within buckets of this
#: many cluster numbers: a check is a bisect in the buckets a run spans, and adding a run moves at
#: most one bucket's intervals. (One sorted list would move all of them each time a hostile chain
#: jumps below the clusters it holds: quadratic, a minute for 2^19 runs, where this stays
#: O(n log n); a set of clusters would cost an entry per cluster of a contiguous file.)
HELD_BUCKET = 256

# --- FAT Directory Structure, FAT Long Directory Entries -------------------------------------------


class DirectoryEntry(LittleEndianStructure):
    """A 32-byte directory entry ("FAT 32 Byte Directory Entry Structure")."""

    DIR_Name: bytes = chars(11)
    DIR_Attr: int = u8()
    DIR_NTRes: int = u8()
    DIR_CrtTimeTenth: int = u8()
    DIR_CrtTime: int = u16()
    DIR_CrtDate: int = u16()
    DIR_LstAccDate: int = u16()
    DIR_FstClusHI: int = u16()
    DIR_WrtTime: int = u16()
    DIR_WrtDate: int = u16()
    DIR_FstClusLO: int = u16()
    DIR_FileSize: int = u32()


class LongDirectoryEntry(LittleEndianStructure):
    """A long name entry ("FAT Long Directory Entries"): 13 UCS-2 characters of the name."""

    LDIR_Ord: int = u8()
    LDIR_Name1: bytes = chars(10)
    LDIR_Attr: int = u8()
    LDIR_Type: int = u8()
    LDIR_Chksum: int = u8()
    LDIR_Name2: bytes = chars(12)
    LDIR_FstClusLO: int = u16()
    LDIR_Name3: bytes = chars(4)


ENTRY_SIZE = DirectoryEntry.SIZE
ATTR_READ_ONLY = 0x01
ATTR_HIDDEN = 0x02
ATTR_SYSTEM = 0x04
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
#: A long name entry's attributes; the mask ignores the archive bit and the two reserved ones.
ATTR_LONG_NAME = ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_VOLUME_ID
ATTR_LONG_NAME_MASK = 0x3F
#: DIR_Name[0]: 0x00 ends the directory, 0xE5 marks a free entry, 0x05 stands for a name that
#: starts with the byte 0xE5 (a KANJI lead byte).
END_OF_DIRECTORY = 0x00
FREE_ENTRY = 0xE5
KANJI_E5 = 0x05
#: LDIR_Ord: the last long entry (the first one stored) has bit 6 set; the order is bits 0-5.
LAST_LONG_ENTRY = 0x40
LONG_ORDER_MASK = 0x3F
#: A long name is at most 255 characters, 13 per entry: 20 entries.
MAX_LONG_ENTRIES = 20
LONG_NAME_CHARS = 13
#: DIR_NTRes bits (Windows NT, Linux's vfat): the base name, the extension, is all lowercase.
NTRES_LOWER_BASE_BIT = 3
NTRES_LOWER_EXT_BIT = 4
NTRES_LOWER_BASE = 1 << NTRES_LOWER_BASE_BIT
NTRES_LOWER_EXT = 1 << NTRES_LOWER_EXT_BIT
#: Short names are in an OEM code page; 437 is Linux's default (codepage=437).
OEM_CODE_PAGE = "cp437"
#: "A directory may not grow larger than 65,536 32-byte directory entries" (2 MiB).
MAX_DIRECTORY_ENTRIES = 65536
#: A directory is read this many bytes at a time, so that a lookup stops where its name is.
DIRECTORY_CHUNK = 4096
DOT_NAMES = frozenset({".", ".."})


@dataclass(frozen=True, slots=True)
class Geometry:
    """Where everything is, in bytes, derived from the BPB once."""

    bits: int
    sector_size: int
    cluster_size: int
    #: Data clusters: valid cluster numbers are FIRST_CLUSTER .. FIRST_CLUSTER + clusters - 1.
    clusters: int
    fat_offset: int
    #: The bytes of one FAT.
    fat_size: int
    root_offset: int
    root_entries: int
    data_offset: int
    root_cluster: int


def probe(disk: Disk) -> bool:
    """A FAT boot sector, by libblkid's checks: a jump, the signature or a FAT type string, then a
    BPB whose numbers are possible."""
    if disk.size < BOOT_SECTOR_SIZE:
        return False
    sector = disk.read(0, BOOT_SECTOR_SIZE, "FAT boot sector")
    return _geometry(sector) is not None


def _geometry(sector: bytes) -> Geometry | None:
    bpb = BiosParameterBlock.unpack(sector)
    named = Fat16Extension.unpack(sector).BS_FilSysType.startswith(FILESYSTEM_TYPES) or (
        Fat32Extension.unpack(sector).BS_FilSysType.startswith(FILESYSTEM_TYPES)
    )
    # libblkid: without a type string, a jump alone is not enough; the signature must be there.
    if not named and sector[SIGNATURE_OFFSET : SIGNATURE_OFFSET + len(SIGNATURE)] != SIGNATURE:
        return None
    per_cluster = bpb.BPB_SecPerClus
    if (
        bpb.BPB_NumFATs == 0
        or bpb.BPB_RsvdSecCnt == 0
        or not (bpb.BPB_Media == MEDIA_FLOPPY or bpb.BPB_Media >= MEDIA_FIXED_MIN)
        or per_cluster == 0
        or per_cluster > MAX_SECTORS_PER_CLUSTER
        or per_cluster & (per_cluster - 1)
        or bpb.BPB_BytsPerSec not in SECTOR_SIZES
    ):
        return None
    fat32 = Fat32Extension.unpack(sector)
    fat_sectors = bpb.BPB_FATSz16 or fat32.BPB_FATSz32
    total = bpb.BPB_TotSec16 or bpb.BPB_TotSec32
    root_sectors = (bpb.BPB_RootEntCnt * ENTRY_SIZE + bpb.BPB_BytsPerSec - 1) // bpb.BPB_BytsPerSec
    first_data = bpb.BPB_RsvdSecCnt + bpb.BPB_NumFATs * fat_sectors + root_sectors
    if fat_sectors == 0 or total <= first_data:
        return None
    clusters = (total - first_data) // per_cluster
    if bpb.BPB_FATSz16 == 0:
        bits = 32
        if clusters > MAX_FAT32_CLUSTERS:
            return None
    else:
        bits = 12 if clusters < FAT12_CLUSTERS else 16
        if clusters >= FAT16_CLUSTERS:
            return None
    # The FAT must hold an entry for every cluster, or the count is a lie.
    if fat_sectors * bpb.BPB_BytsPerSec * 8 // bits < clusters + FIRST_CLUSTER:
        return None
    active = 0
    if bits == 32 and fat32.BPB_ExtFlags & EXT_FLAGS_SINGLE_FAT:
        active = min(fat32.BPB_ExtFlags & EXT_FLAGS_ACTIVE_FAT_MASK, bpb.BPB_NumFATs - 1)
    size = bpb.BPB_BytsPerSec
    return Geometry(
        bits=bits,
        sector_size=size,
        cluster_size=per_cluster * size,
        clusters=clusters,
        fat_offset=(bpb.BPB_RsvdSecCnt + active * fat_sectors) * size,
        fat_size=fat_sectors * size,
        root_offset=(bpb.BPB_RsvdSecCnt + bpb.BPB_NumFATs * fat_sectors) * size,
        root_entries=bpb.BPB_RootEntCnt if bits != 32 else 0,
        data_offset=first_data * size,
        root_cluster=fat32.BPB_RootClus if bits == 32 else 0,
    )


#: A cluster chain's contiguous runs: (first cluster, count).
Runs = list[tuple[int, int]]


class _Held:
    """The clusters of a chain walked so far (see HELD_BUCKET): disjoint intervals [start, end),
    each kept, clipped, in every bucket it spans, sorted by start."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[int, list[tuple[int, int]]] = {}

    def first(self, start: int, end: int) -> int | None:
        """The lowest cluster of [start, end) already held, or None."""
        bucket = start // HELD_BUCKET
        while bucket * HELD_BUCKET < end:
            intervals = self._buckets.get(bucket)
            if intervals:
                # Only the first bucket can hold an interval from below `start`.
                at = bisect_right(intervals, start, key=_START)
                if at and intervals[at - 1][1] > start:
                    return start
                if at < len(intervals) and intervals[at][0] < end:
                    return intervals[at][0]
            bucket += 1
        return None

    def add(self, start: int, end: int) -> None:
        """Hold [start, end) (none of it held yet)."""
        while start < end:
            bucket = start // HELD_BUCKET
            stop = min(end, (bucket + 1) * HELD_BUCKET)
            insort(self._buckets.setdefault(bucket, []), (start, stop))
            start = stop


_START = itemgetter(0)


@dataclass(slots=True)
class _Chain:
    """A cluster chain as far as it was walked: contiguous runs (first cluster, count) in chain
    order, and the same clusters held for loop detection."""

    runs: Runs = field(default_factory=list)
    held: _Held = field(default_factory=_Held)
    length: int = 0
    ended: bool = False


#: The node id of a FAT12/16 root directory (the fixed region): cluster 0, as ".." entries name it.
ROOT_REGION = 0


class FatFilesystem:
    """An opened FAT volume (see the module docstring)."""

    name = NAME
    case_sensitive = False

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        sector = disk.read(0, BOOT_SECTOR_SIZE, "FAT boot sector")
        geometry = _geometry(sector)
        if geometry is None:
            raise CorruptFilesystem(NAME, "the boot sector is not a FAT boot sector")
        self.geometry = geometry
        self._fat_sectors: Lru[int, bytes] = Lru(FAT_CACHE_SECTORS)
        self._fat_windows: Lru[int, _Window] = Lru(FAT_CACHE_WINDOWS)
        self._recent: _Window | None = None  # the window last used: a chain walks within one
        self._per_sector = geometry.sector_size * 8 // geometry.bits
        self._mask = FAT32_MASK if geometry.bits == 32 else FAT16_MASK
        self._chains: Lru[int, _Chain] = Lru(CHAIN_CACHE_SIZE)
        self._directories: Lru[Hashable, DirectoryIndex[str, DirectoryEntry]] = Lru(MAX_INDEXED_DIRECTORIES)
        if geometry.bits == 32:
            self._check_cluster(geometry.root_cluster, "the root directory (BPB_RootClus)")
            extension: Fat16Extension | Fat32Extension = Fat32Extension.unpack(sector)
        else:
            extension = Fat16Extension.unpack(sector)
        self.uuid: str | None = f"{extension.BS_VolID >> 16:04X}-{extension.BS_VolID & 0xFFFF:04X}"
        label = self._volume_label()
        if label is None or label == NO_NAME:
            label = extension.BS_VolLab
        self.label = _label(label)

    # --- the Filesystem contract ---

    def root(self) -> Node:
        if self.geometry.bits == 32:
            return Node(self.geometry.root_cluster, Kind.DIRECTORY, 0)
        return Node(ROOT_REGION, Kind.DIRECTORY, 0)

    def lookup(self, directory: Node, name: str) -> Node | None:
        index = self._directories.get_or_make(
            directory.id, lambda: DirectoryIndex(lambda: self._names(directory))
        )
        entry = index.find(name.casefold())
        return None if entry is None else self._node(entry)

    def read(self, node: Node, offset: int, length: int) -> bytes:
        end = min(node.size, offset + length)
        if offset < 0 or offset >= end:
            return b""
        if not isinstance(node.id, int):
            raise TypeError(f"not a FAT node: {node!r}")
        size = self.geometry.cluster_size
        first_index, last_index = offset // size, (end - 1) // size
        runs = self._runs(node.id, last_index + 1, f"the file at cluster {node.id}")
        if sum(count for _, count in runs) <= last_index:
            raise CorruptFilesystem(
                NAME,
                f"the cluster chain of the file at cluster {node.id} ends before its size ({node.size} bytes)",
            )
        parts: list[bytes] = []
        index = 0
        for cluster, count in runs:
            if index + count > first_index and index <= last_index:
                start = max(index, first_index)
                stop = min(index + count, last_index + 1)
                parts.append(
                    self.disk.read(
                        self._cluster_offset(cluster + start - index),
                        (stop - start) * size,
                        f"FAT data clusters of the file at cluster {node.id}",
                    )
                )
            index += count
        data = b"".join(parts)
        skip = offset - first_index * size
        return data[skip : skip + end - offset]

    def readlink(self, node: Node) -> str:
        raise UsageError("FAT has no symbolic links")

    def list(self, directory: Node, limit: int) -> list[str]:
        names: list[str] = []
        for long_name, short_name, _ in self._entries(directory):
            if len(names) >= limit:
                break
            names.append(long_name or short_name)
        return names

    # --- directories ---

    def _node(self, entry: DirectoryEntry) -> Node:
        cluster = (
            entry.DIR_FstClusHI << 16 | entry.DIR_FstClusLO
            if self.geometry.bits == 32
            else entry.DIR_FstClusLO
        )
        if entry.DIR_Attr & ATTR_DIRECTORY:
            if cluster == ROOT_REGION and self.geometry.bits == 32:
                cluster = self.geometry.root_cluster
            return Node(cluster, Kind.DIRECTORY, 0)
        return Node(cluster, Kind.FILE, entry.DIR_FileSize)

    def _entries(self, directory: Node) -> Iterator[tuple[str | None, str, DirectoryEntry]]:
        """(long name or None, short name, entry) of each file and directory, "." and ".." left out."""
        pending: dict[int, bytes] = {}
        expected = 0
        checksum = -1
        for raw in self._raw_entries(directory):
            first = raw[0]
            if first == END_OF_DIRECTORY:
                return
            if first == FREE_ENTRY:
                pending, expected = {}, 0
                continue
            entry = DirectoryEntry.unpack(raw)
            if entry.DIR_Attr & ATTR_LONG_NAME_MASK == ATTR_LONG_NAME:
                long_entry = LongDirectoryEntry.unpack(raw)
                order = long_entry.LDIR_Ord & LONG_ORDER_MASK
                if long_entry.LDIR_Ord & LAST_LONG_ENTRY and 1 <= order <= MAX_LONG_ENTRIES:
                    pending, checksum = {}, long_entry.LDIR_Chksum
                elif order != expected - 1 or long_entry.LDIR_Chksum != checksum:
                    pending, expected = {}, 0
                    continue
                pending[order] = long_entry.LDIR_Name1 + long_entry.LDIR_Name2 + long_entry.LDIR_Name3
                expected = order
                continue
            long_name = None
            if pending and expected == 1 and _checksum(entry.DIR_Name) == checksum:
                long_name = _long_name(pending)
            pending, expected = {}, 0
            if entry.DIR_Attr & ATTR_VOLUME_ID:
                continue
            short_name = _short_name(entry)
            if short_name in DOT_NAMES:
                continue
            yield long_name, short_name, entry

    def _names(self, directory: Node) -> Iterator[tuple[str, DirectoryEntry]]:
        """Each entry under its long name (when it has one) and its short name, casefolded: names
        compare without case."""
        for long_name, short_name, entry in self._entries(directory):
            if long_name:
                yield long_name.casefold(), entry
            yield short_name.casefold(), entry

    def _raw_entries(self, directory: Node) -> Iterator[bytes]:
        """Each 32-byte entry of a directory, read DIRECTORY_CHUNK bytes at a time."""
        if not isinstance(directory.id, int):
            raise TypeError(f"not a FAT node: {directory!r}")
        if directory.id == ROOT_REGION and self.geometry.bits != 32:
            spans = [(self.geometry.root_offset, self.geometry.root_entries * ENTRY_SIZE)]
        else:
            cap = MAX_DIRECTORY_ENTRIES * ENTRY_SIZE // self.geometry.cluster_size
            runs = self._runs(directory.id, cap, f"the directory at cluster {directory.id}")
            spans = [(self._cluster_offset(c), n * self.geometry.cluster_size) for c, n in runs]
        what = f"FAT directory at cluster {directory.id}"
        for start, size in spans:
            for at in range(start, start + size, DIRECTORY_CHUNK):
                chunk = self.disk.read(at, min(DIRECTORY_CHUNK, start + size - at), what)
                for entry in range(0, len(chunk) - ENTRY_SIZE + 1, ENTRY_SIZE):
                    yield chunk[entry : entry + ENTRY_SIZE]

    def _volume_label(self) -> bytes | None:
        """The root directory's volume label entry, as libblkid finds it (the first entry with the
        volume bit and not the directory bit, not a long name entry, before the end marker)."""
        for raw in self._raw_entries(self.root()):
            if raw[0] == END_OF_DIRECTORY:
                return None
            entry = DirectoryEntry.unpack(raw)
            if (
                raw[0] == FREE_ENTRY
                or entry.DIR_FstClusHI
                or entry.DIR_FstClusLO
                or entry.DIR_Attr & ATTR_LONG_NAME_MASK == ATTR_LONG_NAME
            ):
                continue
            if entry.DIR_Attr & (ATTR_VOLUME_ID | ATTR_DIRECTORY) == ATTR_VOLUME_ID:
                return entry.DIR_Name
        return None

    # --- clusters and the FAT ---

    def _cluster_offset(self, cluster: int) -> int:
        return self.geometry.data_offset + (cluster - FIRST_CLUSTER) * self.geometry.cluster_size

    def _check_cluster(self, cluster: int, what: str) -> None:
        if not FIRST_CLUSTER <= cluster < FIRST_CLUSTER + self.geometry.clusters:
            raise CorruptFilesystem(
                NAME,
                f"{what} names cluster {cluster}, outside the volume's clusters "
                f"{FIRST_CLUSTER}..{FIRST_CLUSTER + self.geometry.clusters - 1}",
            )

    def _runs(self, first: int, wanted: int, what: str) -> Runs:
        """The runs of the chain from `first`, walked until it covers `wanted` clusters or ends."""
        if first == 0:
            return []  # an empty file has no cluster
        chain = self._chains.get_or_make(first, _Chain)
        wanted = min(wanted, self.geometry.clusters, MAX_CHAIN_CLUSTERS)
        last_cluster = FIRST_CLUSTER + self.geometry.clusters - 1
        end_of_chain = END_OF_CHAIN[self.geometry.bits]
        cluster = first if not chain.runs else self._entry(_last(chain.runs))
        while not chain.ended and chain.length < wanted:
            if chain.runs and cluster >= end_of_chain:
                chain.ended = True
                break
            self._check_cluster(cluster, what)
            # The run from `cluster`: the clusters that follow it one by one, within the volume
            # (the cluster past it is checked as the next jump) and within what is wanted.
            following, after = self._following(
                cluster, min(wanted - chain.length - 1, last_cluster - cluster)
            )
            count = 1 + following
            again = chain.held.first(cluster, cluster + count)
            if again is not None:
                if again > cluster:  # the clusters before the one that comes back are the chain's
                    _extend(chain, cluster, again - cluster)
                raise LoopDetected(f"the FAT cluster chain of {what} (cluster {again} comes back)")
            _extend(chain, cluster, count)
            if chain.length < wanted:
                cluster = self._entry(cluster + count - 1) if after is None else after
        return list(chain.runs)

    def _following(self, cluster: int, limit: int) -> tuple[int, int | None]:
        """How many clusters (at most `limit`) follow `cluster` one by one in its chain (the m for
        which the FAT entries of cluster .. cluster+m-1 are cluster+1 .. cluster+m), and the FAT
        entry of cluster+m when it was read (m < limit): where the chain goes after the run."""
        count = 0
        if self.geometry.bits == 12:
            while count < limit:
                after = self._entry(cluster + count)
                if after != cluster + count + 1:
                    return count, after
                count += 1
            return count, None
        while count < limit:
            at = cluster + count
            window = self._window(at)
            within = at - window.first
            span = min(limit - count, len(window.entries) - within)
            found = window.following(within, span)
            count += found
            if found < span:
                return count, window.entries[within + found] & self._mask
        return count, None

    def _entry(self, cluster: int) -> int:
        """The FAT entry of `cluster` (a valid cluster number): the next cluster, or an EOC mark."""
        bits = self.geometry.bits
        if bits != 12:
            window = self._window(cluster)
            return window.entries[cluster - window.first] & self._mask
        at = cluster * bits // 8  # FAT12: N + N/2 bytes
        sector_size = self.geometry.sector_size
        index = at // sector_size
        data = self._fat_sector(index)
        if at % sector_size + 2 > sector_size:
            data += self._fat_sector(index + 1)  # a FAT12 entry may straddle two sectors
        within = at % sector_size
        pair = int.from_bytes(data[within : within + 2], "little")
        return (pair >> 4 if cluster & 1 else pair) & FAT12_MASK

    def _fat_sector(self, index: int) -> bytes:
        size = self.geometry.sector_size
        offset = self.geometry.fat_offset + index * size
        return self._fat_sectors.get_or_make(index, lambda: self.disk.read(offset, size, "FAT sector"))

    def _window(self, cluster: int) -> _Window:
        """The decoded FAT16/FAT32 window holding the entry of `cluster`. A window is the FAT's
        sectors that lie in the disk cache's block holding the entry's sector (reading one of them
        reads them all: a window costs the reads and bytes its sector alone would), or that sector
        alone when it straddles two blocks."""
        recent = self._recent
        if recent is not None and 0 <= cluster - recent.first < len(recent.entries):
            return recent
        size = self.geometry.sector_size
        index = cluster // self._per_sector
        low, high = self.disk.block_span(self.geometry.fat_offset + index * size)
        first = max(0, -(-(low - self.geometry.fat_offset) // size))
        end = min(self.geometry.fat_size // size, (high - self.geometry.fat_offset) // size)
        if not first <= index < end:
            first, end = index, index + 1
        self._recent = self._fat_windows.get_or_make(first, lambda: self._decode(first, end))
        return self._recent

    def _decode(self, first: int, end: int) -> _Window:
        """FAT sectors first..end-1, decoded."""
        size = self.geometry.sector_size
        data = self.disk.read(self.geometry.fat_offset + first * size, (end - first) * size, "FAT sector")
        entries = array(ENTRY_TYPES[self.geometry.bits])
        entries.frombytes(data)
        if sys.byteorder != "little":
            entries.byteswap()
        first_cluster = first * self._per_sector
        ones, steps = _ramp(self.geometry.bits, len(entries))
        ramp = (first_cluster + 1) * ones + steps
        return _Window(first_cluster, self.geometry.bits, entries, int.from_bytes(data, "little") ^ ramp)


@functools.cache
def _ramp(width: int, count: int) -> tuple[int, int]:
    """`count` fields of `width` bits packed in one integer (field i at bit i * width), all ones
    (sum of x^i, x = 2^width) and counting up from 0 (sum of i * x^i): b * ones + steps packs
    b, b+1, ..., b+count-1 (no field overflows: cluster numbers fit their entries)."""
    x = 1 << width
    ones = (x**count - 1) // (x - 1)
    steps = (x - count * x**count + (count - 1) * x ** (count + 1)) // (x - 1) ** 2
    return ones, steps


@dataclass(frozen=True, slots=True)
class _Window:
    """Decoded FAT16/FAT32 entries: `entries[i]` is the entry of cluster `first + i`, raw, and
    `breaks` is the window's entries XOR first+1, first+2, ... as one integer (`width` bits each):
    an entry's bits there are all zero when the next cluster follows it in its chain, so where a
    run stops is the lowest bit set from its start, found in C however long the run."""

    first: int
    width: int
    entries: array[int]
    breaks: int

    def following(self, start: int, span: int) -> int:
        """The longest m <= `span` for which the entries from `start` are a run (entry i holds
        first + i + 1)."""
        if not span or self.entries[start] != self.first + start + 1:
            return 0  # a jump (or an end), the common case of a fragmented chain
        rest = self.breaks >> (start * self.width)
        if not rest:
            return span
        return min(span, ((rest & -rest).bit_length() - 1) // self.width)


def _extend(chain: _Chain, cluster: int, count: int) -> None:
    """Add the `count` clusters from `cluster` to `chain` (none of them in it yet)."""
    chain.held.add(cluster, cluster + count)
    if chain.runs and _last(chain.runs) + 1 == cluster:
        start, before = chain.runs[-1]
        chain.runs[-1] = (start, before + count)
    else:
        chain.runs.append((cluster, count))
    chain.length += count


def _last(runs: Runs) -> int:
    start, count = runs[-1]
    return start + count - 1


def _checksum(short_name: bytes) -> int:
    """The long entries' checksum of their short name ("ChkSum" in the spec)."""
    total = 0
    for byte in short_name:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _long_name(parts: dict[int, bytes]) -> str:
    raw = b"".join(parts[order] for order in sorted(parts))
    name = raw.decode("utf-16-le", errors="replace")
    return name.split("\0", 1)[0]


def _short_name(entry: DirectoryEntry) -> str:
    raw = entry.DIR_Name
    if raw[0] == KANJI_E5:
        raw = bytes([FREE_ENTRY]) + raw[1:]
    base = raw[:8].decode(OEM_CODE_PAGE).rstrip(" ")
    extension = raw[8:].decode(OEM_CODE_PAGE).rstrip(" ")
    if entry.DIR_NTRes & NTRES_LOWER_BASE:
        base = base.lower()
    if entry.DIR_NTRes & NTRES_LOWER_EXT:
        extension = extension.lower()
    return f"{base}.{extension}" if extension else base


def _label(raw: bytes | None) -> str | None:
    if raw is None or raw == NO_NAME:
        return None
    return raw.decode(OEM_CODE_PAGE).rstrip(" ") or None


def open_fat(disk: Disk) -> FatFilesystem:
    return FatFilesystem(disk)


FILESYSTEM = FilesystemType(name=NAME, probe=probe, open=open_fat)
