"""XFS v5 and v4 made by mkfs.xfs (fixtures/make/xfsbtrfs.sh), read back against the host files
they were made from, what the kernel read from the mounted image, and what xfs_db and blkid said."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from introspect.errors import ImageError, TruncatedImage
from introspect.guest.fs import base, btrfs, open_filesystem, xfs
from introspect.guest.fs.base import CorruptFilesystem, Kind, LoopDetected
from introspect.guest.fs.xfs import (
    V3_CORE_SIZE,
    XfsBmdrBlock,
    XfsDinode,
    XfsDir2BlockTail,
    XfsDsb,
)
from introspect.sources import Budget, ByteSource, Reader
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.guest.fs.derive import GUEST_BUDGET, WHOLE_TREE, Derived, guest_disk, read_words

IMAGES = ["xfs-v5.img", "xfs-v4.img"]
OS_RELEASE = "usr/lib/os-release"


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("xfsbtrfs")


@contextmanager
def opened(source: ByteSource, budget: Budget = GUEST_BUDGET) -> Iterator[tuple[xfs.Xfs, Reader]]:
    with guest_disk(source, budget) as (disk, reader):
        assert xfs.FILESYSTEM.probe(disk)
        fs = xfs.FILESYSTEM.open(disk)
        assert isinstance(fs, xfs.Xfs)
        yield fs, reader


def inodes(image: Path) -> dict[str, dict[str, list[str]]]:
    """xfs_db's words per path: core.format, core.size, core.nextents, and `bmap` lines."""
    found: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in image.with_name(f"{image.name}.xfs_db-inodes.txt").read_text().splitlines():
        if line.startswith("== "):
            current = found.setdefault(line[3:], {})
        elif " = " in line:
            key, _, value = line.partition(" = ")
            current.setdefault(key, []).append(value)
        else:
            current.setdefault("bmap", []).append(line)
    return found


def bmap(image: Path, path: str) -> list[tuple[int, int, int, int, int]]:
    """xfs_db's `bmap` of a path: (file block, agno, agbno, count, unwritten flag) per extent."""
    pattern = re.compile(r"data offset (\d+) startblock \d+ \((\d+)/(\d+)\) count (\d+) flag (\d)")
    return [
        (int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]))
        for line in inodes(image)[path]["bmap"]
        if (m := pattern.match(line))
    ]


def superblock(image: Path) -> XfsDsb:
    with Derived(image) as source:
        return XfsDsb.unpack(source.pread(0, XfsDsb.SIZE))


def block_offset(sb: XfsDsb, agno: int, agbno: int) -> int:
    return (agno * sb.sb_agblocks + agbno) * sb.sb_blocksize


def inode_offset(sb: XfsDsb, ino: int) -> int:
    """Where inode `ino` lies (spec "Inode Numbers": agno, then the block and slot in the AG)."""
    agino_bits = sb.sb_agblklog + sb.sb_inopblog
    agno, agino = ino >> agino_bits, ino & ((1 << agino_bits) - 1)
    slot = agino & ((1 << sb.sb_inopblog) - 1)
    return block_offset(sb, agno, agino >> sb.sb_inopblog) + slot * sb.sb_inodesize


def ino_of(image: Path, path: str) -> int:
    with opened(Derived(image)) as (fs, _):
        node = base.resolve(fs, path, follow=False)
        assert node is not None
        return int(str(node.id))


# --- What the tools said ------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_superblock_as_xfs_db_and_blkid_say(group: Path, name: str) -> None:
    image = group / name
    sb = read_words(image, "xfs_db-sb.txt", " = ")
    blkid = read_words(image, "blkid.txt", "=")
    with opened(Derived(image)) as (fs, _):
        assert (fs.name, fs.label, fs.uuid) == (blkid["TYPE"], blkid["LABEL"], blkid["UUID"])
        assert fs.root() == base.Node(
            int(sb["rootino"]), Kind.DIRECTORY, int(inodes(image)["/"]["core.size"][0])
        )
        assert fs.blocksize == int(sb["blocksize"])
        assert fs.blocksize * fs.dir_blocks == int(sb["blocksize"]) << int(sb["dirblklog"])
        # the script made v5 with mkfs's default (ftype) and v4 with -n ftype=0
        assert fs.v5 == (int(sb["versionnum"], 16) & 0xF == 5) == fs.has_ftype == (name == "xfs-v5.img")
        assert fs.case_sensitive


