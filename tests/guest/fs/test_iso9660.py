"""ISO 9660 images made by xorriso (Rock Ridge + Joliet) and genisoimage (plain, Joliet only, Rock
Ridge only), against the files put in (tree/iso), what isoinfo listed and blkid said; then hostile
copies."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from introspect.guest import fs as filesystems
from introspect.guest.fs import iso9660
from introspect.guest.fs.base import CorruptFilesystem, Kind, LoopDetected, list_directory, read_file, resolve
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.guest.fs.metered import blkid, derived, metered, opened
from tests.tools import recorded, rewrite

#: image -> the isoinfo listing that names files as our reader should (-R, -J, or plain).
LISTINGS = {
    "xorriso-rj": "isoinfo-l-rr.txt",
    "rockridge": "isoinfo-l-rr.txt",
    "joliet": "isoinfo-l-joliet.txt",
    "plain": "isoinfo-l.txt",
}
ROCK_RIDGE = ["xorriso-rj", "rockridge"]
LONG_NAME = "long-name-" * 20


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("fatntfsiso")


def image(group: Path, name: str) -> Path:
    return group / f"{name}.iso"


def listing(group: Path, name: str) -> dict[str, dict[str, str | None]]:
    """isoinfo -l: directory -> {name: link target or None}, "." and ".." left out."""
    directories: dict[str, dict[str, str | None]] = {}
    current: dict[str, str | None] = {}
    for line in recorded(image(group, name), LISTINGS[name]).splitlines():
        if line.startswith("Directory listing of "):
            current = directories.setdefault(line.removeprefix("Directory listing of "), {})
        elif "]  " in line:
            entry = line.split("]  ", 1)[1].rstrip(" ")
            entry_name, _, target = entry.partition(" -> ")
            if entry_name not in (".", ".."):
                current[entry_name] = target or None
    return directories


def plain(name: str) -> str:
    """An ISO 9660 name as a reader shows it: no ";1", no dot ending an empty extension."""
    return name.split(";", 1)[0].removesuffix(".")


@pytest.mark.parametrize("name", list(LISTINGS))
def test_names_match_blkid_and_isoinfo(group: Path, name: str) -> None:
    path = image(group, name)
    said = blkid(path)
    info = recorded(path, "isoinfo.txt")
    with metered(path) as (disk, _):
        fs = opened(iso9660.FILESYSTEM, disk)
        assert fs.name == said["TYPE"] == "iso9660"
        assert (fs.label, fs.uuid) == (said["LABEL"], said["UUID"])
        assert fs.block_size == int(re.search(r"Logical block size is: (\d+)", info).group(1))  # type: ignore[union-attr]
        assert fs.rock_ridge == ("Rock Ridge signatures" in info) == (name in ROCK_RIDGE)
        assert fs.joliet == (name == "joliet")
        assert fs.case_sensitive == fs.rock_ridge


@pytest.mark.parametrize("name", list(LISTINGS))
def test_every_directory_lists_as_isoinfo_does(group: Path, name: str) -> None:
    with metered(image(group, name)) as (disk, _):
        fs = opened(iso9660.FILESYSTEM, disk)
        for directory, entries in listing(group, name).items():
            if directory.startswith("/rr_moved/"):
                continue  # isoinfo lists what genisoimage relocated there; Linux and we hide it (RE)
            names = list_directory(fs, directory, 1000)
            expected = [entry if name != "plain" else plain(entry) for entry in entries]
            assert sorted(names) == sorted(expected), directory


@pytest.mark.parametrize("name", ROCK_RIDGE)
def test_rock_ridge_files_links_and_long_names(group: Path, name: str) -> None:
    base = group / "tree" / "iso"
    with metered(image(group, name)) as (disk, _):
        fs = opened(iso9660.FILESYSTEM, disk)
        for host in sorted(base.rglob("*")):
            path = "/" + host.relative_to(base).as_posix()
            node = resolve(fs, path, follow=False)
            assert node is not None, path
            if host.is_symlink():
                assert node.kind == Kind.SYMLINK
                assert (
                    fs.readlink(node)
                    == os.readlink(host)
                    == listing(group, name)[
                        "/"
                        + host.parent.relative_to(base).as_posix().lstrip(".").strip("/")
                        + ("/" if host.parent != base else "")
                    ][host.name]
                )
            elif host.is_dir():
                assert node.kind == Kind.DIRECTORY
            else:
                assert node.kind == Kind.FILE
                assert fs.read(node, 0, node.size) == host.read_bytes(), path
        # case matters with Rock Ridge; links are followed inside the image
        assert resolve(fs, "/readme.txt") is None
        assert read_file(fs, "/readme-link", 100) == (base / "README.TXT").read_bytes()
        assert read_file(fs, "/absolute-link", 100) == (base / "boot/grub/grub.cfg").read_bytes()
        assert read_file(fs, "/boot/grub/up-link", 100) == (base / "README.TXT").read_bytes()
        assert read_file(fs, "/efi-dir-link/BOOT/BOOTX64.EFI", 2) == b"MZ"
        # 200 characters: the NM entry goes on in a continuation area
        assert read_file(fs, f"/{LONG_NAME}", 100) == b"long\n"


def test_rock_ridge_relocated_directories_are_followed(group: Path) -> None:
    # genisoimage -R moved the 7th level into rr_moved (isoinfo's plain listing shows RR_MOVED/H)
    assert "Directory listing of /RR_MOVED/H/" in recorded(image(group, "rockridge"), "isoinfo-l.txt")
    with metered(image(group, "rockridge")) as (disk, _):
        fs = opened(iso9660.FILESYSTEM, disk)
        assert read_file(fs, "/a/b/c/d/e/f/g/h/i/deep.txt", 100) == b"deep\n"
        assert list_directory(fs, "/a/b/c/d/e/f/g", 10) == ["h"]
        assert list_directory(fs, "/rr_moved", 10) == []


def test_joliet_names_are_preferred_and_case_insensitive(group: Path) -> None:
    base = group / "tree" / "iso"
    with metered(image(group, "joliet")) as (disk, _):
        fs = opened(iso9660.FILESYSTEM, disk)
        assert (
            read_file(fs, "/mixed case long name.TXT", 100)
            == (base / "Mixed Case Long Name.txt").read_bytes()
        )
        assert (
            read_file(fs, "/efi/boot/bootx64.efi", 2 * 1024 * 1024)
            == (base / "EFI/BOOT/BOOTX64.EFI").read_bytes()
        )
        # Joliet names stop at 64 characters (genisoimage's limit without -joliet-long)
        assert read_file(fs, f"/{LONG_NAME[:64]}", 100) == b"long\n"


def test_plain_names_lose_their_version(group: Path) -> None:
    base = group / "tree" / "iso"
    with metered(image(group, "plain")) as (disk, _):
        fs = opened(iso9660.FILESYSTEM, disk)
        assert read_file(fs, "/readme.txt", 100) == (base / "README.TXT").read_bytes()
        assert read_file(fs, "/MIXED_CA.TXT", 100) == (base / "Mixed Case Long Name.txt").read_bytes()
        assert resolve(fs, "/LONG_NAM") is not None


def test_a_lookup_is_cheap(group: Path) -> None:
    with metered(image(group, "xorriso-rj")) as (disk, reader):
        fs = opened(iso9660.FILESYSTEM, disk)
        opening = reader.reads
        assert resolve(fs, "/EFI/BOOT/BOOTX64.EFI") is not None
        assert resolve(fs, "/boot/grub/grub.cfg") is not None
        assert reader.reads - opening <= 6


def test_open_filesystem_picks_iso9660(group: Path) -> None:
    assert [entry.name for entry in filesystems.REGISTERED][-1] == "iso9660"
    with metered(image(group, "joliet")) as (disk, _):
        found = filesystems.open_filesystem(disk)
        assert found is not None and found.name == "iso9660"
    for other in ("fat12.img", "ntfs.img"):
        with metered(group / other) as (disk, _):
            assert not iso9660.FILESYSTEM.probe(disk)


# --- hostile copies -------------------------------------------------------------------------------


def root_records(data: bytes) -> tuple[int, list[tuple[int, iso9660.DirectoryRecord, bytes]]]:
    """The root directory's byte offset and records (offset, record, identifier), read with the
    declared structures from the primary volume descriptor at sector 16."""
    pvd = iso9660.VolumeDescriptorBody.unpack(data, 16 * 2048)
    root = iso9660.DirectoryRecord.unpack(pvd.root_directory_record)
    start = root.location_of_extent * 2048
    records = []
    at = start
    while data[at]:
        record = iso9660.DirectoryRecord.unpack(data, at)
        size = iso9660.DirectoryRecord.SIZE
        records.append((at, record, bytes(data[at + size : at + size + record.length_of_file_identifier])))
        at += record.length_of_directory_record
    return start, records


def test_a_directory_record_of_length_zero_is_corrupt(group: Path, tmp_path: Path) -> None:
    path = image(group, "xorriso-rj")
    data = bytearray(path.read_bytes())
    start, _ = root_records(data)
    data[start] = 0  # the root's own record: the directory now starts with padding
    with metered(derived(path, tmp_path, data)) as (disk, _):
        with pytest.raises(CorruptFilesystem, match="a directory has no records"):
            opened(iso9660.FILESYSTEM, disk)


def test_a_record_shorter_than_its_fixed_part_is_corrupt(group: Path, tmp_path: Path) -> None:
    path = image(group, "plain")
    data = bytearray(path.read_bytes())
    _, records = root_records(data)
    rewrite(data, iso9660.DirectoryRecord, records[-1][0], length_of_directory_record=20)
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(iso9660.FILESYSTEM, disk)
        with pytest.raises(CorruptFilesystem, match="a directory record of 20 bytes"):
            list_directory(fs, "/", 100)


def test_a_continuation_area_pointing_at_itself_is_a_loop(group: Path, tmp_path: Path) -> None:
    path = image(group, "xorriso-rj")
    data = bytearray(path.read_bytes())
    _, records = root_records(data)
    at, record, identifier = next(r for r in records if r[2].startswith(b"LONG_NAM"))
    used = iso9660.DirectoryRecord.SIZE + len(identifier) + (len(identifier) + 1) % 2
    area = bytes(data[at + used : at + record.length_of_directory_record])
    ce = area.index(b"CE\x1c\x01")
    continuation = iso9660.ContinuationArea.unpack(area, ce + iso9660.SystemUseEntry.SIZE)
    target = (
        continuation.block_location_of_continuation_area * 2048
        + continuation.offset_to_start_of_continuation_area
    )
    # The continuation area now starts with a CE entry naming the area itself.
    entry = pack(iso9660.SystemUseEntry(b"CE", 28, 1)) + pack(continuation)
    data[target : target + len(entry)] = entry
    with metered(derived(path, tmp_path, data)) as (disk, _):
        fs = opened(iso9660.FILESYSTEM, disk)
        with pytest.raises(LoopDetected, match="Rock Ridge continuation areas"):
            resolve(fs, f"/{LONG_NAME}")
