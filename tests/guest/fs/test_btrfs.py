"""Btrfs made by mkfs.btrfs --rootdir and on loop mounts (fixtures/make/xfsbtrfs.sh), read back
against the host files, what the kernel read from the mounted image, and what btrfs-progs
(dump-super, dump-tree, subvolume get-default) and blkid said."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from pathlib import Path

import pytest

from introspect.errors import ImageError, TruncatedImage
from introspect.guest.fs import base, btrfs, open_filesystem
from introspect.guest.fs.base import CorruptFilesystem, Kind, LoopDetected
from introspect.guest.fs.btrfs import (
    BtrfsChunk,
    BtrfsDiskKey,
    BtrfsHeader,
    BtrfsKeyPtr,
    BtrfsStripe,
    BtrfsSuperBlock,
)
from introspect.safety import GUEST_NOT_READ, GUEST_UNSUPPORTED_VOLUME
from introspect.sources import Budget, ByteSource, Reader
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.guest.fs.derive import GUEST_BUDGET, WHOLE_TREE, Derived, guest_disk, read_words

OS_RELEASE = "usr/lib/os-release"
#: What the script added to @ beside the tree.
SUBVOL_EXTRA = {"srv", "zlib", "zstd", "lzo", "sparse"}


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("xfsbtrfs")


@contextmanager
def opened(source: ByteSource, budget: Budget = GUEST_BUDGET) -> Iterator[tuple[btrfs.Btrfs, Reader]]:
    with guest_disk(source, budget) as (disk, reader):
        assert btrfs.FILESYSTEM.probe(disk)
        fs = btrfs.FILESYSTEM.open(disk)
        assert isinstance(fs, btrfs.Btrfs)
        yield fs, reader


def physical(image: Path, logical: int) -> list[int]:
    """Where `logical` lies on this device, per stripe, from the chunk tree dump-tree printed
    (every fixture chunk here is SINGLE or DUP on devid 1)."""
    text = image.with_name(f"{image.name}.dump-tree-chunk.txt").read_text()
    found: list[int] = []
    for chunk in re.split(r"\n\titem \d+ key \(FIRST_CHUNK_TREE CHUNK_ITEM ", text)[1:]:
        start = int(chunk.split(")", 1)[0])
        length = int(re.search(r"length (\d+)", chunk)[1])  # type: ignore[index]
        if start <= logical < start + length:
            found += [
                int(offset) + logical - start
                for offset in re.findall(r"stripe \d+ devid 1 offset (\d+)", chunk)
            ]
    assert found, f"no chunk holds {logical}"
    return found


def superblock(image: Path) -> BtrfsSuperBlock:
    with Derived(image) as source:
        return BtrfsSuperBlock.unpack(source.pread(BtrfsSuperBlock.OFFSET, BtrfsSuperBlock.SIZE), 0)


def with_superblock(image: Path, **changes: object) -> Derived:
    return Derived(image, {BtrfsSuperBlock.OFFSET: pack(dataclasses.replace(superblock(image), **changes))})


def dump_at(group: Path) -> str:
    return (group / "btrfs-subvol.img.dump-tree-at.txt").read_text()


def assert_tree_reads_back(fs: btrfs.Btrfs, tree: Path, extra: AbstractSet[str] = frozenset()) -> None:
    """Every file, directory and link of the host tree (of /many's 500 files, the listing and
    the last one), and nothing else but `extra` at the top."""
    assert set(base.list_directory(fs, "/", 100)) == {p.name for p in tree.iterdir()} | extra
    for host in sorted(tree.rglob("*")):
        path = "/" + host.relative_to(tree).as_posix()
        if host.parent.name == "many" and not host.name.endswith("500"):
            continue
        if host.is_symlink():
            node = base.resolve(fs, path, follow=False)
            assert node is not None and node.kind == Kind.SYMLINK, path
            assert fs.readlink(node) == os.readlink(host), path
        elif host.is_dir():
            if host != tree:
                assert sorted(base.list_directory(fs, path, 1000)) == sorted(
                    p.name for p in host.iterdir()
                ), path
        else:
            assert base.read_file(fs, path, 1 << 20) == host.read_bytes(), path


# --- What the tools said ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["btrfs-rootdir.img", "btrfs-subvol.img", "btrfs-raid-1.img", "btrfs-raid-2.img"]
)
def test_superblock_as_dump_super_and_blkid_say(group: Path, name: str) -> None:
    image = group / name
    words = read_words(image, "dump-super.txt", "\t")
    blkid = read_words(image, "blkid.txt", "=")
    with opened(Derived(image)) as (fs, _):
        assert (fs.name, fs.label, fs.uuid) == (blkid["TYPE"], blkid["LABEL"], blkid["UUID"])
        assert (fs.label, fs.uuid) == (words["label"], words["fsid"])
        assert fs.checksum == words["csum_type"].split("(")[1].rstrip(")")
        assert fs.nodesize == int(words["nodesize"])
        assert fs.case_sensitive


def test_the_default_subvolume_is_the_one_set(group: Path) -> None:
    """`btrfs subvolume get-default` said @ (its id); without a default, the FS tree (5)."""
    default = int((group / "btrfs-subvol.img.get-default.txt").read_text().split()[1])
    with opened(Derived(group / "btrfs-subvol.img")) as (fs, _):
        assert fs.default_subvolume == default
        assert base.resolve(fs, "/top-level.txt") is None  # in the FS tree, not in @
    with opened(Derived(group / "btrfs-rootdir.img")) as (fs, _):
        assert fs.default_subvolume == btrfs.BTRFS_FS_TREE_OBJECTID


@pytest.mark.parametrize(
    ("name", "extra"), [("btrfs-rootdir.img", set()), ("btrfs-subvol.img", SUBVOL_EXTRA)]
)
def test_the_host_tree_reads_back(group: Path, name: str, extra: set[str]) -> None:
    with opened(Derived(group / name), WHOLE_TREE) as (fs, _):
        assert_tree_reads_back(fs, group / "tree", extra)
        assert base.resolve(fs, "/many/no-such-entry") is None


def test_compressed_extents(group: Path) -> None:
    """zlib and zstd extents (regular and inline, as dump-tree shows them) decompress to the host
    file; an lzo one is named as not read."""
    dump = dump_at(group)
    for kind in ("1 (zlib)", "2 (lzo)", "3 (zstd)"):
        assert f"\t\textent compression {kind}" in dump
        assert re.search(rf"inline extent data size \d+ ram_bytes \d+ compression {re.escape(kind)}", dump)
    text = (group / "tree" / "text.txt").read_bytes()
    small = (group / "tree" / OS_RELEASE).read_bytes()
    with opened(Derived(group / "btrfs-subvol.img")) as (fs, _):
        for kind in ("zlib", "zstd"):
            assert base.read_file(fs, f"/{kind}/text.txt", 1 << 20) == text
            assert base.read_file(fs, f"/{kind}/small.txt", 4096) == small
            node = base.resolve(fs, f"/{kind}/text.txt")
            assert node is not None
            assert fs.read(node, 131_000, 200) == text[131_000:131_200]  # across two extents
        with pytest.raises(ImageError, match="lzo") as refused:
            base.read_file(fs, "/lzo/text.txt", 1 << 20)
        assert refused.value.rule is GUEST_NOT_READ


def test_holes_and_preallocated_extents(group: Path) -> None:
    assert "type 2 (prealloc)" in dump_at(group)
    with opened(Derived(group / "btrfs-subvol.img")) as (fs, _):
        expected = (group / "btrfs-subvol.img.expected" / "sparse").read_bytes()
        assert base.read_file(fs, "/sparse", 4 << 20) == expected


def test_a_nested_subvolume_is_crossed_as_a_directory(group: Path) -> None:
    """@/srv is a subvolume: @'s entry names its ROOT_ITEM (dump-tree), and its file reads."""
    assert re.search(r"location key \((\d+) ROOT_ITEM 0\) type DIR\n.*\n\t\tname: srv\n", dump_at(group))
    with opened(Derived(group / "btrfs-subvol.img")) as (fs, _):
        srv = base.resolve(fs, "/srv")
        assert srv is not None and srv.kind == Kind.DIRECTORY
        assert base.list_directory(fs, "/srv", 10) == ["nested.txt"]
        assert base.read_file(fs, "/srv/nested.txt", 100) == b"in a nested subvolume\n"
        assert (
            base.read_file(fs, "/srv/../usr/lib/os-release", 4096)
            == (group / "tree" / OS_RELEASE).read_bytes()
        )


