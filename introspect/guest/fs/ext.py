"""ext2, ext3 and ext4, read-only, with bounded reads.

Spec: the kernel's Documentation/filesystems/ext4/ (super.rst `ext4_super_block`, group_descr.rst
`ext4_group_desc`, inodes.rst `ext4_inode` and i_flags, ifork.rst: extent trees and block maps,
directory.rst `ext4_dir_entry_2`, htree and inline directories, attributes.rst: the in-inode
extended attributes that hold inline data), with fs/ext4/super.c `descriptor_loc` for meta_bg and
util-linux's libblkid (superblocks/ext.c) for which of ext2, ext3 and ext4 a superblock is.

A lookup reads the superblock, one group descriptor per inode group visited, the inodes on the
path and the directory blocks up to the entry found (read in runs of DIRECTORY_CHUNK bytes), all
through the guest disk's block cache; a directory's entries are parsed once (`DirectoryIndex`),
however many lookups pass them. Directories are read linearly: an htree's root and index
blocks look like empty entries to a linear reader, as the format intends. What is not read:
journals (a filesystem not cleanly unmounted is read as its blocks are, like `debugfs`),
encrypted names, case-folded lookups (names compare byte for byte), and extended attributes
other than inline data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from introspect.decode import MIB, c_string, uuid_be
from introspect.guest.disk import Disk
from introspect.guest.fs.base import (
    MAX_INDEXED_DIRECTORIES,
    MAX_LINK_TARGET,
    CorruptFilesystem,
    DirectoryIndex,
    FilesystemType,
    Kind,
    LoopDetected,
    Node,
)
from introspect.lru import Lru
from introspect.structure import LittleEndianStructure, chars, u8, u16, u32, unpack_array

# --- Superblock (super.rst) ---------------------------------------------------------------------------

EXT4_SUPER_MAGIC = 0xEF53
#: EXT2_GOOD_OLD_REV: revision 0 has 128-byte inodes and no feature fields.
EXT2_GOOD_OLD_REV = 0
EXT2_GOOD_OLD_INODE_SIZE = 128
#: Block sizes: 1 KiB << s_log_block_size, at most 64 KiB (EXT4_MAX_BLOCK_LOG_SIZE 16).
MIN_BLOCK_SIZE = 1024
MAX_LOG_BLOCK_SIZE = 6
#: Descriptor sizes: 32 bytes without 64bit; with it s_desc_size, a power of 2 from
#: EXT4_MIN_DESC_SIZE_64BIT (64) to EXT4_MAX_DESC_SIZE (1024).
EXT4_MIN_DESC_SIZE = 32
EXT4_MIN_DESC_SIZE_64BIT = 64
EXT4_MAX_DESC_SIZE = 1024
EXT4_ROOT_INO = 2

# s_feature_compat
COMPAT_HAS_JOURNAL_BIT = 2
COMPAT_HAS_JOURNAL = 1 << COMPAT_HAS_JOURNAL_BIT
# s_feature_incompat
INCOMPAT_FILETYPE_BIT = 1
INCOMPAT_RECOVER_BIT = 2
INCOMPAT_JOURNAL_DEV_BIT = 3
INCOMPAT_META_BG_BIT = 4
INCOMPAT_64BIT_BIT = 7
INCOMPAT_LARGEDIR_BIT = 14
INCOMPAT_FILETYPE = 1 << INCOMPAT_FILETYPE_BIT
INCOMPAT_RECOVER = 1 << INCOMPAT_RECOVER_BIT
INCOMPAT_JOURNAL_DEV = 1 << INCOMPAT_JOURNAL_DEV_BIT
INCOMPAT_META_BG = 1 << INCOMPAT_META_BG_BIT
INCOMPAT_64BIT = 1 << INCOMPAT_64BIT_BIT
INCOMPAT_LARGEDIR = 1 << INCOMPAT_LARGEDIR_BIT
# s_feature_ro_compat
RO_COMPAT_SPARSE_SUPER_BIT = 0
RO_COMPAT_LARGE_FILE_BIT = 1
RO_COMPAT_BTREE_DIR_BIT = 2
RO_COMPAT_SPARSE_SUPER = 1 << RO_COMPAT_SPARSE_SUPER_BIT
RO_COMPAT_LARGE_FILE = 1 << RO_COMPAT_LARGE_FILE_BIT
RO_COMPAT_BTREE_DIR = 1 << RO_COMPAT_BTREE_DIR_BIT

#: libblkid's names: ext2 knows only these features, ext3 these plus a journal (and recovery);
#: anything else makes it ext4 (superblocks/ext.c EXT2/EXT3_FEATURE_*_SUPP).
EXT2_FEATURE_INCOMPAT_SUPP = INCOMPAT_FILETYPE | INCOMPAT_META_BG
EXT2_FEATURE_RO_COMPAT_SUPP = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR
EXT3_FEATURE_INCOMPAT_SUPP = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG
EXT3_FEATURE_RO_COMPAT_SUPP = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR


class Ext4SuperBlock(LittleEndianStructure):
    """struct ext4_super_block (super.rst), up to s_flags; the rest of its 1024 bytes (RAID hints,
    MMP, checksums, encryption) is not read."""

    OFFSET: ClassVar[int] = 1024

    s_inodes_count: int = u32()
    s_blocks_count_lo: int = u32()
    s_r_blocks_count_lo: int = u32()
    s_free_blocks_count_lo: int = u32()
    s_free_inodes_count: int = u32()
    s_first_data_block: int = u32()
    s_log_block_size: int = u32()
    s_log_cluster_size: int = u32()
    s_blocks_per_group: int = u32()
    s_clusters_per_group: int = u32()
    s_inodes_per_group: int = u32()
    s_mtime: int = u32()
    s_wtime: int = u32()
    s_mnt_count: int = u16()
    s_max_mnt_count: int = u16()
    s_magic: int = u16()
    s_state: int = u16()
    s_errors: int = u16()
    s_minor_rev_level: int = u16()
    s_lastcheck: int = u32()
    s_checkinterval: int = u32()
    s_creator_os: int = u32()
    s_rev_level: int = u32()
    s_def_resuid: int = u16()
    s_def_resgid: int = u16()
    s_first_ino: int = u32()
    s_inode_size: int = u16()
    s_block_group_nr: int = u16()
    s_feature_compat: int = u32()
    s_feature_incompat: int = u32()
    s_feature_ro_compat: int = u32()
    s_uuid: bytes = chars(16)
    s_volume_name: bytes = chars(16)
    s_last_mounted: bytes = chars(64)
    s_algorithm_usage_bitmap: int = u32()
    s_prealloc_blocks: int = u8()
    s_prealloc_dir_blocks: int = u8()
    s_reserved_gdt_blocks: int = u16()
    s_journal_uuid: bytes = chars(16)
    s_journal_inum: int = u32()
    s_journal_dev: int = u32()
    s_last_orphan: int = u32()
    s_hash_seed: bytes = chars(16)
    s_def_hash_version: int = u8()
    s_jnl_backup_type: int = u8()
    s_desc_size: int = u16()
    s_default_mount_opts: int = u32()
    s_first_meta_bg: int = u32()
    s_mkfs_time: int = u32()
    s_jnl_blocks: bytes = chars(17 * 4)
    s_blocks_count_hi: int = u32()
    s_r_blocks_count_hi: int = u32()
    s_free_blocks_count_hi: int = u32()
    s_min_extra_isize: int = u16()
    s_want_extra_isize: int = u16()
    s_flags: int = u32()


MAGIC_OFFSET = Ext4SuperBlock.OFFSET + Ext4SuperBlock.offset_of("s_magic")


class Ext4GroupDesc(LittleEndianStructure):
    """struct ext4_group_desc (group_descr.rst): 32 bytes, 64 with the 64bit feature (the _hi
    fields); a 32-byte descriptor is read as the first half, the rest zeros."""

    bg_block_bitmap_lo: int = u32()
    bg_inode_bitmap_lo: int = u32()
    bg_inode_table_lo: int = u32()
    bg_free_blocks_count_lo: int = u16()
    bg_free_inodes_count_lo: int = u16()
    bg_used_dirs_count_lo: int = u16()
    bg_flags: int = u16()
    bg_exclude_bitmap_lo: int = u32()
    bg_block_bitmap_csum_lo: int = u16()
    bg_inode_bitmap_csum_lo: int = u16()
    bg_itable_unused_lo: int = u16()
    bg_checksum: int = u16()
    bg_block_bitmap_hi: int = u32()
    bg_inode_bitmap_hi: int = u32()
    bg_inode_table_hi: int = u32()
    bg_free_blocks_count_hi: int = u16()
    bg_free_inodes_count_hi: int = u16()
    bg_used_dirs_count_hi: int = u16()
    bg_itable_unused_hi: int = u16()
    bg_exclude_bitmap_hi: int = u32()
    bg_block_bitmap_csum_hi: int = u16()
    bg_inode_bitmap_csum_hi: int = u16()
    bg_reserved: int = u32()


# --- Inodes (inodes.rst) ----------------------------------------------------------------------------

#: i_block: 15 words (EXT4_N_BLOCKS): 12 direct, indirect, double, triple; or an extent tree's
#: root; or a fast symlink's target; or the first 60 bytes of inline data.
EXT4_N_BLOCKS = 15
I_BLOCK_SIZE = EXT4_N_BLOCKS * 4
EXT4_NDIR_BLOCKS = 12
EXT4_IND_BLOCK = 12
EXT4_DIND_BLOCK = 13
EXT4_TIND_BLOCK = 14


class Ext4Inode(LittleEndianStructure):
    """struct ext4_inode (inodes.rst): the 128 bytes of revision 0, then the fields of larger
    inodes up to i_projid (a 128-byte inode reads them as zeros)."""

    i_mode: int = u16()
    i_uid: int = u16()
    i_size_lo: int = u32()
    i_atime: int = u32()
    i_ctime: int = u32()
    i_mtime: int = u32()
    i_dtime: int = u32()
    i_gid: int = u16()
    i_links_count: int = u16()
    i_blocks_lo: int = u32()
    i_flags: int = u32()
    l_i_version: int = u32()
    i_block: bytes = chars(I_BLOCK_SIZE)
    i_generation: int = u32()
    i_file_acl_lo: int = u32()
    i_size_high: int = u32()
    i_obso_faddr: int = u32()
    l_i_blocks_high: int = u16()
    l_i_file_acl_high: int = u16()
    l_i_uid_high: int = u16()
    l_i_gid_high: int = u16()
    l_i_checksum_lo: int = u16()
    l_i_reserved: int = u16()
    i_extra_isize: int = u16()
    i_checksum_hi: int = u16()
    i_ctime_extra: int = u32()
    i_mtime_extra: int = u32()
    i_atime_extra: int = u32()
    i_crtime: int = u32()
    i_crtime_extra: int = u32()
    i_version_hi: int = u32()
    i_projid: int = u32()


# i_mode's file type (S_IFMT)
S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000
# i_flags
EXT4_INDEX_FL_BIT = 12
EXT4_EXTENTS_FL_BIT = 19
EXT4_INLINE_DATA_FL_BIT = 28
EXT4_EXTENTS_FL = 1 << EXT4_EXTENTS_FL_BIT
EXT4_INLINE_DATA_FL = 1 << EXT4_INLINE_DATA_FL_BIT

# --- Extent trees (ifork.rst) --------------------------------------------------------------------------

EXT4_EXT_MAGIC = 0xF30A
#: The kernel's EXT4_MAX_EXTENT_DEPTH: a tree deeper than this is corrupt.
EXT4_MAX_EXTENT_DEPTH = 5
#: ee_len above EXT_INIT_MAX_LEN marks an uninitialized extent (reads as zeros) of ee_len - 32768.
EXT_INIT_MAX_LEN = 1 << 15


class Ext4ExtentHeader(LittleEndianStructure):
    """struct ext4_extent_header (ifork.rst)."""

    eh_magic: int = u16()
    eh_entries: int = u16()
    eh_max: int = u16()
    eh_depth: int = u16()
    eh_generation: int = u32()


class Ext4ExtentIdx(LittleEndianStructure):
    """struct ext4_extent_idx: an index node's entry, the child covering logical blocks from ei_block."""

    ei_block: int = u32()
    ei_leaf_lo: int = u32()
    ei_leaf_hi: int = u16()
    ei_unused: int = u16()


