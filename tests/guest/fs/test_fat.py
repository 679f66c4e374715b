"""FAT12, FAT16 and FAT32 made by mkfs.vfat and filled by mtools, against the files put in
(tree/fat), what blkid and fsck.fat said, and mshowfat's cluster chains; then hostile copies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from introspect.errors import ImageError
from introspect.guest import fs as filesystems
from introspect.guest.fs import fat
from introspect.guest.fs.base import CorruptFilesystem, Kind, LoopDetected, list_directory, read_file, resolve
from tests.conftest import fixture_group
from tests.guest.fs.metered import blkid, derived, metered, opened
from tests.tools import recorded, rewrite

BITS = [12, 16, 32]


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("fatntfsiso")


def image(group: Path, bits: int) -> Path:
    return group / f"fat{bits}.img"


def fsck(group: Path, bits: int, pattern: str) -> int:
    """A number from what `fsck.fat -n -v` printed about the boot sector."""
    match = re.search(pattern, recorded(image(group, bits), "fsck.txt"))
    assert match, pattern
    return int(match.group(1))


def chain(group: Path, bits: int) -> list[tuple[int, int]]:
    """frag.bin's cluster runs as mshowfat printed them: <first-last> ..."""
    text = recorded(image(group, bits), "frag.mshowfat.txt")
    return [(int(a), int(b)) for a, b in re.findall(r"<(\d+)-(\d+)>", text)]


def tree_files(group: Path) -> list[Path]:
    """The files put in: all but 98 of /Many's hundred (each costs a scan of /Many)."""
    return sorted(
        p
        for p in (group / "tree" / "fat").rglob("*")
        if p.is_file() and (p.parent.name != "Many" or p.name.endswith(("001.txt", "100.txt")))
    )


@pytest.mark.parametrize("bits", BITS)
def test_names_and_geometry_match_blkid_and_fsck(group: Path, bits: int) -> None:
    path = image(group, bits)
    said = blkid(path)
    with metered(path) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        assert fs.name == said["TYPE"] == "vfat"
        assert (fs.label, fs.uuid) == (said["LABEL"], said["UUID"])
        assert f"FAT{fs.geometry.bits}" == said["VERSION"] == f"FAT{bits}"
        assert fs.case_sensitive is False
        geometry = fs.geometry
    assert geometry.cluster_size == fsck(group, bits, r"(\d+) bytes per cluster")
    assert geometry.clusters == fsck(group, bits, r"(\d+) data clusters")
    assert geometry.data_offset == fsck(group, bits, r"Data area starts at byte (\d+)")
    assert geometry.fat_offset == fsck(group, bits, r"First FAT starts at byte (\d+)")


