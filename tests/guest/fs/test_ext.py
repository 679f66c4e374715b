"""ext2, ext3 and ext4 (introspect.guest.fs.ext), against the tree mkfs.ext4 -d copied into them
(its sha256sum, find listing and link targets) and what dumpe2fs, debugfs and blkid say
(fixtures/make/volext4.sh). Damaged filesystems are derived from the real ones, one declared
structure at a time, at the places debugfs names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from introspect.errors import BudgetExceeded, ImageError, TruncatedImage
from introspect.formats.raw import RawGuestView
from introspect.guest.disk import Disk
from introspect.guest.fs import REGISTERED, base, ext, open_filesystem
from introspect.guest.fs.base import (
    CorruptFilesystem,
    Kind,
    LoopDetected,
    exists,
    list_directory,
    read_file,
    resolve,
)
from introspect.guest.fs.ext import (
    Ext4DirEntry2,
    Ext4ExtentHeader,
    Ext4ExtentIdx,
    Ext4GroupDesc,
    Ext4SuperBlock,
)
from introspect.sources import Budget, FileSource, Reader
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.tools import recorded, rewrite

IMAGES = ["ext4-4k.img", "ext4-1k.img", "ext4-inline.img", "ext4-metabg.img", "ext3-1k.img", "ext2-4k.img"]
GUEST_BUDGET = Budget(max_reads=512, max_bytes=4 << 20)
#: Enough to read every file of the tree at once (it is about 1.5 MiB).
WHOLE_TREE = Budget(max_reads=4096, max_bytes=64 << 20)


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("volext4")


def open_ext(path: Path, budget: Budget = WHOLE_TREE) -> tuple[ext.ExtFilesystem, Reader]:
    reader = Reader(FileSource(path), budget)
    disk = Disk.of(RawGuestView(reader, reader.size))
    fs = open_filesystem(disk)
    assert isinstance(fs, ext.ExtFilesystem)
    return fs, reader


def sampled(path: str) -> bool:
    """Every path of the tree but most of the 300 files of /many (each lookup there walks the
    directory; the listing test sees all their names)."""
    return not path.startswith("/many/") or path.endswith(("00.txt", "37.txt", "99.txt"))


def tree_sums(group: Path) -> dict[str, str]:
    """sha256sum of the tree's files, as recorded (sampled)."""
    sums = {}
    for line in recorded(group / "tree", "sha256.txt").splitlines():
        digest, name = line.split(None, 1)
        if sampled(name.removeprefix(".")):
            sums[name.removeprefix(".")] = digest
    return sums


def tree_find(group: Path, *, every: bool = False) -> list[tuple[str, int, str]]:
    """find's (type, size, path) of the entries of the tree (sampled unless `every`)."""
    rows = []
    for line in recorded(group / "tree", "find.txt").splitlines():
        kind, size, name = line.split(" ", 2)
        path = name.removeprefix(".") or "/"
        if every or sampled(path):
            rows.append((kind, int(size), path))
    return rows


def blkid(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in recorded(path, "blkid.txt").splitlines())


def debugfs(path: Path) -> dict[str, str]:
    """`debugfs -R stat` (and imap) of each recorded path: path -> its text."""
    text = recorded(path, "debugfs.txt")
    return {m.group(1): m.group(2) for m in re.finditer(r"^=== (\S+)\n(.*?)(?=^=== |\Z)", text, re.S | re.M)}


def inode_offset(stat: str) -> tuple[int, int]:
    """Where debugfs's imap puts an inode: its block (of the fs's block size) and offset."""
    match = re.search(r"located at block (\d+), offset (0x[0-9a-f]+)", stat)
    assert match is not None
    return int(match.group(1)), int(match.group(2), 16)


def block_size(path: Path) -> int:
    return int(re.search(r"^Block size:\s+(\d+)", recorded(path, "dumpe2fs.txt"), re.M).group(1))


def test_ext_is_registered() -> None:
    assert ext.FILESYSTEM in [entry.load() for entry in REGISTERED]


@pytest.mark.parametrize("name", IMAGES)
def test_name_label_and_uuid_are_blkids(group: Path, name: str) -> None:
    fs, _ = open_ext(group / name)
    said = blkid(group / name)
    assert (fs.name, fs.label, fs.uuid) == (said["TYPE"], said["LABEL"], said["UUID"])
    assert fs.case_sensitive


@pytest.mark.parametrize("name", IMAGES)
def test_every_file_reads_as_the_host_file(group: Path, name: str) -> None:
    """Text files, the 200 KiB file, the file with holes, inline files, 300 files in an htree."""
    fs, _ = open_ext(group / name)
    sums = tree_sums(group)
    for path, digest in sums.items():
        data = read_file(fs, path, 1 << 30)
        assert data is not None, path
        assert hashlib.sha256(data).hexdigest() == digest, path


