"""XFS, version 4 and version 5 (CRC): the superblock, inodes, data fork extents and their
B+trees, the four forms of directories, and symbolic links.

Spec: "XFS Algorithms & Data Structures" (the kernel's Documentation/filesystems/xfs/ and
xfs-documentation's design/XFS_Filesystem_Structure), sections "Superblocks", "On-disk Inode",
"Data Extents", "B+tree Extent List", "Directories" and "Symbolic Links"; the structures keep the
names of libxfs's xfs_format.h and xfs_da_format.h, and the limits are libxfs's, named after them.

What is trusted: nothing. Inode numbers, extents and B+tree pointers are checked against the
superblock's geometry before anything is read; a B+tree is walked down by the file offsets a read
needs, each block at the level its parent promised (so a block pointing at itself or above ends
the walk), at most `MAX_BMBT_BLOCKS` blocks per walk. Directories are read as their data blocks
(below `XFS_DIR2_LEAF_OFFSET`), entry by entry, skipping unused space: the hash index in the leaf
blocks is never used, so a lookup is correct whatever a hostile leaf says, and a lookup stops at
the first match. Only the data device is read: a realtime file's data is named as not read.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from introspect.decode import MIB, c_string, uuid_be
from introspect.errors import BudgetExceeded, ImageError
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
from introspect.structure import BigEndianStructure, chars, pad, u8, u16, u32, u64, unpack_array

NAME = "xfs"

# --- Superblock (spec "Superblocks": struct xfs_dsb, at byte 0 of allocation group 0) -----------

XFS_SB_MAGIC = b"XFSB"


class XfsDsb(BigEndianStructure):
    """The superblock, through the version 5 fields (zero on a version 4 filesystem)."""

    OFFSET: ClassVar[int] = 0

    sb_magicnum: bytes = chars(4)
    sb_blocksize: int = u32()
    sb_dblocks: int = u64()
    sb_rblocks: int = u64()
    sb_rextents: int = u64()
    sb_uuid: bytes = chars(16)
    sb_logstart: int = u64()
    sb_rootino: int = u64()
    sb_rbmino: int = u64()
    sb_rsumino: int = u64()
    sb_rextsize: int = u32()
    sb_agblocks: int = u32()
    sb_agcount: int = u32()
    sb_rbmblocks: int = u32()
    sb_logblocks: int = u32()
    sb_versionnum: int = u16()
    sb_sectsize: int = u16()
    sb_inodesize: int = u16()
    sb_inopblock: int = u16()
    sb_fname: bytes = chars(12)
    sb_blocklog: int = u8()
    sb_sectlog: int = u8()
    sb_inodelog: int = u8()
    sb_inopblog: int = u8()
    sb_agblklog: int = u8()
    sb_rextslog: int = u8()
    sb_inprogress: int = u8()
    sb_imax_pct: int = u8()
    sb_icount: int = u64()
    sb_ifree: int = u64()
    sb_fdblocks: int = u64()
    sb_frextents: int = u64()
    sb_uquotino: int = u64()
    sb_gquotino: int = u64()
    sb_qflags: int = u16()
    sb_flags: int = u8()
    sb_shared_vn: int = u8()
    sb_inoalignmt: int = u32()
    sb_unit: int = u32()
    sb_width: int = u32()
    sb_dirblklog: int = u8()
    sb_logsectlog: int = u8()
    sb_logsectsize: int = u16()
    sb_logsunit: int = u32()
    sb_features2: int = u32()
    sb_bad_features2: int = u32()
    # version 5
    sb_features_compat: int = u32()
    sb_features_ro_compat: int = u32()
    sb_features_incompat: int = u32()
    sb_features_log_incompat: int = u32()
    sb_crc: int = u32()
    sb_spino_align: int = u32()
    sb_pquotino: int = u64()
    sb_lsn: int = u64()
    sb_meta_uuid: bytes = chars(16)


#: sb_versionnum: the version in its low bits (XFS_SB_VERSION_NUMBITS), feature bits above.
XFS_SB_VERSION_NUMBITS = 0x000F
XFS_SB_VERSION_4 = 4
XFS_SB_VERSION_5 = 5
XFS_SB_VERSION_DIRV2_BIT = 13
XFS_SB_VERSION_MOREBITS_BIT = 15
XFS_SB_VERSION_DIRV2BIT = 1 << XFS_SB_VERSION_DIRV2_BIT
XFS_SB_VERSION_MOREBITSBIT = 1 << XFS_SB_VERSION_MOREBITS_BIT
#: sb_features2 (version 4, with MOREBITSBIT): directory entries record the file type.
XFS_SB_VERSION2_FTYPE_BIT = 9
XFS_SB_VERSION2_FTYPE = 1 << XFS_SB_VERSION2_FTYPE_BIT
#: sb_features_incompat bit numbers (version 5), every one libxfs defines (XFS_SB_FEAT_INCOMPAT_ALL).
#: None changes how the data device's files and directories are read except FTYPE (a byte in each
#: directory entry) and NREXT64 (the extent counters, flagged per inode by XFS_DIFLAG2_NREXT64);
#: a bit outside them is a layout this reader does not know, as the kernel refuses to mount it.
XFS_SB_FEAT_INCOMPAT_NAMES = {
    0: "ftype",
    1: "spinodes",
    2: "meta_uuid",
    3: "bigtime",
    4: "needsrepair",
    5: "nrext64",
    6: "exchrange",
    7: "parent",
    8: "metadir",
    9: "zoned",
    10: "zone_gaps",
}
XFS_SB_FEAT_INCOMPAT_FTYPE_BIT = 0
XFS_SB_FEAT_INCOMPAT_FTYPE = 1 << XFS_SB_FEAT_INCOMPAT_FTYPE_BIT
XFS_SB_FEAT_INCOMPAT_ALL = sum(1 << bit for bit in XFS_SB_FEAT_INCOMPAT_NAMES)

#: XFS_MIN_BLOCKSIZE_LOG and XFS_MAX_BLOCKSIZE_LOG: blocks (and directory blocks) of 512 B to 64 KiB.
XFS_MIN_BLOCKSIZE_LOG = 9
XFS_MAX_BLOCKSIZE_LOG = 16
#: XFS_DINODE_MIN_LOG and XFS_DINODE_MAX_LOG: inodes of 256 B to 2 KiB; version 5 needs 512 B.
XFS_DINODE_MIN_LOG = 8
XFS_DINODE_MAX_LOG = 11
XFS_DINODE_MIN_LOG_V5 = 9
#: An allocation group holds at most 2^31 blocks (XFS_MAX_AG_BLOCKS' log, XFS_MAX_DBLOCKS' reason).
XFS_MAX_AGBLKLOG = 31

# --- Inodes (spec "On-disk Inode": struct xfs_dinode) -------------------------------------------

XFS_DINODE_MAGIC = 0x494E  # "IN"


class XfsDinode(BigEndianStructure):
    """The inode core in its version 3 layout; versions 1 and 2 end at di_crc (`V2_CORE_SIZE`).
    Two fields are unions in the spec and are named by their NREXT64 meaning: `di_big_nextents`
    (di_v2_pad and di_flushiter otherwise) and `di_nextents`/`di_anextents` (di_big_anextents and
    di_nrext64_pad with NREXT64, which moves the data fork's count to `di_big_nextents`)."""

    di_magic: int = u16()
    di_mode: int = u16()
    di_version: int = u8()
    di_format: int = u8()
    di_onlink: int = u16()
    di_uid: int = u32()
    di_gid: int = u32()
    di_nlink: int = u32()
    di_projid_lo: int = u16()
    di_projid_hi: int = u16()
    di_big_nextents: int = u64()
    di_atime: int = u64()
    di_mtime: int = u64()
    di_ctime: int = u64()
    di_size: int = u64()
    di_nblocks: int = u64()
    di_extsize: int = u32()
    di_nextents: int = u32()
    di_anextents: int = u16()
    di_forkoff: int = u8()
    di_aformat: int = u8()
    di_dmevmask: int = u32()
    di_dmstate: int = u16()
    di_flags: int = u16()
    di_gen: int = u32()
    di_next_unlinked: int = u32()
    # version 3
    di_crc: int = u32()
    di_changecount: int = u64()
    di_lsn: int = u64()
    di_flags2: int = u64()
    di_cowextsize: int = u32()
    di_pad2: None = pad(12)
    di_crtime: int = u64()
    di_ino: int = u64()
    di_uuid: bytes = chars(16)


#: Where the literal area (the data fork, then the attribute fork) starts: xfs_dinode_size().
V2_CORE_SIZE = XfsDinode.offset_of("di_crc")
V3_CORE_SIZE = XfsDinode.SIZE
DINODE_VERSIONS = (1, 2, 3)
V3_INODE = 3
#: di_format (enum xfs_dinode_fmt).
XFS_DINODE_FMT_DEV = 0
XFS_DINODE_FMT_LOCAL = 1
XFS_DINODE_FMT_EXTENTS = 2
XFS_DINODE_FMT_BTREE = 3
#: di_forkoff counts 8-byte units (XFS_DFORK_BOFF: di_forkoff << 3).
FORKOFF_UNIT = 8
#: di_flags: the data lives on the realtime device (XFS_DIFLAG_REALTIME_BIT).
XFS_DIFLAG_REALTIME_BIT = 0
XFS_DIFLAG_REALTIME = 1 << XFS_DIFLAG_REALTIME_BIT
#: di_flags2: this inode's extent counters are the 64-bit ones (XFS_DIFLAG2_NREXT64_BIT).
XFS_DIFLAG2_NREXT64_BIT = 4
XFS_DIFLAG2_NREXT64 = 1 << XFS_DIFLAG2_NREXT64_BIT
#: di_mode's file type (S_IFMT) and the types read.
S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000
KINDS = {S_IFDIR: Kind.DIRECTORY, S_IFREG: Kind.FILE, S_IFLNK: Kind.SYMLINK}

# --- Data extents and their B+tree (spec "Data Extents", "B+tree Extent List") -----------------


class XfsBmbtRec(BigEndianStructure):
    """One extent, 128 bits packed: the unwritten flag (1 bit), startoff (54), startblock (52),
    blockcount (21), most significant first."""

    l0: int = u64()
    l1: int = u64()


BMBT_EXNTFLAG_SHIFT = 63
BMBT_STARTOFF_SHIFT = 9
BMBT_STARTOFF_BITS = 54
BMBT_STARTBLOCK_LOW_BITS = 43  # of startblock's 52 bits, those in l1
BMBT_STARTBLOCK_HIGH_MASK = (1 << 9) - 1  # ...and the 9 in l0
BMBT_BLOCKCOUNT_BITS = 21


class XfsBmdrBlock(BigEndianStructure):
    """The root of a data fork's B+tree, in the inode: keys (file offsets, 8 bytes each) and
    then, after room for as many keys as the fork holds, the child pointers (fsblocks, 8 bytes)."""

    bb_level: int = u16()
    bb_numrecs: int = u16()


class XfsBtreeLblock(BigEndianStructure):
    """A B+tree block of a version 4 filesystem (long pointers: struct xfs_btree_block)."""

    bb_magic: bytes = chars(4)
    bb_level: int = u16()
    bb_numrecs: int = u16()
    bb_leftsib: int = u64()
    bb_rightsib: int = u64()


class XfsBtreeLblockCrc(BigEndianStructure):
    """A B+tree block of a version 5 filesystem: the same, then where it is and whose it is."""

    bb_magic: bytes = chars(4)
    bb_level: int = u16()
    bb_numrecs: int = u16()
    bb_leftsib: int = u64()
    bb_rightsib: int = u64()
    bb_blkno: int = u64()
    bb_lsn: int = u64()
    bb_uuid: bytes = chars(16)
    bb_owner: int = u64()
    bb_crc: int = u32()
    bb_pad: int = u32()


XFS_BMAP_MAGIC = b"BMAP"
XFS_BMAP_CRC_MAGIC = b"BMA3"
#: A B+tree key and a pointer: 8 bytes each (xfs_bmbt_key, xfs_bmbt_ptr).
BMBT_KEY_SIZE = 8
BMBT_PTR_SIZE = 8
#: Levels of any XFS B+tree: libxfs's XFS_BTREE_MAXLEVELS was 9 for every tree it had.
XFS_BTREE_MAXLEVELS = 9
#: Blocks one walk of an extent tree visits: 4 MiB of 4 KiB blocks, the guest pass's whole byte
#: budget (a walk beyond it could not be paid for anyway).
MAX_BMBT_BLOCKS = 1024
#: Bytes are addressed in 512-byte basic blocks (daddr) in bb_blkno.
BBSIZE = 512

# --- Directories (spec "Directories"; xfs_da_format.h) ------------------------------------------

#: Where a directory's leaf (hash index) space starts: XFS_DIR2_LEAF_OFFSET, 32 GiB into it. Only
#: the data space below it holds entries.
XFS_DIR2_LEAF_OFFSET = 32 << 30
XFS_DIR2_BLOCK_MAGIC = b"XD2B"
XFS_DIR2_DATA_MAGIC = b"XD2D"
XFS_DIR3_BLOCK_MAGIC = b"XDB3"
XFS_DIR3_DATA_MAGIC = b"XDD3"
BLOCK_MAGICS = (XFS_DIR2_BLOCK_MAGIC, XFS_DIR3_BLOCK_MAGIC)
#: A directory's data blocks read for one lookup or listing, at most: the guest pass's whole byte
#: budget (4 MiB); a directory larger than that cannot be read within it anyway.
MAX_DIRECTORY_BYTES = 4 * MIB


class XfsDir2DataHdr(BigEndianStructure):
    """A version 4 directory data (or single-block) block's header."""

    magic: bytes = chars(4)
    bestfree: bytes = chars(12)


class XfsDir3DataHdr(BigEndianStructure):
    """A version 5 one: struct xfs_dir3_blk_hdr, then best_free and padding."""

    magic: bytes = chars(4)
    crc: int = u32()
    blkno: int = u64()
    lsn: int = u64()
    uuid: bytes = chars(16)
    owner: int = u64()
    best_free: bytes = chars(12)
    pad: int = u32()


class XfsDir2BlockTail(BigEndianStructure):
    """The last 8 bytes of a single-block directory: how many hash entries precede it."""

    count: int = u32()
    stale: int = u32()


class XfsDir2LeafEntry(BigEndianStructure):
    """One hash entry of a single-block directory (only its size is used: entries end before them)."""

    hashval: int = u32()
    address: int = u32()


class XfsDir2DataEntry(BigEndianStructure):
    """A directory entry's fixed start; then the name, the ftype byte (with FTYPE), padding to
    8 bytes, and a 2-byte tag."""

    inumber: int = u64()
    namelen: int = u8()


class XfsDir2DataUnused(BigEndianStructure):
    """Unused space in a data block: freetag 0xffff and its length."""

    freetag: int = u16()
    length: int = u16()


XFS_DIR2_DATA_FREE_TAG = 0xFFFF
XFS_DIR2_DATA_ALIGN = 8
XFS_DIR2_DATA_TAG_SIZE = 2
FTYPE_SIZE = 1


class XfsDir2SfHdr(BigEndianStructure):
    """A short-form directory (in the inode): entry count, how many need 8-byte inode numbers
    (all of them are then 8 bytes), then the parent's inode number."""

    count: int = u8()
    i8count: int = u8()


class XfsDir2SfEntry(BigEndianStructure):
    """A short-form entry's fixed start; then the name, the ftype byte, the inode number."""

    namelen: int = u8()
    offset: int = u16()


XFS_INO32_SIZE = 4
XFS_INO64_SIZE = 8

# --- Symbolic links (spec "Symbolic Links") -----------------------------------------------------


class XfsDsymlinkHdr(BigEndianStructure):
    """Each block of a version 5 remote symbolic link starts with this header."""

    sl_magic: bytes = chars(4)
    sl_offset: int = u32()
    sl_bytes: int = u32()
    sl_crc: int = u32()
    sl_uuid: bytes = chars(16)
    sl_owner: int = u64()
    sl_blkno: int = u64()
    sl_lsn: int = u64()


XFS_SYMLINK_MAGIC = b"XSLM"
#: XFS_SYMLINK_MAXLEN: a target is at most 1024 bytes.
XFS_SYMLINK_MAXLEN = 1024


@dataclass(frozen=True, slots=True)
class Extent:
    """One mapping of the data fork: `blockcount` blocks from file block `startoff` at filesystem
    block `startblock`; an unwritten extent reads as zeros."""

    startoff: int
    startblock: int
    blockcount: int
    unwritten: bool


@dataclass(frozen=True, slots=True)
class Inode:
    """An inode read and checked: its core, its kind and its data fork's bytes."""

    ino: int
    core: XfsDinode
    kind: Kind
    fork: bytes

    @property
    def nextents(self) -> int:
        """The data fork's extent count, from the counter this inode uses."""
        if self.core.di_version == V3_INODE and self.core.di_flags2 & XFS_DIFLAG2_NREXT64:
            return self.core.di_big_nextents
        return self.core.di_nextents


def _corrupt(message: str) -> CorruptFilesystem:
    return CorruptFilesystem(NAME, message)


def _extent(record: XfsBmbtRec) -> Extent:
    return Extent(
        startoff=(record.l0 >> BMBT_STARTOFF_SHIFT) & ((1 << BMBT_STARTOFF_BITS) - 1),
        startblock=((record.l0 & BMBT_STARTBLOCK_HIGH_MASK) << BMBT_STARTBLOCK_LOW_BITS)
        | (record.l1 >> BMBT_BLOCKCOUNT_BITS),
        blockcount=record.l1 & ((1 << BMBT_BLOCKCOUNT_BITS) - 1),
        unwritten=bool(record.l0 >> BMBT_EXNTFLAG_SHIFT),
    )


def _check_superblock(sb: XfsDsb) -> None:
    """The geometry every address is computed from, checked as xfs_validate_sb_common does."""
    version = sb.sb_versionnum & XFS_SB_VERSION_NUMBITS
    if version not in (XFS_SB_VERSION_4, XFS_SB_VERSION_5):
        raise _corrupt(f"superblock version {version} is not 4 or 5")
    if version == XFS_SB_VERSION_4 and not sb.sb_versionnum & XFS_SB_VERSION_DIRV2BIT:
        raise _corrupt("a version 4 superblock without version 2 directories (IRIX-era) is not read")
    if version == XFS_SB_VERSION_5 and (unknown := sb.sb_features_incompat & ~XFS_SB_FEAT_INCOMPAT_ALL):
        raise _corrupt(
            f"incompatible features {unknown:#x} unknown to this reader (as to the kernel that made it)"
        )
    if (
        not XFS_MIN_BLOCKSIZE_LOG <= sb.sb_blocklog <= XFS_MAX_BLOCKSIZE_LOG
        or sb.sb_blocksize != 1 << sb.sb_blocklog
    ):
        raise _corrupt(
            f"block size {sb.sb_blocksize} (log {sb.sb_blocklog}) is not a power of 2 from 512 to 64 KiB"
        )
    min_inodelog = XFS_DINODE_MIN_LOG_V5 if version == XFS_SB_VERSION_5 else XFS_DINODE_MIN_LOG
    if (
        not min_inodelog <= sb.sb_inodelog <= min(XFS_DINODE_MAX_LOG, sb.sb_blocklog)
        or sb.sb_inodesize != 1 << sb.sb_inodelog
        or sb.sb_inopblog != sb.sb_blocklog - sb.sb_inodelog
    ):
        raise _corrupt(
            f"inode size {sb.sb_inodesize} (log {sb.sb_inodelog}, {sb.sb_inopblog} per block log) is invalid"
        )
    if (
        not 0 < sb.sb_agblocks
        or sb.sb_agblklog > XFS_MAX_AGBLKLOG
        or sb.sb_agblklog != (sb.sb_agblocks - 1).bit_length()
        or sb.sb_agcount == 0
    ):
        raise _corrupt(
            f"allocation groups of {sb.sb_agblocks} blocks (log {sb.sb_agblklog}), {sb.sb_agcount} of them"
        )
    if sb.sb_blocklog + sb.sb_dirblklog > XFS_MAX_BLOCKSIZE_LOG:
        raise _corrupt(f"directory blocks of 2^{sb.sb_blocklog + sb.sb_dirblklog} bytes (at most 64 KiB)")


class Xfs:
    """An XFS filesystem opened on a volume (see the module docstring). Besides the contract:
    `v5` (a CRC filesystem), `has_ftype` (entries record their file's type), `blocksize` and
    `dir_blocks` (filesystem blocks per directory block). A node's id is its inode number."""

    name = NAME
    case_sensitive = True

    def __init__(self, disk: Disk, sb: XfsDsb) -> None:
        self.disk = disk
        self.sb = sb
        self.label = c_string(sb.sb_fname) or None
        self.uuid: str | None = uuid_be(sb.sb_uuid)
        self.v5 = sb.sb_versionnum & XFS_SB_VERSION_NUMBITS == XFS_SB_VERSION_5
        if self.v5:
            self.has_ftype = bool(sb.sb_features_incompat & XFS_SB_FEAT_INCOMPAT_FTYPE)
        else:
            self.has_ftype = bool(
                sb.sb_versionnum & XFS_SB_VERSION_MOREBITSBIT and sb.sb_features2 & XFS_SB_VERSION2_FTYPE
            )
        self.blocklog = sb.sb_blocklog
        self.blocksize = sb.sb_blocksize
        self.dir_blocks = 1 << sb.sb_dirblklog  # filesystem blocks per directory block
        self.core_size = V3_CORE_SIZE if self.v5 else V2_CORE_SIZE
        self._directories: Lru[int, DirectoryIndex[bytes, int]] = Lru(MAX_INDEXED_DIRECTORIES)

    # --- the Filesystem contract ---

    def root(self) -> Node:
        return self._node(self._inode(self.sb.sb_rootino))

    def lookup(self, directory: Node, name: str) -> Node | None:
        ino = _ino(directory)
        index = self._directories.get_or_make(
            ino, lambda: DirectoryIndex(lambda: self._entries(self._inode(ino)))
        )
        found = index.find(name.encode("utf-8", "surrogateescape"))
        return None if found is None else self._node(self._inode(found))

    def read(self, node: Node, offset: int, length: int) -> bytes:
        inode = self._inode(_ino(node))
        size = inode.core.di_size
        length = max(0, min(length, size - offset))
        if length == 0 or offset < 0:
            return b""
        if inode.core.di_format == XFS_DINODE_FMT_LOCAL:
            return inode.fork[offset : offset + length]
        if inode.core.di_flags & XFS_DIFLAG_REALTIME:
            from introspect.safety import GUEST_NOT_READ

            raise ImageError(
                GUEST_NOT_READ,
                f"xfs: inode {inode.ino} keeps its data on the realtime device, not on this volume",
            )
        first = offset >> self.blocklog
        last = (offset + length - 1) >> self.blocklog
        return self._gather(self._extents(inode, first, last), offset, length, f"xfs inode {inode.ino} data")

    def readlink(self, node: Node) -> str:
        inode = self._inode(_ino(node))
        size = inode.core.di_size
        if inode.kind != Kind.SYMLINK or not 0 < size <= XFS_SYMLINK_MAXLEN:
            raise _corrupt(f"inode {inode.ino} is not a symbolic link of 1 to {XFS_SYMLINK_MAXLEN} bytes")
        if inode.core.di_format == XFS_DINODE_FMT_LOCAL:
            target = inode.fork[:size]
        elif self.v5:
            target = self._remote_symlink(inode, size)
        else:
            target = self.read(node, 0, size)
        return target.decode("utf-8", "surrogateescape")

    def list(self, directory: Node, limit: int) -> list[str]:
        names: list[str] = []
        if limit <= 0:
            return names
        for entry, _ in self._entries(self._inode(_ino(directory))):
            if entry in (b".", b".."):
                continue
            names.append(entry.decode("utf-8", "replace"))
            if len(names) >= limit:
                break
        return names

    # --- inodes ---

    def _inode(self, ino: int) -> Inode:
        """Inode `ino`, read from where its number says (agno, agbno, offset) and checked."""
        sb = self.sb
        agino_bits = sb.sb_agblklog + sb.sb_inopblog
        agno = ino >> agino_bits
        agbno = (ino & ((1 << agino_bits) - 1)) >> sb.sb_inopblog
        index = ino & ((1 << sb.sb_inopblog) - 1)
        if ino == 0 or agno >= sb.sb_agcount or agbno >= sb.sb_agblocks:
            raise _corrupt(
                f"inode number {ino} is outside the filesystem's {sb.sb_agcount} allocation groups"
            )
        where = ((agno * sb.sb_agblocks + agbno) << self.blocklog) + (index << sb.sb_inodelog)
        raw = self.disk.read(where, sb.sb_inodesize, f"xfs inode {ino}")
        core = XfsDinode.unpack(raw, 0)
        if core.di_magic != XFS_DINODE_MAGIC or core.di_version not in DINODE_VERSIONS:
            raise _corrupt(f"inode {ino} has magic {core.di_magic:#x} and version {core.di_version}")
        if (core.di_version == V3_INODE) != self.v5:
            raise _corrupt(
                f"inode {ino} is version {core.di_version} on a version {5 if self.v5 else 4} filesystem"
            )
        if core.di_version == V3_INODE and core.di_ino != ino:
            raise _corrupt(f"inode {ino} says it is inode {core.di_ino}")
        literal = raw[self.core_size :]
        fork_size = core.di_forkoff * FORKOFF_UNIT if core.di_forkoff else len(literal)
        if fork_size > len(literal):
            raise _corrupt(f"inode {ino}'s attribute fork offset {core.di_forkoff} is past its end")
        kind = KINDS.get(core.di_mode & S_IFMT, Kind.OTHER)
        inode = Inode(ino, core, kind, literal[:fork_size])
        self._check_fork(inode)
        return inode

    def _check_fork(self, inode: Inode) -> None:
        """The data fork's format fits the file's kind and its counts fit the fork."""
        core = inode.core
        if inode.kind == Kind.OTHER:
            return
        allowed: tuple[int, ...] = (XFS_DINODE_FMT_EXTENTS, XFS_DINODE_FMT_BTREE)
        if inode.kind != Kind.FILE:
            allowed = (XFS_DINODE_FMT_LOCAL, *allowed)
        if core.di_format not in allowed:
            raise _corrupt(f"inode {inode.ino} ({inode.kind}) has data fork format {core.di_format}")
        if core.di_format == XFS_DINODE_FMT_LOCAL and core.di_size > len(inode.fork):
            raise _corrupt(f"inode {inode.ino} holds {core.di_size} bytes in a {len(inode.fork)}-byte fork")
        if core.di_format == XFS_DINODE_FMT_EXTENTS and inode.nextents > len(inode.fork) // XfsBmbtRec.SIZE:
            raise _corrupt(
                f"inode {inode.ino} counts {inode.nextents} extents; its fork holds "
                f"{len(inode.fork) // XfsBmbtRec.SIZE}"
            )

    def _node(self, inode: Inode) -> Node:
        return Node(inode.ino, inode.kind, inode.core.di_size)

    # --- extents ---

    def _extents(self, inode: Inode, first: int, last: int) -> builtins.list[Extent]:
        """The data fork's extents covering file blocks `first` to `last`, in file order."""
        if inode.core.di_format == XFS_DINODE_FMT_EXTENTS:
            records = unpack_array(XfsBmbtRec, inode.fork, inode.nextents)
            found = [extent for record in records if _overlaps(extent := _extent(record), first, last)]
        elif inode.core.di_format == XFS_DINODE_FMT_BTREE:
            found = self._btree_extents(inode, first, last)
        else:
            raise _corrupt(f"inode {inode.ino} has no extents (data fork format {inode.core.di_format})")
        return sorted(found, key=lambda extent: extent.startoff)

    def _btree_extents(self, inode: Inode, first: int, last: int) -> builtins.list[Extent]:
        """Down the B+tree from its root in the inode, into the children whose key ranges meet
        `first`..`last` only."""
        root = XfsBmdrBlock.unpack(inode.fork, 0)
        maxrecs = (len(inode.fork) - XfsBmdrBlock.SIZE) // (BMBT_KEY_SIZE + BMBT_PTR_SIZE)
        if not 0 < root.bb_level < XFS_BTREE_MAXLEVELS or root.bb_numrecs > maxrecs:
            raise _corrupt(
                f"inode {inode.ino}'s extent tree root has level {root.bb_level} and {root.bb_numrecs} "
                f"records (at most {maxrecs})"
            )
        walk = _Walk(inode.ino)
        found: list[Extent] = []
        self._descend(
            inode.fork, XfsBmdrBlock.SIZE, maxrecs, root.bb_numrecs, root.bb_level, first, last, walk, found
        )
        return found

    def _descend(
        self,
        block: bytes,
        start: int,
        maxrecs: int,
        numrecs: int,
        level: int,
        first: int,
        last: int,
        walk: _Walk,
        found: builtins.list[Extent],
    ) -> None:
        """The children of an interior block (its keys at `start`, pointers after `maxrecs` keys)."""
        keys = [
            int.from_bytes(block[start + i * BMBT_KEY_SIZE : start + (i + 1) * BMBT_KEY_SIZE])
            for i in range(numrecs)
        ]
        pointers = start + maxrecs * BMBT_KEY_SIZE
        for i, key in enumerate(keys):
            if key > last or (i + 1 < numrecs and keys[i + 1] <= first):
                continue
            fsbno = int.from_bytes(block[pointers + i * BMBT_PTR_SIZE : pointers + (i + 1) * BMBT_PTR_SIZE])
            child, header_size, child_numrecs = self._bmbt_block(fsbno, level - 1, walk)
            child_maxrecs = (self.blocksize - header_size) // (BMBT_KEY_SIZE + BMBT_PTR_SIZE)
            if level - 1 == 0:
                for record in unpack_array(XfsBmbtRec, child, child_numrecs, header_size):
                    if _overlaps(extent := _extent(record), first, last):
                        found.append(extent)
            else:
                self._descend(
                    child, header_size, child_maxrecs, child_numrecs, level - 1, first, last, walk, found
                )

    def _bmbt_block(self, fsbno: int, level: int, walk: _Walk) -> tuple[bytes, int, int]:
        """A B+tree block, checked: its magic, the level its parent promised, its record count,
        and on version 5 where it says it is and whose it is. Returns (bytes, header size, numrecs)."""
        walk.visit(fsbno)
        where = self._fsblock(fsbno)
        data = self.disk.read(where, self.blocksize, f"xfs inode {walk.ino} extent tree block")
        header: XfsBtreeLblock | XfsBtreeLblockCrc
        if self.v5:
            header = XfsBtreeLblockCrc.unpack(data, 0)
            magic = XFS_BMAP_CRC_MAGIC
            if header.bb_magic == magic and (
                header.bb_blkno != where // BBSIZE or header.bb_owner != walk.ino
            ):
                raise _corrupt(f"extent tree block {fsbno} of inode {walk.ino} belongs elsewhere")
        else:
            header = XfsBtreeLblock.unpack(data, 0)
            magic = XFS_BMAP_MAGIC
        leaf_max = (self.blocksize - header.SIZE) // XfsBmbtRec.SIZE
        if header.bb_magic != magic or header.bb_level != level or header.bb_numrecs > leaf_max:
            raise _corrupt(
                f"extent tree block {fsbno} of inode {walk.ino}: magic {header.bb_magic!r}, level "
                f"{header.bb_level} (expected {level}), {header.bb_numrecs} records"
            )
        return data, header.SIZE, header.bb_numrecs

    def _fsblock(self, fsbno: int, count: int = 1) -> int:
        """The byte offset of filesystem block `fsbno` (agno << agblklog | agbno), checked, with
        `count` blocks after it inside the same allocation group."""
        agno = fsbno >> self.sb.sb_agblklog
        agbno = fsbno & ((1 << self.sb.sb_agblklog) - 1)
        if agno >= self.sb.sb_agcount or agbno + count > self.sb.sb_agblocks:
            raise _corrupt(f"block {fsbno} (+{count}) is outside allocation group geometry")
        return (agno * self.sb.sb_agblocks + agbno) << self.blocklog

    def _gather(self, extents: builtins.list[Extent], offset: int, length: int, what: str) -> bytes:
        """`length` bytes of the file from `offset` through its extents: holes and unwritten
        extents read as zeros."""
        out = bytearray(length)
        end = offset + length
        for extent in extents:
            if extent.unwritten:
                continue
            start = max(offset, extent.startoff << self.blocklog)
            stop = min(end, (extent.startoff + extent.blockcount) << self.blocklog)
            if start >= stop:
                continue
            base = self._fsblock(extent.startblock, extent.blockcount)
            out[start - offset : stop - offset] = self.disk.read(
                base + start - (extent.startoff << self.blocklog), stop - start, what
            )
        return bytes(out)

    # --- directories ---

    def _entries(self, inode: Inode) -> Iterator[tuple[bytes, int]]:
        """(name, inode number) of every entry, "." and ".." included except in short form."""
        if inode.kind != Kind.DIRECTORY:
            return
        if inode.core.di_format == XFS_DINODE_FMT_LOCAL:
            yield from self._shortform(inode)
            return
        dir_bytes = self.blocksize * self.dir_blocks
        leaf_block = XFS_DIR2_LEAF_OFFSET >> self.blocklog
        extents = self._extents(inode, 0, leaf_block - 1)
        budget = MAX_DIRECTORY_BYTES // dir_bytes
        seen: set[int] = set()
        for extent in extents:
            first = extent.startoff - extent.startoff % self.dir_blocks
            stop = min(extent.startoff + extent.blockcount, leaf_block)
            for dablk in range(first, stop, self.dir_blocks):
                if dablk in seen:
                    continue
                seen.add(dablk)
                if len(seen) > budget:
                    raise BudgetExceeded(
                        f"xfs directory inode {inode.ino}", limit=f"at most {MAX_DIRECTORY_BYTES} bytes"
                    )
                block = self._gather(
                    extents, dablk << self.blocklog, dir_bytes, f"xfs directory inode {inode.ino}"
                )
                yield from self._data_block(inode.ino, block)

    def _data_block(self, ino: int, block: bytes) -> Iterator[tuple[bytes, int]]:
        """The entries of one directory data block (or single-block directory), free space skipped."""
        header: XfsDir2DataHdr | XfsDir3DataHdr
        if self.v5:
            header = XfsDir3DataHdr.unpack(block, 0)
            magics = (XFS_DIR3_BLOCK_MAGIC, XFS_DIR3_DATA_MAGIC)
            if header.magic in magics and header.owner != ino:
                raise _corrupt(f"a directory block of inode {ino} belongs to inode {header.owner}")
        else:
            header = XfsDir2DataHdr.unpack(block, 0)
            magics = (XFS_DIR2_BLOCK_MAGIC, XFS_DIR2_DATA_MAGIC)
        if header.magic not in magics:
            raise _corrupt(f"directory inode {ino} has a data block with magic {header.magic!r}")
        end = len(block)
        if header.magic in BLOCK_MAGICS:
            tail = XfsDir2BlockTail.unpack(block, end - XfsDir2BlockTail.SIZE)
            end -= XfsDir2BlockTail.SIZE + tail.count * XfsDir2LeafEntry.SIZE
            if end < header.SIZE:
                raise _corrupt(
                    f"directory inode {ino}'s block counts {tail.count} hash entries: more than it holds"
                )
        position = header.SIZE
        while position + XfsDir2DataUnused.SIZE <= end:
            unused = XfsDir2DataUnused.unpack(block, position)
            if unused.freetag == XFS_DIR2_DATA_FREE_TAG:
                size = unused.length
                if size < XFS_DIR2_DATA_ALIGN or size % XFS_DIR2_DATA_ALIGN or position + size > end:
                    raise _corrupt(f"directory inode {ino}: free space of {size} bytes at {position}")
                position += size
                continue
            entry = (
                XfsDir2DataEntry.unpack(block, position) if position + XfsDir2DataEntry.SIZE <= end else None
            )
            if entry is None or entry.namelen == 0:
                raise _corrupt(f"directory inode {ino}: an entry at {position} with no name")
            fixed = XfsDir2DataEntry.SIZE + entry.namelen + (FTYPE_SIZE if self.has_ftype else 0)
            size = -(-(fixed + XFS_DIR2_DATA_TAG_SIZE) // XFS_DIR2_DATA_ALIGN) * XFS_DIR2_DATA_ALIGN
            if position + size > end:
                raise _corrupt(f"directory inode {ino}: an entry at {position} runs past its block")
            name_at = position + XfsDir2DataEntry.SIZE
            yield block[name_at : name_at + entry.namelen], entry.inumber
            position += size

    def _shortform(self, inode: Inode) -> Iterator[tuple[bytes, int]]:
        """The entries of a directory kept in its inode."""
        local = inode.fork[: inode.core.di_size]
        if len(local) < XfsDir2SfHdr.SIZE:
            raise _corrupt(f"short-form directory inode {inode.ino} is {len(local)} bytes")
        header = XfsDir2SfHdr.unpack(local, 0)
        ino_size = XFS_INO64_SIZE if header.i8count else XFS_INO32_SIZE
        position = XfsDir2SfHdr.SIZE + ino_size
        ftype = FTYPE_SIZE if self.has_ftype else 0
        for _ in range(header.count):
            entry = (
                XfsDir2SfEntry.unpack(local, position)
                if position + XfsDir2SfEntry.SIZE <= len(local)
                else None
            )
            end = position + XfsDir2SfEntry.SIZE + (entry.namelen if entry else 0) + ftype + ino_size
            if entry is None or entry.namelen == 0 or end > len(local):
                raise _corrupt(
                    f"short-form directory inode {inode.ino}: an entry at {position} runs past its end"
                )
            name_at = position + XfsDir2SfEntry.SIZE
            yield local[name_at : name_at + entry.namelen], int.from_bytes(local[end - ino_size : end])
            position = end

    # --- symbolic links ---

    def _remote_symlink(self, inode: Inode, size: int) -> bytes:
        """A version 5 link's target in blocks, each after its header (checked: magic, owner,
        offset of its piece)."""
        per_block = self.blocksize - XfsDsymlinkHdr.SIZE
        count = -(-size // per_block)
        raw = self._gather(
            self._extents(inode, 0, count - 1), 0, count * self.blocksize, f"xfs symlink {inode.ino}"
        )
        target = bytearray()
        for index in range(count):
            header = XfsDsymlinkHdr.unpack(raw, index * self.blocksize)
            wanted = min(per_block, size - len(target))
            if (
                header.sl_magic != XFS_SYMLINK_MAGIC
                or header.sl_owner != inode.ino
                or header.sl_offset != len(target)
                or header.sl_bytes != wanted
            ):
                raise _corrupt(f"symbolic link inode {inode.ino}: block {index} has a bad header")
            at = index * self.blocksize + XfsDsymlinkHdr.SIZE
            target += raw[at : at + wanted]
        return bytes(target)


class _Walk:
    """One walk of an extent tree: the blocks visited (a second visit is a loop), at most
    `MAX_BMBT_BLOCKS` of them."""

    def __init__(self, ino: int) -> None:
        self.ino = ino
        self.visited: set[int] = set()

    def visit(self, fsbno: int) -> None:
        if fsbno in self.visited:
            raise LoopDetected(f"the extent tree of xfs inode {self.ino}")
        if len(self.visited) >= MAX_BMBT_BLOCKS:
            raise BudgetExceeded(
                f"xfs inode {self.ino} extent tree", limit=f"at most {MAX_BMBT_BLOCKS} blocks"
            )
        self.visited.add(fsbno)


def _overlaps(extent: Extent, first: int, last: int) -> bool:
    return extent.blockcount > 0 and extent.startoff <= last and extent.startoff + extent.blockcount > first


def _ino(node: Node) -> int:
    if not isinstance(node.id, int):
        raise TypeError(f"not an xfs node: {node!r}")
    return node.id


def probe(disk: Disk) -> bool:
    """Is there an XFS superblock at the volume's start?"""
    return (
        disk.size >= XfsDsb.SIZE and disk.read(0, len(XFS_SB_MAGIC), "xfs superblock magic") == XFS_SB_MAGIC
    )


def open_xfs(disk: Disk) -> Xfs:
    """The XFS filesystem on `disk`, its superblock checked."""
    sb = XfsDsb.read(disk, "xfs superblock")
    if sb.sb_magicnum != XFS_SB_MAGIC:
        raise _corrupt(f"superblock magic {sb.sb_magicnum!r}")
    _check_superblock(sb)
    return Xfs(disk, sb)


FILESYSTEM = FilesystemType(name=NAME, probe=probe, open=open_xfs)