class Ext4Extent(LittleEndianStructure):
    """struct ext4_extent: ee_len blocks from logical ee_block at physical ee_start."""

    ee_block: int = u32()
    ee_len: int = u16()
    ee_start_hi: int = u16()
    ee_start_lo: int = u32()


# --- Directories (directory.rst) ---------------------------------------------------------------------


class Ext4DirEntry2(LittleEndianStructure):
    """struct ext4_dir_entry_2; without the filetype feature, name_len's high byte is file_type's place
    (struct ext4_dir_entry, a 16-bit name_len)."""

    inode: int = u32()
    rec_len: int = u16()
    name_len: int = u8()
    file_type: int = u8()


#: EXT4_DIR_REC_LEN(1): the smallest record, an 8-byte header and a name padded to 4 bytes.
MIN_REC_LEN = 12
DIR_ROUND = 4
#: ext4_rec_len_from_disk: in 64 KiB blocks, 65535 (EXT4_MAX_REC_LEN) and 0 mean the whole block.
EXT4_MAX_REC_LEN = (1 << 16) - 1
MAX_BLOCK_SIZE = MIN_BLOCK_SIZE << MAX_LOG_BLOCK_SIZE
#: An inline directory's i_block starts with its parent's inode number.
EXT4_INLINE_DOTDOT_SIZE = 4