@pytest.mark.parametrize("name", IMAGES)
def test_kinds_sizes_and_listings_are_finds(group: Path, name: str) -> None:
    fs, _ = open_ext(group / name)
    rows = tree_find(group)
    kinds = {"f": Kind.FILE, "d": Kind.DIRECTORY, "l": Kind.SYMLINK}
    for kind, size, path in rows:
        node = resolve(fs, path, follow=False)
        assert node is not None, path
        assert node.kind == kinds[kind], path
        if kind != "d":
            assert node.size == size, path
    rows = tree_find(group, every=True)
    for directory in [path for kind, _, path in rows if kind == "d"]:
        prefix = directory.rstrip("/") + "/"
        names = {p.removeprefix(prefix) for _, _, p in rows if p.startswith(prefix) and p != "/"}
        children = {name for name in names if "/" not in name}
        if directory == "/":
            children.add("lost+found")  # made by mke2fs
        assert set(list_directory(fs, directory, 1000)) == children, directory
    assert len(list_directory(fs, "/many", 7)) == 7


@pytest.mark.parametrize("name", IMAGES)
def test_inodes_sizes_and_the_fixture_shapes_are_debugfs(group: Path, name: str) -> None:
    """The inode numbers and sizes debugfs states, and what the fixture is meant to exercise:
    an htree directory, an extent tree of depth 1 or indirect blocks, inline data."""
    path = group / name
    fs, _ = open_ext(path)
    stats = debugfs(path)
    for guest_path, stat in stats.items():
        node = resolve(fs, guest_path, follow=False)
        assert node is not None
        assert node.id == int(re.search(r"Inode: (\d+)", stat).group(1)), guest_path
        assert node.size == int(re.search(r"Size: (\d+)", stat).group(1)), guest_path
    flags = int(re.search(r"Flags: (0x[0-9a-f]+)", stats["/many"]).group(1), 16)
    assert flags & 0x1000  # EXT4_INDEX_FL: an htree, read linearly
    holes = stats["/usr/lib/holes.bin"]
    if name.startswith("ext4"):
        assert "(ETB0)" in holes  # an extent tree block: depth 1
    else:
        assert "(DIND)" in holes or "(IND)" in holes
    if name == "ext4-inline.img":
        assert "Size of inline data: 100" in stats["/etc/inline.txt"]
    if name == "ext4-metabg.img":
        assert "meta_bg" in recorded(path, "dumpe2fs.txt")
        last = stats["/many/file-with-a-longer-name-299.txt"]
        assert int(re.search(r"part of block group (\d+)", last).group(1)) >= 16  # the second meta group


@pytest.mark.parametrize("name", IMAGES)
def test_links_are_followed_inside_the_guest(group: Path, name: str) -> None:
    fs, _ = open_ext(group / name)
    sums = tree_sums(group)
    for line in recorded(group / "tree", "links.txt").splitlines():
        link, target = line.split(" ", 1)
        node = resolve(fs, link.removeprefix("."), follow=False)
        assert node is not None
        assert fs.readlink(node) == target
    digest = hashlib.sha256(read_file(fs, "/etc/os-release", 4096)).hexdigest()
    assert digest == sums["/usr/lib/os-release"]
    assert read_file(fs, "/links/relative", 100) == read_file(fs, "/links/absolute", 100) == b"volext4\n"
    assert read_file(fs, "/links/slow", 100) == b"deep\n"
    assert read_file(fs, "/links/directory/c/file.txt", 100) == b"deep\n"
    assert resolve(fs, "/links/directory/c/../../b/c/file.txt") is not None
    assert not exists(fs, "/links/dangling")
    assert resolve(fs, "/etc/OS-RELEASE") is None
    with pytest.raises(LoopDetected, match="a loop in the symbolic links"):
        resolve(fs, "/links/loop-a")


@pytest.mark.parametrize("name", IMAGES)
def test_a_lookup_stays_well_within_the_guest_budget(group: Path, name: str) -> None:
    fs, reader = open_ext(group / name, GUEST_BUDGET)
    assert read_file(fs, "/etc/os-release", 4096).startswith(b'NAME="Volext Linux"')
    assert read_file(fs, "/many/file-with-a-longer-name-299.txt", 100) == b"file 299\n"
    assert reader.reads <= 32  # meta_bg with 1 KiB blocks: the inodes of the path are in 4 groups
    assert reader.bytes_read <= 512 * 1024


def test_a_huge_read_is_clamped_to_the_file(group: Path) -> None:
    fs, _ = open_ext(group / "ext4-4k.img")
    node = resolve(fs, "/usr/lib/holes.bin")
    data = fs.read(node, 5 * 4096 * 40, 1 << 40)
    assert data == bytes([ord("5")]) * 4096
    assert fs.read(node, node.size + 10, 10) == b""


