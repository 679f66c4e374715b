"""The filesystems the guest layer reads, and `identify` for those it only names.

Adding a filesystem is one module exporting `FILESYSTEM` (see `introspect.guest.fs.base`) plus
its entry in `REGISTERED`, with the signatures every volume it reads carries one of: a module is
imported only when a volume carries its signature, so an image pays for the filesystems it holds
(a blank disk imports none of the readers, an ext4 root the ext reader alone).
"""

from __future__ import annotations

from typing import NamedTuple

from introspect.formats import imported
from introspect.guest.disk import Disk
from introspect.guest.fs.base import Filesystem, FilesystemType


class Registered(NamedTuple):
    """A filesystem `open_filesystem` reads: blkid's name for it, its module under this package,
    and `signatures`, (offset, bytes) of which every volume its probe accepts carries one (its
    module's own constants: tests/guest/fs/test_registry.py checks them)."""

    name: str
    module: str
    signatures: tuple[tuple[int, bytes], ...]

    def load(self) -> FilesystemType:
        filesystem: FilesystemType = imported(f"{__name__}.{self.module}").FILESYSTEM
        return filesystem

    def carried_by(self, disk: Disk) -> bool:
        return any(
            disk.read_upto(offset, len(magic), f"{self.name} signature") == magic
            for offset, magic in self.signatures
        )


# Signatures of the filesystems read here, which `SIGNATURES` below lists too.
_NTFS = (3, b"NTFS    ")  # the boot sector's OEM ID
_XFS = (0, b"XFSB")  # sb_magicnum
_EXT = (0x438, (0xEF53).to_bytes(2, "little"))  # s_magic, in the superblock at 1 KiB
_BTRFS = (0x10040, b"_BHRfS_M")  # the superblock's magic, at 64 KiB
_ISO9660 = (0x8001, b"CD001")  # the first volume descriptor's standard identifier
# A FAT boot sector: its 0x55 0xAA signature, or a type string libblkid accepts without it
# (BS_FilSysType of FAT12/16, at 0x36, or of FAT32, at 0x52: "FAT12   ", "MSDOS"...).
_FAT = ((510, b"\x55\xaa"), *((at, word) for at in (0x36, 0x52) for word in (b"FAT", b"MSDOS", b"MSWIN")))

#: The filesystems read, probed in this order: those whose signature is in the first sector
#: first (a probe costs one cached block), ISO 9660 last (a hybrid ISO's partitions are read first).
REGISTERED: tuple[Registered, ...] = (
    Registered("vfat", "fat", _FAT),
    Registered("ntfs", "ntfs", (_NTFS,)),
    Registered("xfs", "xfs", (_XFS,)),
    Registered("ext", "ext", (_EXT,)),
    Registered("btrfs", "btrfs", (_BTRFS,)),
    Registered("iso9660", "iso9660", (_ISO9660,)),
)


def open_filesystem(disk: Disk) -> Filesystem | None:
    """The first filesystem in `REGISTERED` whose probe claims the volume, opened; None when none
    does. A filesystem's module is imported only for a volume that carries its signature."""
    for entry in REGISTERED:
        if entry.carried_by(disk):
            kind = entry.load()
            if kind.probe(disk):
                return kind.open(disk)
    return None


#: The swap signature ends the first page; blkid looks for it at the end of each page size in use
#: (4, 8, 16, 32 and 64 KiB): mkswap writes it at the end of the page of the machine it ran on.
_PAGE_ENDS = (0x1000, 0x2000, 0x4000, 0x8000, 0x10000)
_UFS_SUPERBLOCKS = (0x2000, 0x10000)  # UFS1 at 8 KiB, UFS2 at 64 KiB (the 256 KiB one is not read)
_UFS_MAGIC_OFFSET = 0x55C  # fs_magic in struct fs
_UFS_MAGICS = (0x00011954, 0x19540119)  # FS_UFS1_MAGIC, FS_UFS2_MAGIC

#: (offset, magic, name) as libblkid's superblocks/*.c probe them, in the order tried; names as
#: `blkid -o export` prints TYPE. Filesystems `REGISTERED` reads are here too: a volume whose superblock
#: is too damaged to open is still named.
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"LUKS\xba\xbe", "crypto_LUKS"),
    *((sector * 0x200 + 0x18, b"LVM2 001", "LVM2_member") for sector in range(4)),
    *((end - 10, magic, "swap") for end in _PAGE_ENDS for magic in (b"SWAPSPACE2", b"SWAP-SPACE")),
    *(
        (end - 10, magic, "swsuspend")
        for end in _PAGE_ENDS
        for magic in (b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND")
    ),
    (*_XFS, "xfs"),
    (*_BTRFS, "btrfs"),
    (*_NTFS, "ntfs"),
    (3, b"EXFAT   ", "exfat"),
    (0x52, b"FAT32   ", "vfat"),
    (0x36, b"FAT16   ", "vfat"),
    (0x36, b"FAT12   ", "vfat"),
    (*_ISO9660, "iso9660"),
    (0, b"\0\0\0ReFS\0", "ReFS"),
    (0x400, b"H+", "hfsplus"),
    (0x400, b"HX", "hfsplus"),
    (0x20, b"NXSB", "apfs"),
    (0, b"hsqs", "squashfs"),
    (0, b"sqsh", "squashfs"),
    (0x1018, bytes.fromhex("c68573f64e1a45ca8265f57f48ba6d81"), "bcache"),
    (0x1000, bytes.fromhex("fc4e2ba9"), "linux_raid_member"),  # md 1.2 superblock, at 4 KiB
    (0, bytes.fromhex("fc4e2ba9"), "linux_raid_member"),  # md 1.1, at the start
    *(
        (superblock + _UFS_MAGIC_OFFSET, magic.to_bytes(4, order), "ufs")
        for superblock in _UFS_SUPERBLOCKS
        for magic in _UFS_MAGICS
        for order in ("little", "big")
    ),
    # ZFS: the uberblock magic (0x00bab10c, in the pool's byte order) in label 0's ring at 128 KiB,
    # in its first slot, which `zpool create` writes.
    (0x20000, (0x00BAB10C).to_bytes(8, "little"), "zfs_member"),
    (0x20000, (0x00BAB10C).to_bytes(8, "big"), "zfs_member"),
)
#: What `identify` reads in one piece: every signature above but ZFS's (68 KiB, one read).
IDENTIFY_HEAD = 0x11000


def identify(disk: Disk) -> str | None:
    """What blkid would call a volume no filesystem here reads (swap, LVM2_member, crypto_LUKS,
    zfs_member, ReFS, ufs...), from its signature; None when nothing is recognised.

    One read of the volume's first IDENTIFY_HEAD bytes (usually already cached in part by the
    probes), and one more of 8 bytes for ZFS when nothing matched before it."""
    head = disk.read_upto(0, IDENTIFY_HEAD, "signatures")
    for offset, magic, name in SIGNATURES:
        if offset + len(magic) <= len(head):
            found = head[offset : offset + len(magic)]
        else:
            found = disk.read_upto(offset, len(magic), "signature")
        if found == magic:
            return name
    return None