# --- In-inode extended attributes (attributes.rst) -----------------------------------------------------

EXT4_XATTR_MAGIC = 0xEA020000
#: "system.data": index 7 (EXT4_XATTR_INDEX_SYSTEM), name "data": inline data past i_block.
EXT4_XATTR_INDEX_SYSTEM = 7
INLINE_DATA_NAME = b"data"
EXT4_XATTR_ROUND = 4


class Ext4XattrIbodyHeader(LittleEndianStructure):
    """struct ext4_xattr_ibody_header: the magic in front of the entries after i_extra_isize."""

    h_magic: int = u32()


class Ext4XattrEntry(LittleEndianStructure):
    """struct ext4_xattr_entry, followed by its name; e_value_offs counts from the first entry."""

    e_name_len: int = u8()
    e_name_index: int = u8()
    e_value_offs: int = u16()
    e_value_inum: int = u32()
    e_value_size: int = u32()
    e_hash: int = u32()


# --- Caps -------------------------------------------------------------------------------------------

#: One `read` returns at most this much: four times the default guest budget, so no fact is cut, and
#: a sparse file of any size cannot make us allocate its holes' zeros.
MAX_READ = 16 * MIB
#: Bytes read from the disk in one call: runs of contiguous blocks are read in pieces this size.
READ_CHUNK = 1 * MIB
#: A directory is read in runs of this many bytes: /etc of a full system fits in one.
DIRECTORY_CHUNK = 64 * 1024
#: Directory blocks walked: 2**16 blocks is 64 MiB at 1 KiB, millions of entries; the guest budget
#: stops a linear walk long before.
MAX_DIRECTORY_BLOCKS = 1 << 16
#: Extent tree nodes visited for one range of a file: a file fragmented into 100,000 extents needs
#: about 300 leaves at 4 KiB; a guest fact never reads such a file.
MAX_EXTENT_NODES = 512
#: Leaf extents that meet one read: a read of MAX_READ at 1 KiB blocks spans that many blocks, and
#: extents that do not overlap cover at least one block each.
MAX_LEAF_EXTENTS = MAX_READ // MIN_BLOCK_SIZE
#: Parsed inodes kept (the bytes are in the disk's cache; this saves parsing the path again).
MAX_CACHED_INODES = 256
#: In-inode attribute entries: each takes at least 16 bytes of an inode of at most 64 KiB.
MAX_XATTR_ENTRIES = MAX_BLOCK_SIZE // Ext4XattrEntry.SIZE