def test_names_hash_as_the_kernel_hashes_them(group: Path) -> None:
    pairs = re.findall(
        r"key \(\d+ DIR_ITEM (\d+)\) itemoff \d+ itemsize \d+\n.*\n.*\n\t\tname: (\S+)\n", dump_at(group)
    )
    assert len(pairs) > 500
    for key, name in pairs:
        assert btrfs.name_hash(name.encode()) == int(key), name


def test_symbolic_links(group: Path) -> None:
    content = (group / "tree" / OS_RELEASE).read_bytes()
    with opened(Derived(group / "btrfs-subvol.img")) as (fs, _):
        for link in ["/os-release-link", "/links/relative", "/links/absolute", "/links/chain", "/links/long"]:
            assert base.read_file(fs, link, 4096) == content, link
        assert base.resolve(fs, "/links/dangling") is None
        with pytest.raises(LoopDetected, match="loop-a"):
            base.resolve(fs, "/links/loop-a")


@pytest.mark.parametrize("name", ["btrfs-rootdir.img", "btrfs-subvol.img"])
def test_a_three_level_lookup_costs_a_few_reads(group: Path, name: str) -> None:
    with opened(Derived(group / name)) as (fs, reader):
        assert base.read_file(fs, "/" + OS_RELEASE, 4096) == (group / "tree" / OS_RELEASE).read_bytes()
        assert reader.reads <= 8 and reader.bytes_read <= 128 * 1024
        before = reader.reads
        assert base.exists(fs, "/many/an-entry-with-a-longish-name-500")
        assert reader.reads - before <= 4


