"""Guest views of images inside containers (fixtures/make/views2.sh): a compressed image's view
reads what its decompressed head holds and refuses, cleanly, what lies past it; an OVA member's view
reads the disk in place, through the archive."""

from __future__ import annotations

import pytest

import introspect
from introspect.containers import compressed, ova
from introspect.containers.base import Member
from introspect.containers.compressed import (
    DECOMPRESSED_HEAD_SIZE,
    NotDecompressed,
    guest_source,
    zstd_available,
)
from introspect.formats import BY_NAME
from introspect.safety import DEFAULT_POLICY
from introspect.sources import FileSource, Reader
from tests.formats.views2_disk import (
    GUEST_BUDGET,
    MIB,
    SECTOR,
    assert_reads_like_source,
    checks,
    group,
    layout,
    source,
)

WRAPPERS = {"gz": compressed.GZIP, "xz": compressed.XZ, "zst": compressed.ZSTD}
#: zstd needs the optional `zstandard` package.
SUFFIXES = ["gz", "xz", *(["zst"] if zstd_available() else [])]


def member_view(name: str, suffix: str):
    """The container opened as the inspector opens it, and its member's guest view over
    `guest_source(member)`, through a Reader with the guest budget."""
    path = group() / f"{name}.{suffix}"
    report = introspect.inspect(path)
    assert report.container_format == WRAPPERS[suffix].name
    with FileSource(path) as file:
        unpacked = WRAPPERS[suffix].open(Reader(file), DEFAULT_POLICY)
    member = unpacked.boot_member
    assert isinstance(member, Member)
    reader = Reader(guest_source(member), GUEST_BUDGET)
    return BY_NAME[report.format].load().guest(reader, report.details), member, reader


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_disk_whole_in_its_head_reads_whole(suffix):
    """small.raw (3 MiB) decompresses whole: its view is the file's, to its last byte."""
    view, member, _ = member_view("small.raw", suffix)
    assert member.complete
    small = (group() / "small.raw").read_bytes()
    assert view.size == len(small)
    assert view.read(0, view.size) == small
    with pytest.raises(introspect.TruncatedImage):
        view.read(view.size, SECTOR)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_raw_disk_reads_as_far_as_its_head_then_says_it_was_not_decompressed(suffix):
    view, member, _ = member_view("disk.raw", suffix)
    assert not member.complete
    assert_reads_like_source(view, ["protective MBR and GPT header", "GPT entries", "in the ESP (zeros)"])
    ext4 = checks()["ext4 superblock"]
    assert ext4[0] > DECOMPRESSED_HEAD_SIZE
    with pytest.raises(
        NotDecompressed, match=f"past the {DECOMPRESSED_HEAD_SIZE} bytes decompressed"
    ) as raised:
        view.read(*ext4)
    assert raised.value.rule is compressed.PARTIAL
    # A read that starts in the head and ends past it is refused whole: never zeros for the rest.
    with pytest.raises(NotDecompressed):
        view.read(DECOMPRESSED_HEAD_SIZE - SECTOR, 2 * SECTOR)


def test_a_sparse_format_whole_in_its_head_reads_whole():
    """disk.vmdk (1.6 MB of grains and tables for the 48 MiB disk) decompresses whole."""
    view, member, reader = member_view("disk.vmdk", "gz")
    assert member.complete
    assert view.size == layout().size
    assert_reads_like_source(view)
    assert reader.reads <= 48


def test_a_sparse_format_reads_the_blocks_its_head_holds():
    """disk.vhd (12 MB) is cut at 4 MiB: its BAT and first blocks (the GPT's, the ext4
    superblock's) are in the head, the block of the random file is not."""
    view, member, _ = member_view("disk.vhd", "gz")
    assert not member.complete
    assert_reads_like_source(view, ["protective MBR and GPT header", "GPT entries", "ext4 superblock"])
    with pytest.raises(NotDecompressed):
        view.read(*checks()["the random file"])


def test_an_ova_member_is_read_in_place_through_the_archive():
    """The OVA opened through the guest pass's own reader (so that every byte counts against its
    budget once), and its disk's view over the member's slice of the archive."""
    path = group() / "disk.ova"
    report = introspect.inspect(path)
    assert (report.container_format, report.format) == ("ova", "vmdk")
    with FileSource(path) as file:
        archive = Reader(file, GUEST_BUDGET)
        unpacked = ova.OVA.open(archive, DEFAULT_POLICY)
        assert unpacked is not None
        member = unpacked.boot_member
        assert member is not None
        assert member.name == "disk-stream.vmdk"
        view = BY_NAME["vmdk"].load().guest(Reader(member.source, GUEST_BUDGET), report.details)
        assert view.size == layout().size
        assert_reads_like_source(view)
        assert archive.reads <= 64
        assert archive.bytes_read <= 2 * MIB
        # The disk's first 16 MiB, through the archive, are the source disk's.
        first = b"".join(view.read(offset, 4 * MIB) for offset in range(0, 16 * MIB, 4 * MIB))
    assert first == source()[: 16 * MIB]