NAME = "ext"


@dataclass(frozen=True, slots=True)
class Inode:
    """The fields of an inode the reader uses; `body` is the inode's bytes past the first 128."""

    number: int
    mode: int
    size: int
    flags: int
    block: bytes
    extra_isize: int
    body: bytes

    @property
    def kind(self) -> Kind:
        fmt = self.mode & S_IFMT
        if fmt == S_IFDIR:
            return Kind.DIRECTORY
        if fmt == S_IFREG:
            return Kind.FILE
        if fmt == S_IFLNK:
            return Kind.SYMLINK
        return Kind.OTHER


def blkid_type(sb: Ext4SuperBlock) -> str:
    """ext2, ext3 or ext4, as libblkid names the superblock (superblocks/ext.c)."""
    incompat, ro_compat = sb.s_feature_incompat, sb.s_feature_ro_compat
    if sb.s_feature_compat & COMPAT_HAS_JOURNAL:
        if not incompat & ~EXT3_FEATURE_INCOMPAT_SUPP and not ro_compat & ~EXT3_FEATURE_RO_COMPAT_SUPP:
            return "ext3"
    elif not incompat & ~EXT2_FEATURE_INCOMPAT_SUPP and not ro_compat & ~EXT2_FEATURE_RO_COMPAT_SUPP:
        return "ext2"
    return "ext4"


def probe(disk: Disk) -> bool:
    """The superblock's magic, and not an external journal (blkid's jbd)."""
    data = disk.read_upto(Ext4SuperBlock.OFFSET, Ext4SuperBlock.SIZE, "ext superblock")
    if len(data) < Ext4SuperBlock.SIZE:
        return False
    sb = Ext4SuperBlock.unpack(data, 0)
    return sb.s_magic == EXT4_SUPER_MAGIC and not sb.s_feature_incompat & INCOMPAT_JOURNAL_DEV


