"""Btrfs: the superblock, the chunk tree that maps logical addresses to this device, the root
tree, the default subvolume and the file trees: inodes, directory entries, file extents (inline,
regular, preallocated, holes; zlib and zstd compressed), symbolic links, and subvolumes crossed as
directories.

Spec: the Btrfs on-disk format (btrfs.readthedocs.io "On-disk format", and the kernel's
include/uapi/linux/btrfs_tree.h, whose structure and item names the declarations below keep);
the limits are the kernel's (fs/btrfs/disk-io.c btrfs_validate_super, ctree.h, compression.h),
named after them.

What is trusted: nothing. Every tree block is read at the logical address its parent named and
must say so (its header's bytenr) and sit at the level its parent promised, so a block pointing at
itself or above ends the walk; its item count must fit the node. Keys are found by binary search
in each block (`BTRFS_MAX_LEVEL` levels at most), and a walk visits at most `MAX_TREE_BYTES` of
blocks, each once. Directory entries are found by their name's hash (crc32c, as the kernel looks
them up) and then compared by name. Compressed extents are decompressed to at most their
`ram_bytes`, itself at most `BTRFS_MAX_UNCOMPRESSED`. Checksums are not verified (their type is
recorded): the clamps hold whatever the bytes say. Only this device is read: a striped chunk whose
stripe lies on another device, and RAID5/6 chunks, are named as not read.
"""

from __future__ import annotations

import builtins
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import zstandard

from introspect.decode import KIB, MIB, c_string, uuid_be
from introspect.errors import BudgetExceeded, ImageError
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
from introspect.structure import LittleEndianStructure, chars, pad, u8, u16, u32, u64, unpack_array

NAME = "btrfs"

# --- Superblock (spec "Superblock": struct btrfs_super_block, the primary copy at 64 KiB) --------

BTRFS_SUPER_INFO_OFFSET = 64 * KIB
BTRFS_MAGIC = b"_BHRfS_M"
#: BTRFS_SYSTEM_CHUNK_ARRAY_SIZE: the bootstrap chunks' room in the superblock.
BTRFS_SYSTEM_CHUNK_ARRAY_SIZE = 2048


class BtrfsSuperBlock(LittleEndianStructure):
    """The superblock through sys_chunk_array; dev_item (struct btrfs_dev_item) is inlined with
    its fields prefixed `dev_item_`, and `__unused_*` fields lose their underscores."""

    OFFSET: ClassVar[int] = BTRFS_SUPER_INFO_OFFSET

    csum: bytes = chars(32)
    fsid: bytes = chars(16)
    bytenr: int = u64()
    flags: int = u64()
    magic: bytes = chars(8)
    generation: int = u64()
    root: int = u64()
    chunk_root: int = u64()
    log_root: int = u64()
    unused_log_root_transid: int = u64()
    total_bytes: int = u64()
    bytes_used: int = u64()
    root_dir_objectid: int = u64()
    num_devices: int = u64()
    sectorsize: int = u32()
    nodesize: int = u32()
    unused_leafsize: int = u32()
    stripesize: int = u32()
    sys_chunk_array_size: int = u32()
    chunk_root_generation: int = u64()
    compat_flags: int = u64()
    compat_ro_flags: int = u64()
    incompat_flags: int = u64()
    csum_type: int = u16()
    root_level: int = u8()
    chunk_root_level: int = u8()
    log_root_level: int = u8()
    dev_item_devid: int = u64()
    dev_item_total_bytes: int = u64()
    dev_item_bytes_used: int = u64()
    dev_item_io_align: int = u32()
    dev_item_io_width: int = u32()
    dev_item_sector_size: int = u32()
    dev_item_type: int = u64()
    dev_item_generation: int = u64()
    dev_item_start_offset: int = u64()
    dev_item_dev_group: int = u32()
    dev_item_seek_speed: int = u8()
    dev_item_bandwidth: int = u8()
    dev_item_uuid: bytes = chars(16)
    dev_item_fsid: bytes = chars(16)
    label: bytes = chars(256)
    cache_generation: int = u64()
    uuid_tree_generation: int = u64()
    metadata_uuid: bytes = chars(16)
    nr_global_roots: int = u64()
    reserved: None = pad(216)
    sys_chunk_array: bytes = chars(BTRFS_SYSTEM_CHUNK_ARRAY_SIZE)


#: csum_type (BTRFS_CSUM_TYPE_*): recorded, not verified.
CSUM_TYPES = {0: "crc32c", 1: "xxhash64", 2: "sha256", 3: "blake2b"}
#: btrfs_validate_super: sectors of 4 KiB to 64 KiB (BTRFS_MAX_METADATA_BLOCKSIZE), nodes of a
#: sector to 64 KiB, both powers of 2.
BTRFS_MIN_SECTORSIZE = 4 * KIB
BTRFS_MAX_METADATA_BLOCKSIZE = 64 * KIB
#: BTRFS_MAX_LEVEL: a tree has at most 8 levels (0 to 7).
BTRFS_MAX_LEVEL = 8
#: incompat_flags bit numbers (BTRFS_FEATURE_INCOMPAT_*). Those that change how this reader must
#: map or read are refused by name; a bit not known here is refused as the kernel refuses it.
INCOMPAT_NAMES = {
    0: "mixed_backref",
    1: "default_subvol",
    2: "mixed_groups",
    3: "compress_lzo",
    4: "compress_zstd",
    5: "big_metadata",
    6: "extended_iref",
    7: "raid56",
    8: "skinny_metadata",
    9: "no_holes",
    10: "metadata_uuid",
    11: "raid1c34",
    12: "zoned",
    13: "extent_tree_v2",
    14: "raid_stripe_tree",
    16: "simple_quota",
}
#: extent_tree_v2 moves the trees this reader starts from; the RAID stripe tree maps data
#: differently from the chunk tree.
INCOMPAT_REFUSED = {13, 14}
INCOMPAT_READ = sum(1 << bit for bit in INCOMPAT_NAMES if bit not in INCOMPAT_REFUSED)