@pytest.mark.parametrize("bits", BITS)
def test_every_file_reads_as_put_in(group: Path, bits: int) -> None:
    base = group / "tree" / "fat"
    with metered(image(group, bits)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        for host in tree_files(group):
            path = "/" + host.relative_to(base).as_posix()
            assert read_file(fs, path, 2 * 1024 * 1024) == host.read_bytes(), path


@pytest.mark.parametrize("bits", BITS)
def test_listings_hold_the_long_names(group: Path, bits: int) -> None:
    base = group / "tree" / "fat"
    with metered(image(group, bits)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        for directory in [base, base / "EFI", base / "EFI" / "debian", base / "Many"]:
            path = "/" + directory.relative_to(base).as_posix().lstrip(".")
            names = list_directory(fs, path, 1000)
            assert sorted(names) == sorted(p.name for p in directory.iterdir()), path
        assert len(list_directory(fs, "/Many", 10)) == 10


@pytest.mark.parametrize("bits", BITS)
def test_lookups_ignore_case_and_accept_short_names(group: Path, bits: int) -> None:
    with metered(image(group, bits)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        shim = resolve(fs, "/EFI/debian/shimx64.efi")
        assert shim is not None and shim.kind == Kind.FILE
        assert resolve(fs, "/efi/DEBIAN/SHIMX64.EFI") == shim
        assert resolve(fs, "/EFI/BOOT/bootx64.efi") is not None
        # mdir's short names: ALONGF~1.TXT for the long one; lower.txt kept as LOWER.TXT with the NT bits
        assert "ALONGF~1 TXT" in recorded(image(group, bits), "mdir.txt")
        assert resolve(fs, "/ALONGF~1.TXT") == resolve(fs, "/a long file name with spaces.txt")
        assert resolve(fs, "/LOWER.TXT") == resolve(fs, "/lower.txt") != None  # noqa: E711
        assert resolve(fs, "/EFI/nothing") is None
        assert resolve(fs, "/lower.txt/below") is None


@pytest.mark.parametrize("bits", BITS)
def test_a_fragmented_file_reads_across_its_runs(group: Path, bits: int) -> None:
    runs = chain(group, bits)
    if bits != 32:  # mtools fills FAT32 from its free-cluster hint: one run there
        assert len(runs) >= 2
    expected = (group / "tree" / "fat" / "frag.bin").read_bytes()
    with metered(image(group, bits)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        node = resolve(fs, "/frag.bin")
        assert node is not None and node.id == runs[0][0]
        assert fs.read(node, 0, node.size) == expected
        cluster = fs.geometry.cluster_size
        first_run = (runs[0][1] - runs[0][0] + 1) * cluster
        assert fs.read(node, first_run - 5, 10) == expected[first_run - 5 : first_run + 5]
        assert fs.read(node, node.size - 3, 100) == expected[-3:]
        assert fs.read(node, node.size, 10) == b""


def test_a_lookup_in_an_esp_is_cheap(group: Path) -> None:
    with metered(image(group, 32)) as (disk, reader):
        fs = opened(fat.FILESYSTEM, disk)
        opening = reader.reads
        node = resolve(fs, "/EFI/BOOT/BOOTX64.EFI")
        assert node is not None
        assert reader.reads - opening <= 6
        assert fs.read(node, 0, 2) == b"MZ"


def test_open_filesystem_picks_vfat(group: Path) -> None:
    assert next(entry.name for entry in filesystems.REGISTERED) == "vfat"
    with metered(image(group, 12)) as (disk, _):
        found = filesystems.open_filesystem(disk)
        assert found is not None and found.name == "vfat"
    with metered(group / "ntfs.img") as (disk, _):
        assert not fat.FILESYSTEM.probe(disk)
    with metered(group / "xorriso-rj.iso") as (disk, _):
        assert not fat.FILESYSTEM.probe(disk)


# --- hostile copies -------------------------------------------------------------------------------


def entry_offset(data: bytes, group: Path, bits: int, short_name: bytes) -> int:
    """Where the root directory's entry of `short_name` is (FAT12/16: the root region fsck.fat names)."""
    start = fsck(group, bits, r"Root directory starts at byte (\d+)")
    at = data.index(short_name, start)
    assert (at - start) % fat.ENTRY_SIZE == 0
    return at


def test_a_chain_that_loops_is_detected(group: Path, tmp_path: Path) -> None:
    bits = 16
    path = image(group, bits)
    data = bytearray(path.read_bytes())
    first = chain(group, bits)[0][0]
    fat_offset = fsck(group, bits, r"First FAT starts at byte (\d+)")
    width = bits // 8
    # frag.bin's first cluster points at itself
    data[fat_offset + first * width : fat_offset + (first + 1) * width] = first.to_bytes(width, "little")
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        node = resolve(fs, "/frag.bin")
        assert node is not None
        with pytest.raises(LoopDetected, match="a loop in the FAT cluster chain"):
            fs.read(node, 0, node.size)


def set_entry(data: bytearray, group: Path, bits: int, cluster: int, value: int) -> None:
    """Point the first FAT's entry of `cluster` (FAT16, FAT32) at `value`."""
    at = fsck(group, bits, r"First FAT starts at byte (\d+)") + cluster * bits // 8
    data[at : at + bits // 8] = value.to_bytes(bits // 8, "little")


@pytest.mark.parametrize("bits", [16, 32])
def test_a_chain_that_jumps_back_into_a_run_is_detected(group: Path, tmp_path: Path, bits: int) -> None:
    path = image(group, bits)
    data = bytearray(path.read_bytes())
    runs = chain(group, bits)
    # frag.bin's chain goes from the third cluster of its last run back to its second cluster, in
    # the middle of its first run (FAT32: 21, 22, 23, 22; FAT16: 4, 5, 8, 9, 10, 5)
    back = runs[0][0] + 1
    set_entry(data, group, bits, runs[-1][0] + 2, back)
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        node = resolve(fs, "/frag.bin")
        assert node is not None
        with pytest.raises(LoopDetected, match=f"cluster {back} comes back"):
            fs.read(node, 0, node.size)


@pytest.mark.parametrize("bits", [16, 32])
def test_a_chain_of_jumps_reads_in_chain_order(group: Path, tmp_path: Path, bits: int) -> None:
    path = image(group, bits)
    data = bytearray(path.read_bytes())
    clusters = [c for first, last in chain(group, bits) for c in range(first, last + 1)]
    # frag.bin's clusters taken from both ends in turn: every step of the chain is a jump
    order = [clusters[i // 2] if i % 2 == 0 else clusters[-1 - i // 2] for i in range(len(clusters))]
    for cluster, after in zip(order, [*order[1:], fat.END_OF_CHAIN[bits]], strict=True):
        set_entry(data, group, bits, cluster, after)
    start = fsck(group, bits, r"Data area starts at byte (\d+)")
    size = fsck(group, bits, r"(\d+) bytes per cluster")
    on_disk = b"".join(
        data[start + (c - fat.FIRST_CLUSTER) * size : start + (c - fat.FIRST_CLUSTER + 1) * size]
        for c in order
    )
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        node = resolve(fs, "/frag.bin")
        assert node is not None and node.id == order[0]
        assert fs.read(node, 0, node.size) == on_disk[: node.size]
        assert fs.read(node, size - 3, 6) == on_disk[size - 3 : size + 3]


def test_a_cluster_past_the_volume_is_corrupt(group: Path, tmp_path: Path) -> None:
    path = image(group, 16)
    data = bytearray(path.read_bytes())
    at = entry_offset(data, group, 16, b"FRAG    BIN")
    rewrite(data, fat.DirectoryEntry, at, DIR_FstClusLO=0xFFF0)
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        node = resolve(fs, "/frag.bin")
        assert node is not None
        with pytest.raises(CorruptFilesystem, match="names cluster 65520, outside the volume's clusters"):
            fs.read(node, 0, 1)


def test_a_size_past_the_chain_is_corrupt(group: Path, tmp_path: Path) -> None:
    path = image(group, 12)
    data = bytearray(path.read_bytes())
    at = entry_offset(data, group, 12, b"S1         ")
    rewrite(data, fat.DirectoryEntry, at, DIR_FileSize=0xFFFFFFFF)
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        node = resolve(fs, "/S1")
        assert node is not None and node.size == 0xFFFFFFFF
        with pytest.raises(CorruptFilesystem, match="ends before its size"):
            fs.read(node, 0, 1024 * 1024)


def test_a_long_name_whose_checksum_fails_is_ignored(group: Path, tmp_path: Path) -> None:
    path = image(group, 16)
    data = bytearray(path.read_bytes())
    short = entry_offset(data, group, 16, b"ALONGF~1TXT")
    # The long entries are just before their short entry; break the checksum of the nearest one.
    long_entry = fat.LongDirectoryEntry.unpack(data, short - fat.ENTRY_SIZE)
    assert long_entry.LDIR_Attr == fat.ATTR_LONG_NAME
    rewrite(data, fat.LongDirectoryEntry, short - fat.ENTRY_SIZE, LDIR_Chksum=long_entry.LDIR_Chksum ^ 0xFF)
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(fat.FILESYSTEM, disk)
        assert resolve(fs, "/A Long File Name With Spaces.txt") is None
        assert resolve(fs, "/ALONGF~1.TXT") is not None
        assert "ALONGF~1.TXT" in list_directory(fs, "/", 100)


def test_a_directory_that_contains_its_parent_stays_bounded(group: Path, tmp_path: Path) -> None:
    path = image(group, 16)
    data = bytearray(path.read_bytes())
    efi = fat.DirectoryEntry.unpack(data, entry_offset(data, group, 16, b"EFI        "))
    start = fsck(group, 16, r"Data area starts at byte (\d+)")
    cluster = fsck(group, 16, r"(\d+) bytes per cluster")
    efi_at = start + (efi.DIR_FstClusLO - fat.FIRST_CLUSTER) * cluster
    # /EFI/BOOT now names /EFI itself: /EFI/BOOT/BOOT/... is /EFI, as deep as a path goes.
    boot_at = data.index(b"BOOT       ", efi_at)
    rewrite(data, fat.DirectoryEntry, boot_at, DIR_FstClusLO=efi.DIR_FstClusLO)
    with metered(derived(path, tmp_path, data)) as (disk, reader):
        fs = opened(fat.FILESYSTEM, disk)
        assert resolve(fs, "/EFI/BOOT/BOOT/BOOT/debian/grub.cfg") is not None
        assert resolve(fs, "/EFI/BOOT/BOOTX64.EFI") is None
        assert reader.reads < 20


def test_a_boot_sector_with_impossible_sizes_is_not_fat(group: Path, tmp_path: Path) -> None:
    path = image(group, 12)
    data = bytearray(path.read_bytes())
    rewrite(data, fat.BiosParameterBlock, BPB_BytsPerSec=3)
    with metered(derived(path, tmp_path, data)) as (disk, _):
        assert not fat.FILESYSTEM.probe(disk)
        with pytest.raises(ImageError, match="not a FAT boot sector"):
            fat.FILESYSTEM.open(disk)