@pytest.mark.parametrize("name", IMAGES)
def test_the_host_tree_reads_back(group: Path, name: str) -> None:
    """Every file, directory and link of the tree mkfs.xfs -p copied (of /many's 500 files,
    the listing and the last file)."""
    tree = group / "tree"
    with opened(Derived(group / name), WHOLE_TREE) as (fs, _):
        for host in sorted(tree.rglob("*")):
            path = "/" + host.relative_to(tree).as_posix()
            if host.parent.name == "many" and not host.name.endswith("500"):
                continue
            if host.is_symlink():
                node = base.resolve(fs, path, follow=False)
                assert node is not None and node.kind == Kind.SYMLINK, path
                assert fs.readlink(node) == os.readlink(host), path
            elif host.is_dir():
                assert sorted(base.list_directory(fs, path, 1000)) == sorted(
                    p.name for p in host.iterdir()
                ), path
            else:
                assert base.read_file(fs, path, 1 << 20) == host.read_bytes(), path
        assert base.resolve(fs, "/many/no-such-entry") is None
        assert base.list_directory(fs, "/many", 3) == [
            "an-entry-with-a-longish-name-001",
            "an-entry-with-a-longish-name-002",
            "an-entry-with-a-longish-name-003",
        ]


@pytest.mark.parametrize("name", IMAGES)
def test_every_directory_form_is_met(group: Path, name: str) -> None:
    """The fixture holds each form xfs_db names: short form in the inode, one directory block,
    and data blocks with a leaf block at XFS_DIR2_LEAF_OFFSET."""
    image = group / name
    words = inodes(image)
    blocksize = int(read_words(image, "xfs_db-sb.txt", " = ")["blocksize"])
    assert words["/"]["core.format"] == words["/etc"]["core.format"] == ["1 (local)"]
    assert words["/block"]["core.format"] == ["2 (extents)"]
    assert [extent[0] for extent in bmap(image, "/block")] == [0]
    assert max(extent[0] for extent in bmap(image, "/many")) == xfs.XFS_DIR2_LEAF_OFFSET // blocksize
    with opened(Derived(image)) as (fs, _):
        assert len(base.list_directory(fs, "/block", 100)) == 40
        assert len(base.list_directory(fs, "/many", 1000)) == 500


def test_btree_extents_holes_and_unwritten_extents(group: Path) -> None:
    """/frag's 300 extents are a B+tree (xfs_db), /sparse has an unwritten extent: both read as
    the kernel read them from the mounted image."""
    image = group / "xfs-v5.img"
    words = inodes(image)
    assert words["/frag"]["core.format"] == ["3 (btree)"] and words["/frag"]["core.nextents"] == ["300"]
    assert any(extent[4] == 1 for extent in bmap(image, "/sparse"))
    expected = group / "xfs-v5.img.expected"
    frag = (expected / "frag").read_bytes()
    with opened(Derived(image)) as (fs, _):
        assert base.read_file(fs, "/frag", 4 << 20) == frag
        assert base.read_file(fs, "/sparse", 4 << 20) == (expected / "sparse").read_bytes()
        node = base.resolve(fs, "/frag")
        assert node is not None
        for offset, length in [(4095, 2), (1_000_001, 70_000), (len(frag) - 5, 100)]:
            assert fs.read(node, offset, length) == frag[offset : offset + length]


@pytest.mark.parametrize("name", IMAGES)
def test_symbolic_links(group: Path, name: str) -> None:
    content = (group / "tree" / OS_RELEASE).read_bytes()
    with opened(Derived(group / name)) as (fs, _):
        for link in ["/os-release-link", "/links/relative", "/links/absolute", "/links/chain", "/links/long"]:
            assert base.read_file(fs, link, 4096) == content, link
        assert base.resolve(fs, "/links/dangling") is None
        with pytest.raises(LoopDetected, match="loop-a"):
            base.resolve(fs, "/links/loop-a")


@pytest.mark.parametrize("name", IMAGES)
def test_a_three_level_lookup_costs_a_few_reads(group: Path, name: str) -> None:
    with opened(Derived(group / name)) as (fs, reader):
        assert base.read_file(fs, "/" + OS_RELEASE, 4096) == (group / "tree" / OS_RELEASE).read_bytes()
        assert reader.reads <= 6 and reader.bytes_read <= 32 * 1024
        before = reader.reads
        assert base.exists(fs, "/many/an-entry-with-a-longish-name-500")
        assert reader.reads - before <= 10


def test_probe_and_registry(group: Path) -> None:
    for name in IMAGES:
        with guest_disk(Derived(group / name)) as (disk, _):
            assert not btrfs.FILESYSTEM.probe(disk)
            fs = open_filesystem(disk)
            assert fs is not None and fs.name == "xfs"
    with guest_disk(Derived(group / "btrfs-rootdir.img")) as (disk, _):
        assert not xfs.FILESYSTEM.probe(disk)


# --- Hostile images derived from xfs-v5.img -----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sb_agblklog": 11}, "allocation groups"),
        ({"sb_blocklog": 20, "sb_blocksize": 1 << 20}, "block size"),
        ({"sb_inopblog": 2}, "inode size"),
        ({"sb_dirblklog": 6}, "directory blocks"),
        ({"sb_features_incompat": 1 << 20 | 1}, "incompatible features"),
        ({"sb_versionnum": 0xB4B6}, "version 6"),
    ],
)
def test_a_bad_superblock_is_refused(group: Path, changes: dict[str, int], message: str) -> None:
    image = group / "xfs-v5.img"
    sb = dataclasses.replace(superblock(image), **changes)
    with guest_disk(Derived(image, {0: pack(sb)})) as (disk, _):
        with pytest.raises(CorruptFilesystem, match=message):
            xfs.FILESYSTEM.open(disk)