# --- Trees (spec "Tree structure": btrfs_header, btrfs_item, btrfs_key_ptr) ---------------------


class BtrfsDiskKey(LittleEndianStructure):
    """A key: (objectid, type, offset), compared in that order."""

    objectid: int = u64()
    type: int = u8()
    offset: int = u64()


class BtrfsHeader(LittleEndianStructure):
    """Every tree block starts with this header."""

    csum: bytes = chars(32)
    fsid: bytes = chars(16)
    bytenr: int = u64()
    flags: int = u64()
    chunk_tree_uuid: bytes = chars(16)
    generation: int = u64()
    owner: int = u64()
    nritems: int = u32()
    level: int = u8()


class BtrfsItem(LittleEndianStructure):
    """A leaf's item: its key (inlined, prefixed `key_`), and where its data lies, counted from
    the end of the header."""

    key_objectid: int = u64()
    key_type: int = u8()
    key_offset: int = u64()
    offset: int = u32()
    size: int = u32()


class BtrfsKeyPtr(LittleEndianStructure):
    """An interior node's pointer: the first key of the child and the child's logical address."""

    key_objectid: int = u64()
    key_type: int = u8()
    key_offset: int = u64()
    blockptr: int = u64()
    generation: int = u64()


#: Tree blocks one walk visits, at most: the guest pass's whole byte budget (4 MiB) in nodes.
MAX_TREE_BYTES = 4 * MIB
#: Tree ids and trees' root lookups kept (each a few integers).
MAX_CACHED_TREES = 64
MAX_CACHED_CHUNKS = 256
#: Decompressed extents kept (each at most 128 KiB): a file read in pieces decompresses once.
MAX_CACHED_EXTENTS = 8
#: Tree blocks kept read and checked (each a node, at most 64 KiB; 512 KiB of 16 KiB nodes): every
#: lookup walks from a root, through the same few blocks near it.
MAX_CACHED_BLOCKS = 32

# objectids and item types (btrfs_tree.h)
BTRFS_ROOT_TREE_OBJECTID = 1
BTRFS_CHUNK_TREE_OBJECTID = 3
BTRFS_FS_TREE_OBJECTID = 5
BTRFS_ROOT_TREE_DIR_OBJECTID = 6
BTRFS_FIRST_CHUNK_TREE_OBJECTID = 256
BTRFS_INODE_ITEM_KEY = 1
BTRFS_DIR_ITEM_KEY = 84
BTRFS_DIR_INDEX_KEY = 96
BTRFS_EXTENT_DATA_KEY = 108
BTRFS_ROOT_ITEM_KEY = 132
BTRFS_CHUNK_ITEM_KEY = 228
MAX_KEY_OFFSET = (1 << 64) - 1

# --- Chunks (spec "Chunk tree": btrfs_chunk, btrfs_stripe) --------------------------------------


class BtrfsChunk(LittleEndianStructure):
    """A chunk: `length` bytes of logical space from its key's offset, on `num_stripes` stripes."""

    length: int = u64()
    owner: int = u64()
    stripe_len: int = u64()
    type: int = u64()
    io_align: int = u32()
    io_width: int = u32()
    sector_size: int = u32()
    num_stripes: int = u16()
    sub_stripes: int = u16()


class BtrfsStripe(LittleEndianStructure):
    """Where a chunk's stripe lies: a device and the byte offset on it."""

    devid: int = u64()
    offset: int = u64()
    dev_uuid: bytes = chars(16)


#: tree-checker.c btrfs_check_chunk_valid: every chunk's stripe_len is BTRFS_STRIPE_LEN.
BTRFS_STRIPE_LEN = 64 * KIB
#: btrfs_chunk.type profile bit numbers (BTRFS_BLOCK_GROUP_*); no profile bit is SINGLE.
RAID0_BIT = 3
RAID1_BIT = 4
DUP_BIT = 5
RAID10_BIT = 6
RAID5_BIT = 7
RAID6_BIT = 8
RAID1C3_BIT = 9
RAID1C4_BIT = 10
BTRFS_BLOCK_GROUP_RAID0 = 1 << RAID0_BIT
BTRFS_BLOCK_GROUP_RAID1 = 1 << RAID1_BIT
BTRFS_BLOCK_GROUP_DUP = 1 << DUP_BIT
BTRFS_BLOCK_GROUP_RAID10 = 1 << RAID10_BIT
BTRFS_BLOCK_GROUP_RAID5 = 1 << RAID5_BIT
BTRFS_BLOCK_GROUP_RAID6 = 1 << RAID6_BIT
BTRFS_BLOCK_GROUP_RAID1C3 = 1 << RAID1C3_BIT
BTRFS_BLOCK_GROUP_RAID1C4 = 1 << RAID1C4_BIT
#: Profiles whose every stripe holds all the data: any stripe on this device will do.
MIRRORED = (
    BTRFS_BLOCK_GROUP_DUP | BTRFS_BLOCK_GROUP_RAID1 | BTRFS_BLOCK_GROUP_RAID1C3 | BTRFS_BLOCK_GROUP_RAID1C4
)
STRIPED = BTRFS_BLOCK_GROUP_RAID0 | BTRFS_BLOCK_GROUP_RAID10
PARITY = BTRFS_BLOCK_GROUP_RAID5 | BTRFS_BLOCK_GROUP_RAID6
PROFILE_MASK = MIRRORED | STRIPED | PARITY