# --- Hostile filesystems, derived from the real ones --------------------------------------------------


def derived(group: Path, tmp_path: Path, name: str) -> tuple[bytearray, Path]:
    data = bytearray((group / name).read_bytes())
    return data, tmp_path / name


def write(path: Path, data: bytearray) -> Path:
    path.write_bytes(data)
    return path


def at_inode(path: Path, guest_path: str) -> int:
    block, offset = inode_offset(debugfs(path)[guest_path])
    return block * block_size(path) + offset


#: ext4_inode's i_block, where an extent tree's root is.
I_BLOCK = ext.Ext4Inode.offset_of("i_block")


def test_eh_entries_huge_is_clamped_to_eh_max(group: Path, tmp_path: Path) -> None:
    data, path = derived(group, tmp_path, "ext4-4k.img")
    root = at_inode(group / "ext4-4k.img", "/usr/lib/big.bin") + I_BLOCK
    header = rewrite(data, Ext4ExtentHeader, root, eh_entries=0xFFFF)
    assert header.eh_max == 4
    fs, _ = open_ext(write(path, data))
    digest = hashlib.sha256(read_file(fs, "/usr/lib/big.bin", 1 << 20)).hexdigest()
    assert digest == tree_sums(group)["/usr/lib/big.bin"]


def test_an_index_pointing_at_its_own_block_is_a_loop(group: Path, tmp_path: Path) -> None:
    """holes.bin's tree: the root (depth 1) points at one leaf block. Make the root depth 2 and the
    leaf an index node whose entry points at itself."""
    name = "ext4-4k.img"
    data, path = derived(group, tmp_path, name)
    stat = debugfs(group / name)["/usr/lib/holes.bin"]
    leaf = int(re.search(r"\(ETB0\):(\d+)", stat).group(1))
    root = at_inode(group / name, "/usr/lib/holes.bin") + I_BLOCK
    rewrite(data, Ext4ExtentHeader, root, eh_depth=2)
    at = leaf * block_size(group / name)
    rewrite(data, Ext4ExtentHeader, at, eh_depth=1, eh_entries=1)
    data[at + Ext4ExtentHeader.SIZE : at + Ext4ExtentHeader.SIZE + Ext4ExtentIdx.SIZE] = pack(
        Ext4ExtentIdx(ei_block=0, ei_leaf_lo=leaf, ei_leaf_hi=0, ei_unused=0)
    )
    fs, _ = open_ext(write(path, data))
    with pytest.raises(LoopDetected, match=f"block {leaf} is its own ancestor"):
        read_file(fs, "/usr/lib/holes.bin", 1 << 20)


def test_an_extent_tree_too_deep_is_corrupt(group: Path, tmp_path: Path) -> None:
    data, path = derived(group, tmp_path, "ext4-1k.img")
    rewrite(data, Ext4ExtentHeader, at_inode(group / "ext4-1k.img", "/usr/lib/big.bin") + I_BLOCK, eh_depth=6)
    fs, _ = open_ext(write(path, data))
    with pytest.raises(CorruptFilesystem, match="an extent tree is 6 deep"):
        read_file(fs, "/usr/lib/big.bin", 100)


def directory_block(group: Path, name: str, directory: str) -> int:
    stat = debugfs(group / name)[directory]
    return int(re.search(r"\(0\):(\d+)", stat).group(1))


def dir_records(data: bytearray, at: int, size: int) -> dict[bytes, int]:
    """The offsets of a directory block's records, by name (walking rec_len as debugfs wrote it)."""
    records = {}
    offset = 0
    while offset < size:
        entry = Ext4DirEntry2.unpack(data, at + offset)
        name_at = at + offset + Ext4DirEntry2.SIZE
        records[bytes(data[name_at : name_at + entry.name_len])] = at + offset
        offset += entry.rec_len
    return records


@pytest.mark.parametrize("name", ["ext4-4k.img", "ext2-4k.img"])
def test_a_rec_len_of_zero_is_corrupt_not_a_hang(group: Path, tmp_path: Path, name: str) -> None:
    data, path = derived(group, tmp_path, name)
    at = directory_block(group, name, "/deep/a/b/c") * block_size(group / name)
    rewrite(data, Ext4DirEntry2, at, rec_len=0)
    fs, _ = open_ext(write(path, data))
    with pytest.raises(CorruptFilesystem, match="rec_len 0 does not fit"):
        resolve(fs, "/deep/a/b/c/file.txt")