def test_probe_and_registry(group: Path) -> None:
    with guest_disk(Derived(group / "btrfs-subvol.img")) as (disk, _):
        fs = open_filesystem(disk)
        assert fs is not None and fs.name == "btrfs"


def test_each_disk_of_a_raid0_pair_reads_its_own_stripes(group: Path) -> None:
    """RAID1 metadata reads from either disk; each 4 KiB of the RAID0 file reads from exactly one
    of them (its stripe's), and a read that needs the other disk is named as not read."""
    host = (group / "tree" / "big.bin").read_bytes()
    assert "DATA|RAID0" in (group / "btrfs-raid-1.img.dump-tree-chunk.txt").read_text()
    readable: dict[int, list[str]] = {}
    for name in ("btrfs-raid-1.img", "btrfs-raid-2.img"):
        with opened(Derived(group / name)) as (fs, _):
            assert base.read_file(fs, "/os-release", 4096) == (group / "tree" / OS_RELEASE).read_bytes()
            node = base.resolve(fs, "/big.bin")
            assert node is not None
            with pytest.raises(ImageError, match="another device") as refused:
                fs.read(node, 0, node.size)
            assert refused.value.rule is GUEST_UNSUPPORTED_VOLUME
            for offset in range(0, len(host), 4096):
                try:
                    data = fs.read(node, offset, 4096)
                except ImageError:
                    continue
                assert data == host[offset : offset + 4096]
                readable.setdefault(offset, []).append(name)
    assert sorted(readable) == list(range(0, len(host), 4096))
    assert all(len(names) == 1 for names in readable.values())


# --- Hostile images derived from btrfs-subvol.img -----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nodesize": 1 << 20}, "node size"),
        ({"sectorsize": 1000}, "sector size"),
        ({"root_level": 8}, "root levels"),
        ({"sys_chunk_array_size": 4000}, "sys_chunk_array_size"),
        ({"sys_chunk_array_size": 20}, "sys_chunk_array"),
    ],
)
def test_a_bad_superblock_is_refused(group: Path, changes: dict[str, int], message: str) -> None:
    with guest_disk(with_superblock(group / "btrfs-subvol.img", **changes)) as (disk, _):
        with pytest.raises(CorruptFilesystem, match=message):
            btrfs.FILESYSTEM.open(disk)


@pytest.mark.parametrize(("bit", "name"), [(13, "extent_tree_v2"), (40, "bit 40")])
def test_incompatible_features_not_read_are_named(group: Path, bit: int, name: str) -> None:
    image = group / "btrfs-subvol.img"
    flags = superblock(image).incompat_flags | 1 << bit
    with guest_disk(with_superblock(image, incompat_flags=flags)) as (disk, _):
        with pytest.raises(ImageError, match=name) as refused:
            btrfs.FILESYSTEM.open(disk)
    assert refused.value.rule is GUEST_UNSUPPORTED_VOLUME


def _sys_chunk_array(image: Path, **stripe_changes: int) -> tuple[bytes, BtrfsChunk]:
    """The superblock's bootstrap array with each stripe of its first chunk changed."""
    array = bytearray(superblock(image).sys_chunk_array)
    chunk = BtrfsChunk.unpack(array, BtrfsDiskKey.SIZE)
    for index in range(chunk.num_stripes):
        at = BtrfsDiskKey.SIZE + BtrfsChunk.SIZE + index * BtrfsStripe.SIZE
        array[at : at + BtrfsStripe.SIZE] = pack(
            dataclasses.replace(BtrfsStripe.unpack(array, at), **stripe_changes)
        )
    return bytes(array), chunk


def test_a_chunk_mapped_past_the_disk_is_truncated(group: Path) -> None:
    image = group / "btrfs-subvol.img"
    array, _ = _sys_chunk_array(image, offset=1 << 40)
    with guest_disk(with_superblock(image, sys_chunk_array=array)) as (disk, _):
        with pytest.raises(TruncatedImage):
            btrfs.FILESYSTEM.open(disk)