# --- Items of the file trees (spec "Item types") -------------------------------------------------


class BtrfsRootItem(LittleEndianStructure):
    """A tree's root in the root tree, through `level` (the oldest item size, 239 bytes)."""

    inode: bytes = chars(160)
    generation: int = u64()
    root_dirid: int = u64()
    bytenr: int = u64()
    byte_limit: int = u64()
    bytes_used: int = u64()
    last_snapshot: int = u64()
    flags: int = u64()
    refs: int = u32()
    drop_progress: bytes = chars(17)
    drop_level: int = u8()
    level: int = u8()


class BtrfsInodeItem(LittleEndianStructure):
    """An inode (btrfs_timespec times kept as bytes: not read)."""

    generation: int = u64()
    transid: int = u64()
    size: int = u64()
    nbytes: int = u64()
    block_group: int = u64()
    nlink: int = u32()
    uid: int = u32()
    gid: int = u32()
    mode: int = u32()
    rdev: int = u64()
    flags: int = u64()
    sequence: int = u64()
    reserved: None = pad(32)
    atime: bytes = chars(12)
    ctime: bytes = chars(12)
    mtime: bytes = chars(12)
    otime: bytes = chars(12)


class BtrfsDirItem(LittleEndianStructure):
    """A directory entry (DIR_ITEM and DIR_INDEX items): the location key (inlined, prefixed
    `location_`) of the inode or subvolume it names; the name follows, then `data_len` bytes."""

    location_objectid: int = u64()
    location_type: int = u8()
    location_offset: int = u64()
    transid: int = u64()
    data_len: int = u16()
    name_len: int = u16()
    type: int = u8()


#: BTRFS_NAME_LEN.
BTRFS_NAME_LEN = 255


class BtrfsFileExtentItem(LittleEndianStructure):
    """A file extent's start (struct btrfs_file_extent_item up to disk_bytenr): an inline
    extent's data follows it (BTRFS_FILE_EXTENT_INLINE_DATA_START); a regular or preallocated
    one continues with `BtrfsFileExtentDisk`."""

    generation: int = u64()
    ram_bytes: int = u64()
    compression: int = u8()
    encryption: int = u8()
    other_encoding: int = u16()
    type: int = u8()


class BtrfsFileExtentDisk(LittleEndianStructure):
    """The rest of struct btrfs_file_extent_item: the extent on disk (logical addresses) and the
    part of it (`offset`, `num_bytes`, in its uncompressed bytes) the file uses."""

    disk_bytenr: int = u64()
    disk_num_bytes: int = u64()
    offset: int = u64()
    num_bytes: int = u64()


BTRFS_FILE_EXTENT_INLINE = 0
BTRFS_FILE_EXTENT_REG = 1
BTRFS_FILE_EXTENT_PREALLOC = 2
BTRFS_COMPRESS_NONE = 0
BTRFS_COMPRESS_ZLIB = 1
BTRFS_COMPRESS_LZO = 2
BTRFS_COMPRESS_ZSTD = 3
#: compression.h: a compressed extent holds at most 128 KiB, before and after compression.
BTRFS_MAX_COMPRESSED = 128 * KIB
BTRFS_MAX_UNCOMPRESSED = 128 * KIB
#: zstd.c ZSTD_BTRFS_MAX_WINDOWLOG: the kernel decompresses windows of at most 128 KiB.
ZSTD_BTRFS_MAX_WINDOW = 1 << 17
#: zstd input fed at once: a zstd block takes at least 4 bytes (an RLE block) for at most 128 KiB
#: out, so one call yields at most 2 MiB however hostile the frame.
ZSTD_FEED = 64
#: The mode's file type (S_IFMT) and the types read.
S_IFMT = 0o170000
KINDS = {0o040000: Kind.DIRECTORY, 0o100000: Kind.FILE, 0o120000: Kind.SYMLINK}

Key = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk's logical range and how it lies on the devices."""

    start: int
    chunk: BtrfsChunk
    stripes: tuple[BtrfsStripe, ...]


@dataclass(frozen=True, slots=True)
class Tree:
    """A tree's root block, its level, and (for file trees) its top directory's inode."""

    id: int
    bytenr: int
    level: int
    root_dirid: int = 0


def _corrupt(message: str) -> CorruptFilesystem:
    return CorruptFilesystem(NAME, message)