def test_lookups_past_a_corrupt_entry_fail_every_time_and_those_before_it_succeed(
    group: Path, tmp_path: Path
) -> None:
    """Lookups in one directory share what they parsed of it: asked again, in any order, each
    answers what a walk of the directory's entries from its start answers."""
    name = "ext4-4k.img"
    data, path = derived(group, tmp_path, name)
    size = block_size(group / name)
    # /many's second block (its first is the htree root, read as . and .. only)
    at = int(re.search(r"\(1\):(\d+)", debugfs(group / name)["/many"]).group(1)) * size
    records = dir_records(data, at, size)
    names = list(records)
    broken = names[len(names) // 2]
    rewrite(data, Ext4DirEntry2, records[broken], rec_len=0)
    later = next(
        p.removeprefix("/many/")
        for _, _, p in tree_find(group, every=True)
        if p.startswith("/many/") and p.removeprefix("/many/").encode() not in records
    )
    fs, _ = open_ext(write(path, data))
    for _ in range(2):
        for found in (names[len(names) // 2 - 1], names[0]):
            assert resolve(fs, f"/many/{found.decode()}") is not None
        for missing in (broken.decode(), later, "nothing"):
            with pytest.raises(CorruptFilesystem, match="rec_len 0 does not fit"):
                resolve(fs, f"/many/{missing}")


def test_a_directory_past_what_its_index_remembers_is_searched_again(
    group: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [p for kind, _, p in tree_find(group, every=True) if p.startswith("/many/") and kind == "f"]
    fs, _ = open_ext(group / "ext4-4k.img")
    expected = {path: resolve(fs, path) for path in (paths[0], paths[200], paths[-1])}
    monkeypatch.setattr(base, "MAX_INDEXED_ENTRIES", 16)
    fs, _ = open_ext(group / "ext4-4k.img")
    for path in (paths[-1], paths[0], paths[200], paths[-1], paths[0]):
        assert resolve(fs, path) == expected[path] != None  # noqa: E711
    assert resolve(fs, "/many/nothing") is None


def test_an_entry_past_s_inodes_count_is_corrupt(group: Path, tmp_path: Path) -> None:
    name = "ext3-1k.img"
    data, path = derived(group, tmp_path, name)
    size = block_size(group / name)
    at = directory_block(group, name, "/deep/a/b/c") * size
    records = dir_records(data, at, size)
    rewrite(data, Ext4DirEntry2, records[b"file.txt"], inode=0xFFFFFFFF)
    fs, _ = open_ext(write(path, data))
    with pytest.raises(CorruptFilesystem, match="inode 4294967295 is outside"):
        resolve(fs, "/deep/a/b/c/file.txt")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"s_log_block_size": 40}, "s_log_block_size 40"),
        ({"s_inodes_per_group": 0}, "s_inodes_per_group 0"),
        ({"s_blocks_per_group": 0xFFFFFFFF}, "s_blocks_per_group 4294967295"),
        ({"s_inode_size": 100}, "s_inode_size 100"),
        ({"s_desc_size": 48}, "s_desc_size 48"),
        ({"s_first_data_block": 0xFFFFFFFF}, "s_first_data_block"),
    ],
)
def test_a_superblock_out_of_bounds_is_corrupt(
    group: Path, tmp_path: Path, changes: dict, message: str
) -> None:
    data, path = derived(group, tmp_path, "ext4-4k.img")
    rewrite(data, Ext4SuperBlock, **changes)
    with pytest.raises(CorruptFilesystem, match=re.escape(message)):
        open_ext(write(path, data))


def test_a_cut_image_is_a_clean_truncation(group: Path, tmp_path: Path) -> None:
    data, path = derived(group, tmp_path, "ext4-1k.img")
    fs, _ = open_ext(write(path, data[: 256 * 1024]))
    with pytest.raises(TruncatedImage):
        for _, _, guest_path in tree_find(group):
            read_file(fs, guest_path, 1 << 20)


def test_every_hostile_read_is_an_image_error_under_the_guest_budget(group: Path, tmp_path: Path) -> None:
    """A walk of the whole tree of a filesystem whose every group descriptor points its inode table
    at block 0 stops with an ImageError (corrupt, or the budget), never another exception."""
    name = "ext4-4k.img"
    data, path = derived(group, tmp_path, name)
    descriptors = block_size(group / name)  # block 1: the group descriptors (first data block 0)
    rewrite(data, Ext4GroupDesc, descriptors, bg_inode_table_lo=0)
    with pytest.raises(ImageError):
        fs, _ = open_ext(write(path, data), GUEST_BUDGET)
        for _, _, guest_path in tree_find(group):
            read_file(fs, guest_path, 1 << 20)


def test_the_budget_stops_a_reader_of_everything(group: Path) -> None:
    fs, _ = open_ext(group / "ext4-1k.img", Budget(max_reads=20, max_bytes=4 << 20))
    with pytest.raises(BudgetExceeded):
        for path in tree_sums(group):
            read_file(fs, path, 1 << 30)
