"""The filesystem registry: each entry's signatures are its module's own constants, and a volume
imports the reader of its filesystem only (and FAT's for a volume whose first sector ends in the
boot signature 0x55 0xAA, as an NTFS one does: FAT is asked first)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from introspect.formats.iso import (
    SECTOR_SIZE,
    STANDARD_IDENTIFIER,
    VOLUME_DESCRIPTOR_SET_SECTOR,
    VolumeDescriptor,
)
from introspect.guest.fs import REGISTERED, btrfs, ext, fat, ntfs, xfs
from tests.conftest import ROOT, fixture_group

#: Each module's signature as its own constants and structures place it.
OWN_SIGNATURES = {
    "vfat": {
        (fat.SIGNATURE_OFFSET, fat.SIGNATURE),
        *(
            (extension.OFFSET + extension.offset_of("BS_FilSysType"), word)
            for extension in (fat.Fat16Extension, fat.Fat32Extension)
            for word in {kind.rstrip(b" ").rstrip(b"0123456789") for kind in fat.FILESYSTEM_TYPES}
        ),
    },
    "ntfs": {(ntfs.NtfsBootSector.offset_of("oem_id"), ntfs.OEM_ID)},
    "xfs": {(xfs.XfsDsb.offset_of("sb_magicnum"), xfs.XFS_SB_MAGIC)},
    "ext": {(ext.MAGIC_OFFSET, ext.EXT4_SUPER_MAGIC.to_bytes(2, "little"))},
    "btrfs": {(btrfs.BTRFS_SUPER_INFO_OFFSET + btrfs.BtrfsSuperBlock.offset_of("magic"), btrfs.BTRFS_MAGIC)},
    "iso9660": {
        (
            VOLUME_DESCRIPTOR_SET_SECTOR * SECTOR_SIZE + VolumeDescriptor.offset_of("standard_identifier"),
            STANDARD_IDENTIFIER,
        )
    },
}


def test_each_signature_is_its_module_s_own():
    assert {entry.name: set(entry.signatures) for entry in REGISTERED} == OWN_SIGNATURES
    assert {entry.name: entry.load().name for entry in REGISTERED} == {name: name for name in OWN_SIGNATURES}


@pytest.mark.parametrize(
    ("group", "name", "imported"),
    [
        ("volext4", "ext2-4k.img", ["base", "ext"]),
        ("fatntfsiso", "fat16.img", ["base", "fat"]),
        ("fatntfsiso", "ntfs.img", ["base", "fat", "ntfs"]),
    ],
)
def test_a_volume_imports_the_reader_of_its_filesystem_only(group, name, imported):
    """mkfs's volume, opened in a new process: the fs modules loaded are its own, and FAT's
    (asked first) when its boot sector ends in 0x55 0xAA."""
    path = fixture_group(group) / name
    code = f"""
import sys
from introspect.guest.disk import Disk
from introspect.guest.fs import open_filesystem
from introspect.sources import FileSource, Reader
from introspect.formats.raw import FORMAT
with FileSource({str(path)!r}) as source:
    reader = Reader(source)
    fs = open_filesystem(Disk.of(FORMAT.guest(reader, None), "/dev/sda"))
    print(fs.name)
print(" ".join(sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("introspect.guest.fs."))))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    found, modules = result.stdout.splitlines()
    blkid = dict(line.split("=", 1) for line in (path.parent / f"{name}.blkid.txt").read_text().splitlines())
    assert found == blkid["TYPE"]  # the opened filesystem names itself as blkid does
    assert modules.split() == imported