def _not_read(message: str) -> ImageError:
    from introspect.safety import GUEST_NOT_READ

    return ImageError(GUEST_NOT_READ, f"{NAME}: {message}")


def _unsupported(message: str) -> ImageError:
    from introspect.safety import GUEST_UNSUPPORTED_VOLUME

    return ImageError(GUEST_UNSUPPORTED_VOLUME, f"{NAME}: {message}")


def name_hash(name: bytes) -> int:
    """btrfs_name_hash: crc32c seeded with ~1, without the final inversion (the DIR_ITEM key's offset)."""
    import google_crc32c  # here: a guest without Btrfs need not load it

    return ~int(google_crc32c.extend(1, name)) & 0xFFFFFFFF


def _check_superblock(sb: BtrfsSuperBlock) -> None:
    """What every address and clamp below is computed from, as btrfs_validate_super checks it."""
    if not (
        sb.sectorsize & (sb.sectorsize - 1) == 0
        and BTRFS_MIN_SECTORSIZE <= sb.sectorsize <= BTRFS_MAX_METADATA_BLOCKSIZE
    ):
        raise _corrupt(f"sector size {sb.sectorsize} is not a power of 2 from 4 KiB to 64 KiB")
    if not (
        sb.nodesize & (sb.nodesize - 1) == 0 and sb.sectorsize <= sb.nodesize <= BTRFS_MAX_METADATA_BLOCKSIZE
    ):
        raise _corrupt(f"node size {sb.nodesize} is not a power of 2 from the sector size to 64 KiB")
    if sb.sys_chunk_array_size > BTRFS_SYSTEM_CHUNK_ARRAY_SIZE:
        raise _corrupt(
            f"sys_chunk_array_size {sb.sys_chunk_array_size} is over {BTRFS_SYSTEM_CHUNK_ARRAY_SIZE}"
        )
    if sb.root_level >= BTRFS_MAX_LEVEL or sb.chunk_root_level >= BTRFS_MAX_LEVEL:
        raise _corrupt(
            f"root levels {sb.root_level} and {sb.chunk_root_level} (at most {BTRFS_MAX_LEVEL - 1})"
        )
    if refused := sb.incompat_flags & ~INCOMPAT_READ:
        names = [INCOMPAT_NAMES.get(bit, f"bit {bit}") for bit in range(64) if refused >> bit & 1]
        raise _unsupported(f"incompatible features this reader does not read: {', '.join(names)}")


def _chunk(start: int, data: bytes, offset: int, what: str) -> tuple[Chunk, int]:
    """The chunk at `offset` of `data` (the sys_chunk_array or a chunk item), and its size."""
    if offset + BtrfsChunk.SIZE > len(data):
        raise _corrupt(f"{what} is cut short")
    chunk = BtrfsChunk.unpack(data, offset)
    size = BtrfsChunk.SIZE + chunk.num_stripes * BtrfsStripe.SIZE
    if chunk.num_stripes == 0 or offset + size > len(data):
        raise _corrupt(f"{what} has {chunk.num_stripes} stripes, more than it holds")
    if chunk.length == 0 or chunk.stripe_len != BTRFS_STRIPE_LEN:
        raise _corrupt(f"{what} is {chunk.length} bytes in stripes of {chunk.stripe_len}")
    stripes = tuple(unpack_array(BtrfsStripe, data, chunk.num_stripes, offset + BtrfsChunk.SIZE))
    return Chunk(start, chunk, stripes), size