def test_a_chunk_on_no_device_here_is_named(group: Path) -> None:
    image = group / "btrfs-subvol.img"
    array, _ = _sys_chunk_array(image, devid=7)
    with guest_disk(with_superblock(image, sys_chunk_array=array)) as (disk, _):
        with pytest.raises(ImageError, match="another device") as refused:
            btrfs.FILESYSTEM.open(disk)
    assert refused.value.rule is GUEST_UNSUPPORTED_VOLUME


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_stripes": 65535}, "65535 stripes"),
        ({"stripe_len": 1}, "stripes of 1"),
        ({"length": 0}, "is 0 bytes"),
    ],
)
def test_a_bad_chunk_is_refused(group: Path, changes: dict[str, int], message: str) -> None:
    image = group / "btrfs-subvol.img"
    array = bytearray(superblock(image).sys_chunk_array)
    chunk = BtrfsChunk.unpack(array, BtrfsDiskKey.SIZE)
    array[BtrfsDiskKey.SIZE : BtrfsDiskKey.SIZE + BtrfsChunk.SIZE] = pack(
        dataclasses.replace(chunk, **changes)
    )
    with guest_disk(with_superblock(image, sys_chunk_array=bytes(array))) as (disk, _):
        with pytest.raises(CorruptFilesystem, match=message):
            btrfs.FILESYSTEM.open(disk)


def _patched_block(image: Path, logical: int, change: Callable[[bytearray], None]) -> Derived:
    """The image with the tree block at `logical` changed (every copy of it) by `change`, a
    function of its bytes."""
    patches = {}
    with Derived(image) as source:
        for at in physical(image, logical):
            block = bytearray(source.pread(at, superblock(image).nodesize))
            change(block)
            patches[at] = bytes(block)
    return Derived(image, patches)


def test_a_node_counting_too_many_items_is_refused(group: Path) -> None:
    image = group / "btrfs-subvol.img"
    root = int(read_words(image, "dump-super.txt", "\t")["root"])

    def count_all(block: bytearray) -> None:
        block[: BtrfsHeader.SIZE] = pack(dataclasses.replace(BtrfsHeader.unpack(block, 0), nritems=2**32 - 1))

    with guest_disk(_patched_block(image, root, count_all)) as (disk, _):
        with pytest.raises(CorruptFilesystem, match="counts 4294967295 items"):
            btrfs.FILESYSTEM.open(disk)


def test_a_node_pointing_at_itself_is_refused(group: Path) -> None:
    image = group / "btrfs-subvol.img"
    node = int(re.search(r"^node (\d+) level 1 ", dump_at(group), re.MULTILINE)[1])  # type: ignore[index]

    def point_at_itself(block: bytearray) -> None:
        pointer = BtrfsKeyPtr.unpack(block, BtrfsHeader.SIZE)
        block[BtrfsHeader.SIZE : BtrfsHeader.SIZE + BtrfsKeyPtr.SIZE] = pack(
            dataclasses.replace(pointer, blockptr=node)
        )

    with opened(_patched_block(image, node, point_at_itself)) as (fs, _):
        with pytest.raises(LoopDetected, match=f"block {node} twice"):
            fs.root()


def test_a_corrupt_zstd_extent_is_refused(group: Path) -> None:
    image = group / "btrfs-subvol.img"
    extent = re.search(
        r"extent data disk byte (\d+) nr \d+\n.*\n\t\textent compression 3 \(zstd\)", dump_at(group)
    )
    assert extent is not None
    at = physical(image, int(extent[1]))[0]
    with opened(Derived(image, {at: b"\x28\xb5\x2f\xfd" + b"\xff" * 60})) as (fs, _):
        with pytest.raises(CorruptFilesystem, match="does not decompress"):
            base.read_file(fs, "/zstd/text.txt", 1 << 20)


def test_a_truncated_image_is_truncated(group: Path) -> None:
    with guest_disk(Derived(group / "btrfs-subvol.img", size=16 << 20)) as (disk, _):
        with pytest.raises(TruncatedImage):
            btrfs.FILESYSTEM.open(disk)


def test_zeroed_metadata_ends_in_an_image_error(group: Path) -> None:
    """Each 4 KiB block a lookup through links and a subvolume reads, zeroed in turn: the walk
    ends with the file's bytes or an ImageError, never another exception."""
    image = group / "btrfs-subvol.img"
    source = Derived(image)
    with opened(source) as (fs, _):
        base.read_file(fs, "/srv/../links/absolute", 4096)
    blocks = sorted(
        {block for offset, length in source.reads for block in range(offset, offset + length, 4096)}
        - set(range(0, btrfs.BTRFS_SUPER_INFO_OFFSET, 4096))  # the reader's head: btrfs uses none of it
    )
    assert blocks
    for block in blocks:
        with guest_disk(Derived(image, {block: bytes(4096)})) as (disk, _):
            try:
                base.read_file(btrfs.FILESYSTEM.open(disk), "/srv/../links/absolute", 4096)
            except ImageError:
                pass