class ExtFilesystem:
    """An opened ext2/3/4 filesystem (see `introspect.guest.fs.base.Filesystem`)."""

    case_sensitive = True

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        sb = Ext4SuperBlock.read(disk, "ext superblock")
        if sb.s_magic != EXT4_SUPER_MAGIC:
            raise CorruptFilesystem(NAME, f"no superblock magic (s_magic {sb.s_magic:#06x})")
        self.sb = sb
        self.name = blkid_type(sb)
        self.label = c_string(sb.s_volume_name) or None
        self.uuid = uuid_be(sb.s_uuid) if any(sb.s_uuid) else None
        if sb.s_log_block_size > MAX_LOG_BLOCK_SIZE:
            raise self._corrupt(
                f"s_log_block_size {sb.s_log_block_size} is above {MAX_LOG_BLOCK_SIZE} (64 KiB blocks)"
            )
        self.block_size = MIN_BLOCK_SIZE << sb.s_log_block_size
        self.is_64bit = bool(sb.s_feature_incompat & INCOMPAT_64BIT)
        self.blocks_count = sb.s_blocks_count_lo | (sb.s_blocks_count_hi << 32 if self.is_64bit else 0)
        self.inode_size = self._inode_size()
        self.desc_size = self._desc_size()
        bits_per_bitmap = 8 * self.block_size
        if not 0 < sb.s_blocks_per_group <= bits_per_bitmap:
            raise self._corrupt(f"s_blocks_per_group {sb.s_blocks_per_group} is not in 1..{bits_per_bitmap}")
        if not 0 < sb.s_inodes_per_group <= bits_per_bitmap:
            raise self._corrupt(f"s_inodes_per_group {sb.s_inodes_per_group} is not in 1..{bits_per_bitmap}")
        if sb.s_first_data_block >= self.blocks_count:
            raise self._corrupt(f"s_first_data_block {sb.s_first_data_block} is past s_blocks_count")
        self.group_count = -(-(self.blocks_count - sb.s_first_data_block) // sb.s_blocks_per_group)
        self.inodes_count = min(sb.s_inodes_count, self.group_count * sb.s_inodes_per_group)
        self._inodes: Lru[int, Inode] = Lru(MAX_CACHED_INODES)
        self._directories: Lru[int, DirectoryIndex[bytes, int]] = Lru(MAX_INDEXED_DIRECTORIES)

    def _corrupt(self, message: str) -> CorruptFilesystem:
        return CorruptFilesystem(self.name, message)

    def _inode_size(self) -> int:
        sb = self.sb
        if sb.s_rev_level == EXT2_GOOD_OLD_REV:
            return EXT2_GOOD_OLD_INODE_SIZE
        size = sb.s_inode_size
        if not EXT2_GOOD_OLD_INODE_SIZE <= size <= self.block_size or size & (size - 1):
            raise self._corrupt(f"s_inode_size {size} is not a power of 2 in 128..{self.block_size}")
        return size

    def _desc_size(self) -> int:
        if not self.is_64bit:
            return EXT4_MIN_DESC_SIZE
        size = self.sb.s_desc_size
        if not EXT4_MIN_DESC_SIZE_64BIT <= size <= EXT4_MAX_DESC_SIZE or size & (size - 1):
            raise self._corrupt(f"s_desc_size {size} is not a power of 2 in 64..1024")
        return size

    # --- Groups and inodes ------------------------------------------------------------------------

    def _has_super(self, group: int) -> bool:
        """Does the group hold a superblock backup (and so, with meta_bg, one before its descriptors)?"""
        if group <= 1 or not self.sb.s_feature_ro_compat & RO_COMPAT_SPARSE_SUPER:
            return True
        for base in (3, 5, 7):
            power = base
            while power < group:
                power *= base
            if power == group:
                return True
        return False

    def _descriptor_block(self, index: int) -> int:
        """fs/ext4/super.c descriptor_loc: the block of the index-th block of group descriptors."""
        sb = self.sb
        first = sb.s_first_data_block
        if not sb.s_feature_incompat & INCOMPAT_META_BG or index < sb.s_first_meta_bg:
            return first + index + 1
        group = (self.block_size // self.desc_size) * index
        has_super = int(self._has_super(group))
        if self.block_size == MIN_BLOCK_SIZE and index == 0 and first == 0:
            has_super += 1
        return first + group * sb.s_blocks_per_group + has_super

    def _group(self, group: int) -> Ext4GroupDesc:
        per_block = self.block_size // self.desc_size
        block = self._descriptor_block(group // per_block)
        self._check_blocks(block, 1, f"the descriptor of group {group}")
        offset = block * self.block_size + (group % per_block) * self.desc_size
        raw = self.disk.read(offset, min(self.desc_size, Ext4GroupDesc.SIZE), "ext group descriptor")
        return Ext4GroupDesc.unpack(raw.ljust(Ext4GroupDesc.SIZE, b"\0"))

    def _inode(self, number: int) -> Inode:
        return self._inodes.get_or_make(number, lambda: self._read_inode(number))

    def _read_inode(self, number: int) -> Inode:
        if not 1 <= number <= self.inodes_count:
            raise self._corrupt(f"inode {number} is outside 1..{self.inodes_count}")
        group, index = divmod(number - 1, self.sb.s_inodes_per_group)
        desc = self._group(group)
        table = desc.bg_inode_table_lo | (desc.bg_inode_table_hi << 32 if self.is_64bit else 0)
        offset = table * self.block_size + index * self.inode_size
        self._check_blocks(offset // self.block_size, 1, f"inode {number}")
        raw = self.disk.read(offset, self.inode_size, f"ext inode {number}")
        fields = Ext4Inode.unpack(raw.ljust(Ext4Inode.SIZE, b"\0"))
        size = fields.i_size_lo
        if fields.i_mode & S_IFMT != S_IFDIR or self.sb.s_feature_incompat & INCOMPAT_LARGEDIR:
            size |= fields.i_size_high << 32
        inode = Inode(
            number=number,
            mode=fields.i_mode,
            size=size,
            flags=fields.i_flags,
            block=fields.i_block,
            extra_isize=fields.i_extra_isize if self.inode_size > EXT2_GOOD_OLD_INODE_SIZE else 0,
            body=raw[EXT2_GOOD_OLD_INODE_SIZE:],
        )
        return inode

    def _node(self, inode: Inode) -> Node:
        return Node(id=inode.number, kind=inode.kind, size=inode.size)

    def _check_blocks(self, block: int, count: int, what: str) -> None:
        if block < 0 or block + count > self.blocks_count:
            raise self._corrupt(
                f"{what} points at block {block} (+{count}), past the {self.blocks_count} blocks"
            )

    # --- Mapping a file's blocks -----------------------------------------------------------------

    def _runs(self, inode: Inode, first: int, count: int) -> Iterator[tuple[int, int | None, int]]:
        """(logical block, physical block or None for zeros, count) covering first..first+count-1."""
        if inode.flags & EXT4_EXTENTS_FL:
            yield from self._extent_runs(inode, first, count)
        else:
            yield from self._mapped_runs(inode, first, count)

    def _extent_runs(self, inode: Inode, first: int, count: int) -> Iterator[tuple[int, int | None, int]]:
        last = first + count - 1
        leaves: list[tuple[int, int, int, bool]] = []
        visits = [0]
        self._walk(inode.block, None, frozenset(), first, last, leaves, visits)
        cursor = first
        for start, length, physical, uninitialized in sorted(leaves):
            low, high = max(start, cursor), min(start + length - 1, last)
            if low > high:
                continue
            if low > cursor:
                yield cursor, None, low - cursor
            yield low, None if uninitialized else physical + low - start, high - low + 1
            cursor = high + 1
        if cursor <= last:
            yield cursor, None, last - cursor + 1

    def _walk(
        self,
        node: bytes,
        depth: int | None,
        ancestors: frozenset[int],
        first: int,
        last: int,
        leaves: list[tuple[int, int, int, bool]],
        visits: list[int],
    ) -> None:
        """Collect the leaf extents of the tree node `node` (i_block, or a block of `depth`)
        that meet blocks first..last; `ancestors` are the blocks on the way here."""
        header = Ext4ExtentHeader.unpack(node, 0)
        if header.eh_magic != EXT4_EXT_MAGIC:
            raise self._corrupt(f"an extent tree node has the magic {header.eh_magic:#06x}, not 0xf30a")
        if depth is None:
            if header.eh_depth > EXT4_MAX_EXTENT_DEPTH:
                raise self._corrupt(
                    f"an extent tree is {header.eh_depth} deep, more than {EXT4_MAX_EXTENT_DEPTH}"
                )
        elif header.eh_depth != depth:
            raise self._corrupt(
                f"an extent tree node of depth {header.eh_depth} is where depth {depth} belongs"
            )
        capacity = (len(node) - Ext4ExtentHeader.SIZE) // Ext4Extent.SIZE
        entries = min(header.eh_entries, header.eh_max, capacity)
        if header.eh_depth == 0:
            for extent in unpack_array(Ext4Extent, node, entries, Ext4ExtentHeader.SIZE):
                uninitialized = extent.ee_len > EXT_INIT_MAX_LEN
                length = extent.ee_len - EXT_INIT_MAX_LEN if uninitialized else extent.ee_len
                if length and extent.ee_block <= last and extent.ee_block + length - 1 >= first:
                    if len(leaves) >= MAX_LEAF_EXTENTS:
                        raise self._corrupt(
                            f"more than {MAX_LEAF_EXTENTS} extents meet one read: they overlap"
                        )
                    start = extent.ee_start_lo | (extent.ee_start_hi << 32)
                    leaves.append((extent.ee_block, length, start, uninitialized))
            return
        indexes = unpack_array(Ext4ExtentIdx, node, entries, Ext4ExtentHeader.SIZE)
        for position, index in enumerate(indexes):
            end = indexes[position + 1].ei_block - 1 if position + 1 < len(indexes) else last
            if index.ei_block > last or end < first:
                continue
            child = index.ei_leaf_lo | (index.ei_leaf_hi << 32)
            if child in ancestors:
                raise LoopDetected(
                    f"the extent tree of an {self.name} file (block {child} is its own ancestor)"
                )
            visits[0] += 1
            if visits[0] > MAX_EXTENT_NODES:
                raise self._corrupt(
                    f"a file's extent tree has more than {MAX_EXTENT_NODES} nodes in one read"
                )
            self._check_blocks(child, 1, "an extent index")
            data = self.disk.read(child * self.block_size, self.block_size, "ext extent tree block")
            self._walk(data, header.eh_depth - 1, ancestors | {child}, first, last, leaves, visits)

    def _mapped_runs(self, inode: Inode, first: int, count: int) -> Iterator[tuple[int, int | None, int]]:
        """Classic block maps: direct blocks, then an indirect, a double and a triple indirect block."""
        roots = [word.value for word in unpack_array(_Word, inode.block, EXT4_N_BLOCKS)]
        run_start, run_physical, run_length = first, None, 0
        for logical in range(first, first + count):
            physical = self._mapped_block(roots, logical)
            if run_length and (
                (physical is None and run_physical is None)
                or (
                    physical is not None
                    and run_physical is not None
                    and physical == run_physical + run_length
                )
            ):
                run_length += 1
                continue
            if run_length:
                yield run_start, run_physical, run_length
            run_start, run_physical, run_length = logical, physical, 1
        if run_length:
            yield run_start, run_physical, run_length

    def _mapped_block(self, roots: list[int], logical: int) -> int | None:
        per_block = self.block_size // 4
        if logical < EXT4_NDIR_BLOCKS:
            return roots[logical] or None
        index = logical - EXT4_NDIR_BLOCKS
        for level, root in enumerate((EXT4_IND_BLOCK, EXT4_DIND_BLOCK, EXT4_TIND_BLOCK), start=1):
            span = per_block**level
            if index < span:
                block = roots[root]
                for depth in range(level - 1, -1, -1):
                    if not block:
                        return None
                    self._check_blocks(block, 1, "an indirect block pointer")
                    slot = (index // per_block**depth) % per_block
                    word = self.disk.read(block * self.block_size + slot * 4, 4, "ext indirect block")
                    block = int.from_bytes(word, "little")
                return block or None
            index -= span
        return None

    # --- Reading ------------------------------------------------------------------------------------

    def _data(self, inode: Inode, offset: int, length: int) -> bytes:
        """`length` bytes of the inode's data from `offset` (the caller clamps both to its size)."""
        if length <= 0:
            return b""
        if inode.flags & EXT4_INLINE_DATA_FL:
            data = self._inline_data(inode)
            return data[offset : offset + length].ljust(length, b"\0")
        bs = self.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        parts = []
        for _, physical, count in self._runs(inode, first, last - first + 1):
            if physical is None:
                parts.append(bytes(count * bs))
                continue
            self._check_blocks(physical, count, f"inode {inode.number}'s data")
            done = 0
            while done < count * bs:
                piece = min(READ_CHUNK, count * bs - done)
                parts.append(self.disk.read(physical * bs + done, piece, "ext file data"))
                done += piece
        skip = offset - first * bs
        return b"".join(parts)[skip : skip + length]

    def _inline_data(self, inode: Inode) -> bytes:
        """i_block, then the value of the in-inode attribute system.data (inline_data)."""
        return inode.block + self._system_data(inode)

    def _system_data(self, inode: Inode) -> bytes:
        start = inode.extra_isize
        body = inode.body
        if start % 4 or start + Ext4XattrIbodyHeader.SIZE > len(body):
            return b""
        if Ext4XattrIbodyHeader.unpack(body, start).h_magic != EXT4_XATTR_MAGIC:
            return b""
        entries = start + Ext4XattrIbodyHeader.SIZE
        at = entries
        for _ in range(MAX_XATTR_ENTRIES):
            if at + Ext4XattrEntry.SIZE > len(body) or body[at : at + 4] == bytes(4):
                break
            entry = Ext4XattrEntry.unpack(body, at)
            name = body[at + Ext4XattrEntry.SIZE : at + Ext4XattrEntry.SIZE + entry.e_name_len]
            if (
                entry.e_name_index == EXT4_XATTR_INDEX_SYSTEM
                and name == INLINE_DATA_NAME
                and not entry.e_value_inum
            ):
                value_at = entries + entry.e_value_offs
                return body[value_at : value_at + entry.e_value_size]
            at += -(-(Ext4XattrEntry.SIZE + entry.e_name_len) // EXT4_XATTR_ROUND) * EXT4_XATTR_ROUND
        return b""

    # --- Directories --------------------------------------------------------------------------------

    def _entries(self, directory: Inode) -> Iterator[tuple[bytes, int]]:
        """(name, inode number) of each entry in use, in the order of the directory's bytes."""
        if directory.flags & EXT4_INLINE_DATA_FL:
            data = self._inline_data(directory)[: max(directory.size, I_BLOCK_SIZE)]
            yield b"..", int.from_bytes(data[:EXT4_INLINE_DOTDOT_SIZE], "little")
            yield from self._block_entries(data[EXT4_INLINE_DOTDOT_SIZE:I_BLOCK_SIZE])
            yield from self._block_entries(data[I_BLOCK_SIZE:])
            return
        bs = self.block_size
        blocks = min(-(-directory.size // bs), MAX_DIRECTORY_BLOCKS)
        chunk = max(1, DIRECTORY_CHUNK // bs)
        for first in range(0, blocks, chunk):
            count = min(chunk, blocks - first)
            data = self._data(directory, first * bs, count * bs)
            for at in range(0, len(data), bs):
                yield from self._block_entries(data[at : at + bs])

    def _block_entries(self, block: bytes) -> Iterator[tuple[bytes, int]]:
        """The entries of one directory block (or inline area): each record's rec_len leads to the
        next; a record that does not fit where it is, or is shorter than its name, is corruption."""
        wide_names = not self.sb.s_feature_incompat & INCOMPAT_FILETYPE
        at = 0
        while at + MIN_REC_LEN <= len(block):
            entry = Ext4DirEntry2.unpack(block, at)
            rec_len = entry.rec_len
            if self.block_size == MAX_BLOCK_SIZE and rec_len in (0, EXT4_MAX_REC_LEN):
                rec_len = MAX_BLOCK_SIZE
            name_len = entry.name_len | (entry.file_type << 8 if wide_names else 0)
            if rec_len < MIN_REC_LEN or rec_len % DIR_ROUND or at + rec_len > len(block):
                raise self._corrupt(
                    f"a directory entry's rec_len {entry.rec_len} does not fit its block at {at}"
                )
            if Ext4DirEntry2.SIZE + name_len > rec_len:
                raise self._corrupt(
                    f"a directory entry's name ({name_len} bytes) overruns its rec_len {rec_len}"
                )
            if entry.inode:
                name_at = at + Ext4DirEntry2.SIZE
                yield block[name_at : name_at + name_len], entry.inode
            at += rec_len

    # --- The Filesystem contract --------------------------------------------------------------------

    def root(self) -> Node:
        inode = self._inode(EXT4_ROOT_INO)
        if inode.kind != Kind.DIRECTORY:
            raise self._corrupt("the root inode (2) is not a directory")
        return self._node(inode)

    def lookup(self, directory: Node, name: str) -> Node | None:
        number = _number(directory)
        index = self._directories.get_or_make(
            number, lambda: DirectoryIndex(lambda: self._entries(self._inode(number)))
        )
        found = index.find(name.encode("utf-8", errors="surrogateescape"))
        return None if found is None else self._node(self._inode(found))

    def read(self, node: Node, offset: int, length: int) -> bytes:
        inode = self._inode(_number(node))
        offset = max(0, min(offset, inode.size))
        length = max(0, min(length, inode.size - offset, MAX_READ))
        return self._data(inode, offset, length)

    def readlink(self, node: Node) -> str:
        inode = self._inode(_number(node))
        if inode.size > MAX_LINK_TARGET:
            raise self._corrupt(
                f"the symbolic link {inode.number} is {inode.size} bytes long, beyond PATH_MAX"
            )
        if inode.size < I_BLOCK_SIZE and not inode.flags & EXT4_INLINE_DATA_FL:
            target = inode.block[: inode.size]
        else:
            target = self._data(inode, 0, inode.size)
        return target.decode("utf-8", errors="surrogateescape")

    def list(self, directory: Node, limit: int) -> list[str]:
        names: list[str] = []
        for entry, _ in self._entries(self._inode(_number(directory))):
            if len(names) >= limit:
                break
            if entry not in (b".", b".."):
                names.append(entry.decode("utf-8", errors="surrogateescape"))
        return names


class _Word(LittleEndianStructure):
    """One 32-bit block number of i_block or of an indirect block."""

    value: int = u32()


def _number(node: Node) -> int:
    if not isinstance(node.id, int):
        raise TypeError(f"not an ext node: {node!r}")
    return node.id


FILESYSTEM = FilesystemType(name=NAME, probe=probe, open=ExtFilesystem)