class Btrfs:
    """A Btrfs filesystem opened on a volume (see the module docstring). Besides the contract:
    `checksum`, the checksum type the superblock names (recorded, not verified), and
    `default_subvolume`, the id of the tree `root()` is the top of. A node's id is (tree, inode)."""

    name = NAME
    case_sensitive = True

    def __init__(self, disk: Disk, sb: BtrfsSuperBlock) -> None:
        self.disk = disk
        self.sb = sb
        self.label = c_string(sb.label) or None
        self.uuid: str | None = uuid_be(sb.fsid)
        self.checksum = CSUM_TYPES.get(sb.csum_type, f"unknown ({sb.csum_type})")
        self.nodesize = sb.nodesize
        self._system = self._system_chunks()
        self._chunks: Lru[int, Chunk] = Lru(MAX_CACHED_CHUNKS)
        self._in_chunk_tree = False
        self._trees: Lru[int, Tree] = Lru(MAX_CACHED_TREES)
        self._extents: Lru[tuple[int, int, int], bytes] = Lru(MAX_CACHED_EXTENTS)
        self._blocks: Lru[tuple[int, int], tuple[bytes, int]] = Lru(MAX_CACHED_BLOCKS)
        self.chunk_tree = Tree(BTRFS_CHUNK_TREE_OBJECTID, sb.chunk_root, sb.chunk_root_level)
        self.root_tree = Tree(BTRFS_ROOT_TREE_OBJECTID, sb.root, sb.root_level)
        self.default_subvolume = self._default_subvolume()

    # --- the Filesystem contract ---

    def root(self) -> Node:
        tree = self._tree(self.default_subvolume)
        return self._inode_node(tree.id, tree.root_dirid)

    def lookup(self, directory: Node, name: str) -> Node | None:
        tree_id, ino = _ids(directory)
        wanted = name.encode("utf-8", "surrogateescape")
        if not wanted or len(wanted) > BTRFS_NAME_LEN:
            return None
        key = (ino, BTRFS_DIR_ITEM_KEY, name_hash(wanted))
        data = self._find(self._tree(tree_id), key)
        if data is None:
            return None
        for item, entry in _dir_items(data, f"directory {ino}'s entry"):
            if entry == wanted:
                if item.location_type == BTRFS_INODE_ITEM_KEY:
                    return self._inode_node(tree_id, item.location_objectid)
                if item.location_type == BTRFS_ROOT_ITEM_KEY:
                    subvolume = self._tree(item.location_objectid)
                    return self._inode_node(subvolume.id, subvolume.root_dirid)
                raise _corrupt(
                    f"directory {ino}'s entry {name!r} points at a key of type {item.location_type}"
                )
        return None

    def read(self, node: Node, offset: int, length: int) -> bytes:
        tree_id, ino = _ids(node)
        size = self._inode(tree_id, ino).size
        length = max(0, min(length, size - offset))
        if length == 0 or offset < 0:
            return b""
        end = offset + length
        out = bytearray(length)
        tree = self._tree(tree_id)
        for key, data in self._items(tree, (ino, BTRFS_EXTENT_DATA_KEY, offset)):
            if key > (ino, BTRFS_EXTENT_DATA_KEY, end - 1):
                break
            if key[:2] != (ino, BTRFS_EXTENT_DATA_KEY):
                continue
            self._extent_into(out, offset, key[2], data, f"inode {ino} of tree {tree_id} at {key[2]}")
        return bytes(out)

    def readlink(self, node: Node) -> str:
        tree_id, ino = _ids(node)
        inode = self._inode(tree_id, ino)
        if not 0 < inode.size <= MAX_LINK_TARGET:
            raise _corrupt(f"symbolic link {ino} of tree {tree_id} is {inode.size} bytes long")
        return self.read(node, 0, inode.size).decode("utf-8", "surrogateescape")

    def list(self, directory: Node, limit: int) -> list[str]:
        tree_id, ino = _ids(directory)
        names: list[str] = []
        if limit <= 0:
            return names
        start = (ino, BTRFS_DIR_INDEX_KEY, 0)
        for key, data in self._items(self._tree(tree_id), start):
            if key < start:
                continue
            if key[:2] != start[:2]:
                break
            for _, entry in _dir_items(data, f"directory {ino}'s index entry"):
                names.append(entry.decode("utf-8", "replace"))
                break
            if len(names) >= limit:
                break
        return names

    # --- inodes and trees ---

    def _inode(self, tree_id: int, ino: int) -> BtrfsInodeItem:
        data = self._find(self._tree(tree_id), (ino, BTRFS_INODE_ITEM_KEY, 0))
        if data is None:
            raise _corrupt(f"inode {ino} of tree {tree_id} has no inode item")
        if len(data) < BtrfsInodeItem.SIZE:
            raise _corrupt(f"inode {ino} of tree {tree_id}: its item is {len(data)} bytes")
        return BtrfsInodeItem.unpack(data, 0)

    def _inode_node(self, tree_id: int, ino: int) -> Node:
        inode = self._inode(tree_id, ino)
        return Node((tree_id, ino), KINDS.get(inode.mode & S_IFMT, Kind.OTHER), inode.size)

    def _tree(self, tree_id: int) -> Tree:
        """A tree's root, from its ROOT_ITEM in the root tree (the latest one: a snapshot's key
        offset is its transaction)."""
        tree = self._trees.get(tree_id)
        if tree is not None:
            return tree
        found = None
        for key, data in self._items(self.root_tree, (tree_id, BTRFS_ROOT_ITEM_KEY, MAX_KEY_OFFSET)):
            if key[:2] == (tree_id, BTRFS_ROOT_ITEM_KEY):
                found = data
            break
        if found is None:
            raise _corrupt(f"tree {tree_id} has no root item")
        if len(found) < BtrfsRootItem.SIZE:
            raise _corrupt(f"tree {tree_id}'s root item is {len(found)} bytes")
        item = BtrfsRootItem.unpack(found, 0)
        if item.level >= BTRFS_MAX_LEVEL:
            raise _corrupt(f"tree {tree_id}'s root is at level {item.level}")
        tree = Tree(tree_id, item.bytenr, item.level, item.root_dirid)
        self._trees.put(tree_id, tree)
        return tree

    def _default_subvolume(self) -> int:
        """The subvolume mounted without `subvol=`: the root tree directory's "default" entry,
        else the FS tree."""
        wanted = b"default"
        data = self._find(
            self.root_tree, (BTRFS_ROOT_TREE_DIR_OBJECTID, BTRFS_DIR_ITEM_KEY, name_hash(wanted))
        )
        for item, entry in _dir_items(data or b"", "the default subvolume's entry"):
            if entry == wanted and item.location_type == BTRFS_ROOT_ITEM_KEY:
                return item.location_objectid
        return BTRFS_FS_TREE_OBJECTID

    # --- tree walks ---

    def _find(self, tree: Tree, key: Key) -> bytes | None:
        """The data of the item with exactly `key`, or None."""
        for found, data in self._items(tree, key):
            return data if found == key else None
        return None

    def _items(self, tree: Tree, start: Key) -> Iterator[tuple[Key, bytes]]:
        """The items of `tree` in key order from the last one at or before `start` (or the first
        one), each block found by binary search and checked, every block visited once."""
        walk = _Walk(tree.id, max(1, MAX_TREE_BYTES // self.nodesize))
        # (block, its item count, the slot taken) from the root down
        path: list[tuple[bytes, int, int]] = []
        block, count = self._block(tree.bytenr, tree.level, walk)
        level = tree.level
        while True:
            slot = _floor(block, count, level, start)
            path.append((block, count, slot))
            if level == 0:
                break
            child = BtrfsKeyPtr.unpack(block, BtrfsHeader.SIZE + slot * BtrfsKeyPtr.SIZE)
            level -= 1
            block, count = self._block(child.blockptr, level, walk)
        while path:
            block, count, slot = path.pop()
            for index in range(slot, count):
                item = BtrfsItem.unpack(block, BtrfsHeader.SIZE + index * BtrfsItem.SIZE)
                at = BtrfsHeader.SIZE + item.offset
                if at + item.size > len(block) or at < BtrfsHeader.SIZE + count * BtrfsItem.SIZE:
                    raise _corrupt(f"a leaf of tree {tree.id} at {tree.bytenr} has an item outside its data")
                yield (item.key_objectid, item.key_type, item.key_offset), block[at : at + item.size]
            # Up to the nearest node with a next child, then down its leftmost edge.
            while path and path[-1][2] + 1 >= path[-1][1]:
                path.pop()
            if not path:
                return
            node, node_count, node_slot = path.pop()
            path.append((node, node_count, node_slot + 1))
            level = tree.level - len(path)
            pointer = BtrfsKeyPtr.unpack(node, BtrfsHeader.SIZE + (node_slot + 1) * BtrfsKeyPtr.SIZE)
            block, count = self._block(pointer.blockptr, level, walk)
            while level > 0:
                path.append((block, count, 0))
                pointer = BtrfsKeyPtr.unpack(block, BtrfsHeader.SIZE)
                level -= 1
                block, count = self._block(pointer.blockptr, level, walk)
            path.append((block, count, 0))

    def _block(self, bytenr: int, level: int, walk: _Walk) -> tuple[bytes, int]:
        """A tree block, checked: where it says it is, its level, its item count (kept, by its
        address and level, for the next walk through it)."""
        walk.visit(bytenr)
        return self._blocks.get_or_make((bytenr, level), lambda: self._read_block(bytenr, level, walk.tree))

    def _read_block(self, bytenr: int, level: int, tree: int) -> tuple[bytes, int]:
        data = self._read_logical(bytenr, self.nodesize, f"tree {tree} block at {bytenr}")
        header = BtrfsHeader.unpack(data, 0)
        entry = BtrfsItem.SIZE if level == 0 else BtrfsKeyPtr.SIZE
        room = (self.nodesize - BtrfsHeader.SIZE) // entry
        if header.bytenr != bytenr or header.level != level:
            raise _corrupt(
                f"tree {tree} block at {bytenr} says it is at {header.bytenr}, level {header.level} "
                f"(expected level {level})"
            )
        if header.nritems > room or (level > 0 and header.nritems == 0):
            raise _corrupt(f"tree {tree} block at {bytenr} counts {header.nritems} items (room for {room})")
        return data, header.nritems

    # --- logical addresses ---

    def _system_chunks(self) -> builtins.list[Chunk]:
        """The bootstrap chunks in the superblock's sys_chunk_array: (key, chunk) pairs."""
        array = self.sb.sys_chunk_array[: self.sb.sys_chunk_array_size]
        chunks: list[Chunk] = []
        position = 0
        while position < len(array):
            if position + BtrfsDiskKey.SIZE > len(array):
                raise _corrupt("the sys_chunk_array ends inside a key")
            key = BtrfsDiskKey.unpack(array, position)
            if key.type != BTRFS_CHUNK_ITEM_KEY:
                raise _corrupt(f"the sys_chunk_array holds a key of type {key.type}")
            chunk, size = _chunk(key.offset, array, position + BtrfsDiskKey.SIZE, "a sys_chunk_array chunk")
            chunks.append(chunk)
            position += BtrfsDiskKey.SIZE + size
        return chunks

    def _chunk_of(self, logical: int) -> Chunk:
        """The chunk holding logical address `logical`: a bootstrap chunk, a cached one, or the
        chunk tree's item at or before it (chunk tree blocks themselves lie in bootstrap chunks)."""
        for chunk in self._system:
            if chunk.start <= logical < chunk.start + chunk.chunk.length:
                return chunk
        cached = self._chunks.find(lambda chunk: chunk.start <= logical < chunk.start + chunk.chunk.length)
        if cached is not None:
            return cached
        if self._in_chunk_tree:
            raise _corrupt(f"the chunk tree block at {logical} is in no bootstrap chunk")
        self._in_chunk_tree = True
        try:
            found = None
            key = (BTRFS_FIRST_CHUNK_TREE_OBJECTID, BTRFS_CHUNK_ITEM_KEY, logical)
            for found_key, data in self._items(self.chunk_tree, key):
                if found_key[:2] == key[:2] and found_key[2] <= logical:
                    found = _chunk(found_key[2], data, 0, f"the chunk item at {found_key[2]}")[0]
                break
        finally:
            self._in_chunk_tree = False
        if found is None or not found.start <= logical < found.start + found.chunk.length:
            raise _corrupt(f"logical address {logical} is in no chunk")
        self._chunks.put(found.start, found)
        return found

    def _read_logical(self, logical: int, length: int, what: str) -> bytes:
        """`length` bytes from logical address `logical`, through the chunks, from this device."""
        pieces: list[bytes] = []
        while length > 0:
            chunk = self._chunk_of(logical)
            physical, size = self._physical(chunk, logical, length, what)
            pieces.append(self.disk.read(physical, size, what))
            logical += size
            length -= size
        return b"".join(pieces)

    def _physical(self, chunk: Chunk, logical: int, length: int, what: str) -> tuple[int, int]:
        """Where on this device `logical` lies, and how many of the `length` bytes from it follow
        contiguously (to the chunk's end, or its stripe's)."""
        profile = chunk.chunk.type & PROFILE_MASK
        offset = logical - chunk.start
        size = min(length, chunk.chunk.length - offset)
        ours = self.sb.dev_item_devid
        if profile & PARITY:
            raise _unsupported(f"the {what} lies in a RAID5/6 chunk at {chunk.start}: not read")
        if not profile & STRIPED:  # SINGLE, DUP, RAID1, RAID1C3, RAID1C4: any stripe here has it all
            for stripe in chunk.stripes:
                if stripe.devid == ours:
                    return stripe.offset + offset, size
            raise _unsupported(f"the {what} lies on another device of this filesystem: not read")
        stripe_len = chunk.chunk.stripe_len
        stripe_nr, within = divmod(offset, stripe_len)
        size = min(size, stripe_len - within)
        copies = chunk.chunk.sub_stripes if profile & BTRFS_BLOCK_GROUP_RAID10 else 1
        if copies == 0 or chunk.chunk.num_stripes % copies:
            raise _corrupt(
                f"the RAID10 chunk at {chunk.start} has {chunk.chunk.num_stripes} stripes in sets of {copies}"
            )
        columns = chunk.chunk.num_stripes // copies
        row, column = divmod(stripe_nr, columns)
        for stripe in chunk.stripes[column * copies : (column + 1) * copies]:
            if stripe.devid == ours:
                return stripe.offset + row * stripe_len + within, size
        raise _unsupported(f"the {what} lies on a stripe on another device of this filesystem: not read")

    # --- file extents ---

    def _extent_into(self, out: bytearray, offset: int, file_pos: int, data: bytes, what: str) -> None:
        """Copy what the extent item `data` (at file offset `file_pos`) holds of the `len(out)`
        bytes from `offset` into `out`; holes and preallocated extents stay zeros."""
        if len(data) < BtrfsFileExtentItem.SIZE:
            raise _corrupt(f"the extent of {what} is {len(data)} bytes")
        item = BtrfsFileExtentItem.unpack(data, 0)
        if item.encryption or item.other_encoding:
            raise _not_read(f"the extent of {what} is encrypted or encoded: not read")
        if item.type == BTRFS_FILE_EXTENT_INLINE:
            inline = data[BtrfsFileExtentItem.SIZE :]
            if item.compression != BTRFS_COMPRESS_NONE:
                inline = self._decompress(item.compression, inline, item.ram_bytes, what)
            _copy(out, offset, file_pos, inline)
            return
        if item.type not in (BTRFS_FILE_EXTENT_REG, BTRFS_FILE_EXTENT_PREALLOC):
            raise _corrupt(f"the extent of {what} has type {item.type}")
        if len(data) < BtrfsFileExtentItem.SIZE + BtrfsFileExtentDisk.SIZE:
            raise _corrupt(f"the extent of {what} is {len(data)} bytes")
        disk = BtrfsFileExtentDisk.unpack(data, BtrfsFileExtentItem.SIZE)
        if item.type == BTRFS_FILE_EXTENT_PREALLOC or disk.disk_bytenr == 0:
            return
        start = max(offset, file_pos)
        stop = min(offset + len(out), file_pos + disk.num_bytes)
        if start >= stop:
            return
        if item.compression == BTRFS_COMPRESS_NONE:
            source = disk.disk_bytenr + disk.offset + start - file_pos
            out[start - offset : stop - offset] = self._read_logical(source, stop - start, f"data of {what}")
            return
        if disk.disk_num_bytes > BTRFS_MAX_COMPRESSED or item.ram_bytes > BTRFS_MAX_UNCOMPRESSED:
            raise _corrupt(
                f"the compressed extent of {what} is {disk.disk_num_bytes} bytes for {item.ram_bytes} "
                f"(at most {BTRFS_MAX_COMPRESSED} and {BTRFS_MAX_UNCOMPRESSED})"
            )
        cached = (disk.disk_bytenr, disk.disk_num_bytes, item.compression)
        plain = self._extents.get(cached)
        if plain is None:
            packed = self._read_logical(disk.disk_bytenr, disk.disk_num_bytes, f"compressed data of {what}")
            plain = self._decompress(item.compression, packed, item.ram_bytes, what)
            self._extents.put(cached, plain)
        _copy(out, offset, file_pos, plain[disk.offset : disk.offset + disk.num_bytes])

    def _decompress(self, compression: int, packed: bytes, ram_bytes: int, what: str) -> bytes:
        """At most `ram_bytes` (at most `BTRFS_MAX_UNCOMPRESSED`) of an extent's data."""
        limit = min(ram_bytes, BTRFS_MAX_UNCOMPRESSED)
        try:
            if compression == BTRFS_COMPRESS_ZLIB:
                return zlib.decompressobj().decompress(packed, limit)
            if compression == BTRFS_COMPRESS_ZSTD:
                return _unzstd(packed, limit)
        except (zlib.error, zstandard.ZstdError) as error:
            raise _corrupt(f"the compressed extent of {what} does not decompress: {error}") from None
        if compression == BTRFS_COMPRESS_LZO:
            raise _not_read(f"the extent of {what} is lzo-compressed, which this reader does not decompress")
        raise _corrupt(f"the extent of {what} has compression type {compression}")


class _Walk:
    """One walk of a tree: the blocks visited (a second visit is a loop), at most `limit`."""

    def __init__(self, tree: int, limit: int) -> None:
        self.tree = tree
        self.limit = limit
        self.visited: set[int] = set()

    def visit(self, bytenr: int) -> None:
        if bytenr in self.visited:
            raise LoopDetected(f"btrfs tree {self.tree} (block {bytenr} twice)")
        if len(self.visited) >= self.limit:
            raise BudgetExceeded(
                f"btrfs tree {self.tree}", limit=f"at most {MAX_TREE_BYTES} bytes of tree blocks"
            )
        self.visited.add(bytenr)


def _floor(block: bytes, count: int, level: int, key: Key) -> int:
    """Binary search: the last slot of the block whose key is at or before `key` (0 if none)."""
    kind = BtrfsItem if level == 0 else BtrfsKeyPtr
    low, high = 0, count  # the answer's slot + 1 lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        entry = kind.unpack(block, BtrfsHeader.SIZE + middle * kind.SIZE)
        if (entry.key_objectid, entry.key_type, entry.key_offset) <= key:
            low = middle + 1
        else:
            high = middle
    return max(0, low - 1)


def _dir_items(data: bytes, what: str) -> Iterator[tuple[BtrfsDirItem, bytes]]:
    """The entries packed in one DIR_ITEM or DIR_INDEX item (names whose hashes collide share one)."""
    position = 0
    while position < len(data):
        if position + BtrfsDirItem.SIZE > len(data):
            raise _corrupt(f"{what} is cut short")
        item = BtrfsDirItem.unpack(data, position)
        name_at = position + BtrfsDirItem.SIZE
        position = name_at + item.name_len + item.data_len
        if item.name_len == 0 or item.name_len > BTRFS_NAME_LEN or position > len(data):
            raise _corrupt(f"{what} has a name of {item.name_len} bytes and {item.data_len} bytes of data")
        yield item, data[name_at : name_at + item.name_len]


def _copy(out: bytearray, offset: int, file_pos: int, data: bytes) -> None:
    """Copy the part of `data` (file bytes from `file_pos`) that falls in `out` (from `offset`)."""
    start = max(offset, file_pos)
    stop = min(offset + len(out), file_pos + len(data))
    if start < stop:
        out[start - offset : stop - offset] = data[start - file_pos : stop - file_pos]


def _unzstd(packed: bytes, limit: int) -> bytes:
    """One zstd frame, at most `limit` bytes of it. The frame's content size is not trusted (a
    one-shot decompress allocates it), and the zero padding after the frame up to the sector is
    never read as another frame: the frame is fed `ZSTD_FEED` bytes at a time until it ends or
    `limit` bytes are out."""
    decoder = zstandard.ZstdDecompressor(max_window_size=ZSTD_BTRFS_MAX_WINDOW).decompressobj()
    out = bytearray()
    position = 0
    while len(out) < limit and position < len(packed) and not decoder.eof:
        out += decoder.decompress(packed[position : position + ZSTD_FEED])
        position += ZSTD_FEED
    return bytes(out[:limit])


def _ids(node: Node) -> tuple[int, int]:
    """A node's (tree, inode)."""
    match node.id:
        case (int() as tree_id, int() as ino):
            return tree_id, ino
    raise TypeError(f"not a btrfs node: {node!r}")


def probe(disk: Disk) -> bool:
    """Is there a Btrfs superblock at 64 KiB?"""
    magic_at = BTRFS_SUPER_INFO_OFFSET + BtrfsSuperBlock.offset_of("magic")
    return disk.size >= BTRFS_SUPER_INFO_OFFSET + BtrfsSuperBlock.SIZE and (
        disk.read(magic_at, len(BTRFS_MAGIC), "btrfs superblock magic") == BTRFS_MAGIC
    )


def open_btrfs(disk: Disk) -> Btrfs:
    """The Btrfs filesystem on `disk`: its superblock checked, its default subvolume found."""
    sb = BtrfsSuperBlock.read(disk, "btrfs superblock")
    if sb.magic != BTRFS_MAGIC:
        raise _corrupt(f"superblock magic {sb.magic!r}")
    _check_superblock(sb)
    return Btrfs(disk, sb)


FILESYSTEM = FilesystemType(name=NAME, probe=probe, open=open_btrfs)
