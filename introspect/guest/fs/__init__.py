"""The filesystems the guest layer reads, and `identify` for those it only names.

Adding a filesystem is one module exporting `FILESYSTEM` (see `introspect.guest.fs.base`) plus
its entry in `TYPES`.
"""

from __future__ import annotations

from introspect.guest.disk import Disk
from introspect.guest.fs import btrfs, fat, iso9660, ntfs, xfs
from introspect.guest.fs.base import Filesystem, FilesystemType

#: The filesystems read, probed in this order: those whose signature is in the first sector
#: first (a probe costs one cached block), ISO 9660 last (a hybrid ISO's partitions are read first).
TYPES: tuple[FilesystemType, ...] = (
    fat.FILESYSTEM,
    ntfs.FILESYSTEM,
    xfs.FILESYSTEM,
    btrfs.FILESYSTEM,
    iso9660.FILESYSTEM,
)


def open_filesystem(disk: Disk) -> Filesystem | None:
    """The first filesystem in `TYPES` whose probe claims the volume, opened; None when none does."""
    for kind in TYPES:
        if kind.probe(disk):
            return kind.open(disk)
    return None


def identify(disk: Disk) -> str | None:
    """What blkid would call a volume no filesystem here reads (swap, LVM2_member, crypto_LUKS,
    zfs_member, ReFS, ufs...), from its signature; None when nothing is recognised."""
    raise NotImplementedError
