"""NTFS made by mkntfs and filled through ntfs-3g, against the files put in (tree/ntfs), what
ntfsls, ntfsinfo and blkid said; then hostile copies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from introspect.errors import ImageError
from introspect.guest import fs as filesystems
from introspect.guest.fs import ntfs
from introspect.guest.fs.base import CorruptFilesystem, Kind, list_directory, read_file, resolve
from introspect.safety import GUEST_NOT_READ
from tests.conftest import fixture_group
from tests.guest.fs.metered import blkid, derived, metered, opened
from tests.tools import recorded, rewrite

#: ntfsls -i [-l] -F: inode, [size, date,] name ("/" ends a directory's).
NTFSLS = re.compile(r"^\s*(\d+)\s+(?:(\d+)\s+\w{3}\s+\d+\s+[\d:]+\s+\d{4}\s+)?(.+?)/?$")


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("fatntfsiso")


@pytest.fixture(scope="module")
def path(group: Path) -> Path:
    return group / "ntfs.img"


@pytest.fixture(scope="module")
def pristine(path: Path) -> bytes:
    """The image's bytes, read once for the hostile copies."""
    return path.read_bytes()


def ntfsls(path: Path, suffix: str) -> dict[str, tuple[int, int | None]]:
    """What ntfsls listed: name -> (MFT record, size), "." and ".." left out."""
    listed = {}
    for line in recorded(path, suffix).splitlines():
        match = NTFSLS.match(line)
        assert match, line
        record, size, name = match.groups()
        if name not in (".", ".."):
            listed[name] = (int(record), int(size) if size else None)
    return listed


def test_names_match_blkid(path: Path) -> None:
    said = blkid(path)
    with metered(path) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        assert fs.name == said["TYPE"] == "ntfs"
        assert (fs.label, fs.uuid) == (said["LABEL"], said["UUID"])
        assert fs.case_sensitive is False
        assert fs.cluster_size == int(
            re.search(r"Cluster Size: (\d+)", recorded(path, "ntfsinfo-m.txt")).group(1)
        )  # type: ignore[union-attr]


def test_every_file_reads_as_put_in(group: Path, path: Path) -> None:
    base = group / "tree" / "ntfs"
    with metered(path) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        for host in sorted(base.rglob("*")):
            node = resolve(fs, "/" + host.relative_to(base).as_posix())
            assert node is not None, host
            if host.is_dir():
                assert node.kind == Kind.DIRECTORY
            elif host.name != "compressed.txt":  # put in /Compressed, not read (below)
                assert node.kind == Kind.FILE and node.size == host.stat().st_size
                assert fs.read(node, 0, node.size) == host.read_bytes(), host


@pytest.mark.parametrize(
    ("directory", "suffix"),
    [
        ("/", "ntfsls.txt"),
        ("/Windows/WinSxS", "winsxs.ntfsls.txt"),
        ("/Windows/System32", "system32.ntfsls.txt"),
    ],
)
def test_listings_and_records_match_ntfsls(path: Path, directory: str, suffix: str) -> None:
    listed = ntfsls(path, suffix)
    with metered(path) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        names = list_directory(fs, directory, 1000)
        # ntfsls lists the index blocks in their order on disk; the B-tree walk sorts (upper case)
        assert sorted(names) == sorted(listed)
        assert names == sorted(names, key=str.upper)
        for name, (record, size) in listed.items():
            node = resolve(fs, f"{directory.rstrip('/')}/{name}", follow=False)
            assert node is not None and node.id == record, name
            if size is not None and node.kind == Kind.FILE:
                assert node.size == size