def test_an_extent_count_past_the_fork_is_refused(group: Path) -> None:
    image = group / "xfs-v5.img"
    sb = superblock(image)
    at = inode_offset(sb, ino_of(image, "/big.bin"))
    with Derived(image) as source:
        core = XfsDinode.unpack(source.pread(at, XfsDinode.SIZE))
    patch = pack(dataclasses.replace(core, di_nextents=2**32 - 1))
    with opened(Derived(image, {at: patch})) as (fs, _):
        with pytest.raises(CorruptFilesystem, match="counts 4294967295 extents"):
            base.read_file(fs, "/big.bin", 4096)


def _frag_root(image: Path) -> tuple[int, XfsBmdrBlock, int]:
    """Where /frag's B+tree root lies, the root, and where its pointers start."""
    sb = superblock(image)
    at = inode_offset(sb, ino_of(image, "/frag"))
    with Derived(image) as source:
        core = XfsDinode.unpack(source.pread(at, XfsDinode.SIZE))
        fork_size = core.di_forkoff * 8 if core.di_forkoff else sb.sb_inodesize - V3_CORE_SIZE
        root = XfsBmdrBlock.unpack(source.pread(at + V3_CORE_SIZE, XfsBmdrBlock.SIZE))
    maxrecs = (fork_size - XfsBmdrBlock.SIZE) // 16
    return at + V3_CORE_SIZE, root, at + V3_CORE_SIZE + XfsBmdrBlock.SIZE + maxrecs * 8


def test_an_extent_tree_visiting_a_block_twice_is_a_loop(group: Path) -> None:
    image = group / "xfs-v5.img"
    _, root, pointers = _frag_root(image)
    assert root.bb_numrecs >= 2
    with Derived(image) as source:
        first = source.pread(pointers, 8)
    with opened(Derived(image, {pointers + 8: first})) as (fs, _):
        with pytest.raises(LoopDetected, match="extent tree"):
            base.read_file(fs, "/frag", 4 << 20)


def test_an_extent_tree_block_at_the_wrong_level_is_refused(group: Path) -> None:
    image = group / "xfs-v5.img"
    fork, root, _ = _frag_root(image)
    patch = pack(dataclasses.replace(root, bb_level=root.bb_level + 1))
    with opened(Derived(image, {fork: patch})) as (fs, _):
        with pytest.raises(CorruptFilesystem, match=r"level 0 \(expected 1\)"):
            base.read_file(fs, "/frag", 4 << 20)


def test_a_remote_link_block_without_its_header_is_refused(group: Path) -> None:
    """What xfsprogs 6.1's protofile writes for a long link on v5 (xfs_repair: "bad symlink header")."""
    image = group / "xfs-v5.img"
    [(_, agno, agbno, _, _)] = bmap(image, "/links/long")
    at = block_offset(superblock(image), agno, agbno)
    with opened(Derived(image, {at: bytes(56)})) as (fs, _):
        with pytest.raises(CorruptFilesystem, match="bad header"):
            base.read_file(fs, "/links/long", 4096)


def test_a_block_directory_counting_too_many_hashes_is_refused(group: Path) -> None:
    image = group / "xfs-v5.img"
    sb = superblock(image)
    [(_, agno, agbno, _, _)] = bmap(image, "/block")
    tail = block_offset(sb, agno, agbno) + (sb.sb_blocksize << sb.sb_dirblklog) - XfsDir2BlockTail.SIZE
    with opened(Derived(image, {tail: pack(XfsDir2BlockTail(count=2**32 - 1, stale=0))})) as (fs, _):
        with pytest.raises(CorruptFilesystem, match="hash entries"):
            base.list_directory(fs, "/block", 10)


def test_a_truncated_image_is_truncated(group: Path) -> None:
    with opened(Derived(group / "xfs-v5.img", size=1 << 20)) as (fs, _):
        with pytest.raises(TruncatedImage):
            base.read_file(fs, "/frag", 4 << 20)


def test_zeroed_metadata_ends_in_an_image_error(group: Path) -> None:
    """Each 512-byte sector a lookup through links reads (superblock, inodes, directories, the
    file), zeroed in turn: the walk ends with the file's bytes or an ImageError, never another
    exception."""
    image = group / "xfs-v5.img"
    source = Derived(image)
    with opened(source) as (fs, _):
        base.read_file(fs, "/links/absolute", 4096)
    sectors = sorted(
        {sector for offset, length in source.reads for sector in range(offset, offset + length, 512)}
    )
    assert sectors
    for sector in sectors:
        with guest_disk(Derived(image, {sector: bytes(512)})) as (disk, _):
            try:
                base.read_file(xfs.FILESYSTEM.open(disk), "/links/absolute", 4096)
            except ImageError:
                pass