def test_index_allocation_lookups_are_cheap(path: Path) -> None:
    # 400 names do not fit the $INDEX_ROOT: the directory has an $INDEX_ALLOCATION (ntfsinfo)
    assert "Dumping attribute $INDEX_ALLOCATION" in recorded(path, "Windows_WinSxS.ntfsinfo.txt")
    listed = ntfsls(path, "winsxs.ntfsls.txt")
    with metered(path) as (disk, reader):
        fs = opened(ntfs.FILESYSTEM, disk)
        winsxs = resolve(fs, "/Windows/WinSxS")
        assert winsxs is not None
        before = reader.reads
        node = fs.lookup(winsxs, "MANIFEST-250.TXT")
        assert node is not None and node.id == listed["manifest-250.txt"][0]
        assert reader.reads - before <= 3
        assert fs.lookup(winsxs, "manifest-401.txt") is None
        assert fs.lookup(winsxs, "a") is None and fs.lookup(winsxs, "z") is None
        assert list_directory(fs, "/Windows/WinSxS", 5) == sorted(listed)[:5]


def test_lookups_ignore_case_and_accept_dos_names(group: Path, path: Path) -> None:
    expected = (group / "tree/ntfs/Program Files/Long Name With Spaces.txt").read_bytes()
    with metered(path) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        assert read_file(fs, "/PROGRAM FILES/long name with spaces.TXT", 100) == expected
        assert read_file(fs, "/PROGRA~1/Long Name With Spaces.txt", 100) == expected
        assert "PROGRA~1" not in list_directory(fs, "/", 100)  # a DOS alias is not listed
        assert resolve(fs, "/windows/system32/CONFIG/software") is not None
        assert resolve(fs, "/Windows/nothing") is None
        assert resolve(fs, "/small.txt/below") is None


def test_a_sparse_file_in_several_records_reads_as_put_in(group: Path, path: Path) -> None:
    info = recorded(path, "sparse.bin.ntfsinfo.txt")
    # ntfsinfo: $DATA in three extents, listed by an $ATTRIBUTE_LIST, sparse (0x8000)
    assert "Dumping attribute $ATTRIBUTE_LIST" in info
    assert len(re.findall(r"Dumping attribute \$DATA", info)) >= 2
    assert "Attribute flags:\t 0x8000" in info
    expected = (group / "tree/ntfs/sparse.bin").read_bytes()
    with metered(path) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        node = resolve(fs, "/sparse.bin")
        assert node is not None and node.size == len(expected)
        assert fs.read(node, 0, node.size) == expected
        assert fs.read(node, 2048 * 300 - 10, 600) == expected[2048 * 300 - 10 : 2048 * 300 + 590]


def test_a_compressed_file_is_not_read(path: Path) -> None:
    info = recorded(path, "Compressed_compressed.txt.ntfsinfo.txt")
    assert re.search(r"Dumping attribute \$DATA.*?Attribute flags:\t 0x0001", info, re.S)
    with metered(path) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        node = resolve(fs, "/compressed/COMPRESSED.TXT")
        assert node is not None and node.kind == Kind.FILE
        with pytest.raises(ImageError, match="compressed NTFS files are not read") as raised:
            fs.read(node, 0, 10)
        assert raised.value.rule == GUEST_NOT_READ


def test_symbolic_links(group: Path, path: Path) -> None:
    assert "REPARSE_POINT" in recorded(path, "windows-link.ntfsinfo.txt")
    assert "SYSTEM" in recorded(path, "interix-link.ntfsinfo.txt")
    with metered(path) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        for name, target in [
            ("windows-link", "Windows/System32/ntoskrnl.exe"),  # a reparse point (setfattr)
            ("interix-link", "Windows/System32/config/SOFTWARE"),  # ntfs-3g's own (ln -s)
        ]:
            node = resolve(fs, f"/{name}", follow=False)
            assert node is not None and node.kind == Kind.SYMLINK
            assert fs.readlink(node) == target
            assert read_file(fs, f"/{name}", 1 << 20) == (group / "tree/ntfs" / target).read_bytes()


def test_open_filesystem_picks_ntfs(group: Path, path: Path) -> None:
    with metered(path) as (disk, _):
        found = filesystems.open_filesystem(disk)
        assert found is not None and found.name == "ntfs"
    for other in ("fat16.img", "plain.iso"):
        with metered(group / other) as (disk, _):
            assert not ntfs.FILESYSTEM.probe(disk)


# --- hostile copies -------------------------------------------------------------------------------


def record_offset(data: bytes, number: int) -> int:
    """Where MFT record `number` is: the FILE record (512-byte aligned) whose header says so."""
    at = data.find(b"FILE")
    while at != -1:
        if at % 512 == 0 and ntfs.MftRecord.unpack(data, at).mft_record_number == number:
            return at
        at = data.find(b"FILE", at + 1)
    raise AssertionError(f"no MFT record {number}")


def attribute_offset(data: bytes, record: int, kind: int) -> int:
    header = ntfs.MftRecord.unpack(data, record)
    at = record + header.attrs_offset
    while ntfs.AttrRecord.unpack(data, at).type != kind:
        at += ntfs.AttrRecord.unpack(data, at).length
    return at


def test_a_record_failing_its_update_sequence_check_is_corrupt(
    path: Path, pristine: bytes, tmp_path: Path
) -> None:
    data = bytearray(pristine)
    record = record_offset(data, ntfsls(path, "ntfsls.txt")["small.txt"][0])
    data[record + 510 : record + 512] = b"\xde\xad"  # the first sector's update sequence number
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        with pytest.raises(CorruptFilesystem, match="fails its update sequence check"):
            resolve(fs, "/small.txt")


@pytest.mark.parametrize("length", [0, 0xFFFFFFF0])
def test_an_attribute_length_zero_or_huge_is_corrupt(
    path: Path, pristine: bytes, tmp_path: Path, length: int
) -> None:
    data = bytearray(pristine)
    record = record_offset(data, ntfsls(path, "ntfsls.txt")["small.txt"][0])
    rewrite(data, ntfs.AttrRecord, record + ntfs.MftRecord.unpack(data, record).attrs_offset, length=length)
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        with pytest.raises(CorruptFilesystem, match=f"an attribute of {length} bytes"):
            resolve(fs, "/small.txt")


def test_a_data_run_past_the_volume_is_corrupt(path: Path, pristine: bytes, tmp_path: Path) -> None:
    data = bytearray(pristine)
    record = record_offset(data, ntfsls(path, "system32.ntfsls.txt")["ntoskrnl.exe"][0])
    attribute = attribute_offset(data, record, ntfs.AT_DATA)
    pairs = (
        attribute + ntfs.NonResidentAttr.unpack(data, attribute + ntfs.AttrRecord.SIZE).mapping_pairs_offset
    )
    size_length, size_offset = data[pairs] & 0x0F, data[pairs] >> 4
    start = pairs + 1 + size_length
    data[start : start + size_offset] = b"\xff" * (size_offset - 1) + b"\x7f"  # the largest LCN it holds
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        with pytest.raises(CorruptFilesystem, match="past the volume's 32767"):
            read_file(fs, "/Windows/System32/ntoskrnl.exe", 100)


def test_an_index_entry_naming_a_record_past_the_mft_is_corrupt(
    path: Path, pristine: bytes, tmp_path: Path
) -> None:
    data = bytearray(pristine)
    record = record_offset(data, ntfsls(path, "ntfsls.txt")["small.txt"][0])
    number = ntfs.MftRecord.unpack(data, record).mft_record_number
    # small.txt's entry in the root's index: its name follows the 16-byte entry header and the 66
    # bytes of FILE_NAME_ATTR (its own $FILE_NAME attribute holds the name too: skip that one)
    found = (
        m.start() - ntfs.FileNameAttr.SIZE - ntfs.IndexEntryHeader.SIZE
        for m in re.finditer(re.escape("small.txt".encode("utf-16-le")), data)
    )
    at = next(
        a for a in found if ntfs.IndexEntryHeader.unpack(data, a).indexed_file & ntfs.MREF_MASK == number
    )
    rewrite(data, ntfs.IndexEntryHeader, at, indexed_file=0x0000_7FFF_FFFF_FFFF)
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(ntfs.FILESYSTEM, disk)
        with pytest.raises(CorruptFilesystem, match="past the end of \\$MFT"):
            resolve(fs, "/small.txt")
