"""Compression wrappers made by gzip, xz, bzip2 and zstd around qcow2 images qemu-img made
(fixtures/make/named.sh): the decompressed head must be the original file's first bytes."""

from __future__ import annotations

import pytest

from introspect.containers.compressed import (
    DECOMPRESSED_HEAD_SIZE,
    DecompressedHead,
    cannot_decompress,
    open_decompressed,
    sniff,
    zstd_available,
)
from introspect.errors import BadField, BudgetExceeded, TruncatedImage
from introspect.sources import HEAD_SIZE, Budget, FileSource, Reader
from tests.conftest import fixture_group
from tests.tools import qemu_info

SUFFIXES = {"gz": "gzip", "xz": "xz", "bz2": "bz2", "zst": "zstd"}
#: What this machine's Python can decompress (zstd needs the optional `zstandard` package).
DECOMPRESSIBLE = ["gz", "xz", "bz2", *(["zst"] if zstd_available() else [])]


@pytest.fixture(scope="module")
def named():
    return fixture_group("named")


def _decompress(path, kind, **caps):
    with FileSource(path) as source:
        reader = Reader(source)
        reader.head()
        reader.tail()
        return open_decompressed(reader, kind, **caps), reader


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_sniff_names_each_wrapper(named, suffix):
    for image in ("wrapped-1g3m.qcow2", "wrapped-1t.qcow2"):
        head = (named / f"{image}.{suffix}").read_bytes()[:HEAD_SIZE]
        assert sniff(head) == SUFFIXES[suffix]


@pytest.mark.parametrize("name", ["wrapped-1g3m.qcow2", "payload.iso", "growing-10m.bochs", "iso-64k.cloop"])
def test_sniff_leaves_images_alone(named, name):
    assert sniff((named / name).read_bytes()[:HEAD_SIZE]) is None


@pytest.mark.parametrize("suffix", DECOMPRESSIBLE)
def test_small_image_decompresses_whole(named, suffix):
    original = (named / "wrapped-1g3m.qcow2").read_bytes()
    assert qemu_info(named / "wrapped-1g3m.qcow2")["format"] == "qcow2"
    wrapped = named / f"wrapped-1g3m.qcow2.{suffix}"
    head, reader = _decompress(wrapped, SUFFIXES[suffix])
    assert isinstance(head, DecompressedHead)
    assert head.kind == SUFFIXES[suffix]
    assert head.complete
    assert head.size == len(original)
    assert head.pread(0, head.size) == original
    assert head.compressed_read == wrapped.stat().st_size
    # The compressed file fits in the cached head: decompressing it costs no read.
    assert reader.reads == 1


@pytest.mark.parametrize("suffix", DECOMPRESSIBLE)
def test_large_image_gives_a_capped_head(named, suffix):
    original = named / "wrapped-1t.qcow2"
    assert original.stat().st_size > DECOMPRESSED_HEAD_SIZE
    head, reader = _decompress(named / f"wrapped-1t.qcow2.{suffix}", SUFFIXES[suffix])
    assert not head.complete
    assert head.size == DECOMPRESSED_HEAD_SIZE
    assert head.pread(0, head.size) == original.read_bytes()[:DECOMPRESSED_HEAD_SIZE]
    assert reader.reads == 1


def test_concatenated_gzip_members_decompress_as_one(named):
    original = (named / "wrapped-1g3m.qcow2").read_bytes()
    head, _ = _decompress(named / "wrapped-1g3m.qcow2.members.gz", "gzip")
    assert head.complete
    assert head.pread(0, head.size) == original


def test_decompression_bomb_stops_at_the_output_cap(named):
    bomb = named / "zeros-256m.raw.gz"
    head, reader = _decompress(bomb, "gzip")
    assert not head.complete
    assert head.size == DECOMPRESSED_HEAD_SIZE
    assert head.pread(0, head.size) == bytes(DECOMPRESSED_HEAD_SIZE)
    # A few KiB of a 256 KiB file, all within the cached head.
    assert head.compressed_read <= HEAD_SIZE < bomb.stat().st_size
    assert (reader.reads, reader.bytes_read) == (2, HEAD_SIZE + 512)


def test_input_cap_stops_early_with_an_incomplete_head(named):
    original = (named / "wrapped-1g3m.qcow2").read_bytes()
    head, _ = _decompress(named / "wrapped-1g3m.qcow2.xz", "xz", max_input=100)
    assert not head.complete
    assert head.compressed_read == 100
    assert head.pread(0, head.size) == original[: head.size]


def test_output_cap_is_exact(named):
    original = (named / "wrapped-1g3m.qcow2").read_bytes()
    exact, _ = _decompress(named / "wrapped-1g3m.qcow2.bz2", "bz2", max_output=len(original))
    assert exact.complete and exact.size == len(original)
    short, _ = _decompress(named / "wrapped-1g3m.qcow2.bz2", "bz2", max_output=len(original) - 1)
    assert not short.complete and short.pread(0, short.size) == original[:-1]


def test_reads_past_the_head_count_against_the_budget(named):
    with FileSource(named / "zeros-256m.raw.gz") as source:
        reader = Reader(source, Budget(max_reads=2))
        reader.head()
        reader.tail()
        with pytest.raises(BudgetExceeded) as raised:
            open_decompressed(reader, "gzip", max_output=100 << 20)
    assert str(raised.value).startswith(
        "reading the gzip stream would exceed the inspection budget (at most 2 reads)"
    )


def test_zstd_is_named_even_where_it_cannot_be_decompressed(named):
    head, _ = _decompress(named / "wrapped-1g3m.qcow2.zst", "zstd")
    if zstd_available():
        assert head is not None and head.complete
    else:
        assert head is None
        finding = cannot_decompress("zstd")
        assert finding.code == "compressed.unsupported"
        assert finding.message.startswith(
            "the image is zstd-compressed and this installation cannot decompress"
        )


@pytest.mark.parametrize("suffix", ["gz", "xz", "bz2"])
def test_cut_stream_is_truncated(named, tmp_path, suffix):
    wrapped = (named / f"wrapped-1g3m.qcow2.{suffix}").read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(wrapped[: len(wrapped) // 2])
    with FileSource(cut) as source:
        reader = Reader(source)
        reader.head()
        with pytest.raises(TruncatedImage) as raised:
            open_decompressed(reader, SUFFIXES[suffix])
    size = len(wrapped) // 2
    assert str(raised.value).startswith(
        f"the {SUFFIXES[suffix]} stream needs bytes {size}..{size + 1} but the file ends at {size}: "
        "the image was cut short"
    )


@pytest.mark.parametrize(
    ("suffix", "from_end", "words"),
    [
        ("gz", 8, "incorrect data check"),  # RFC 1952 §2.3.1: the member ends with CRC32, ISIZE
        ("xz", 2, "Corrupt input data"),  # .xz §2.1.2.4: the footer ends "YZ"
    ],
)
def test_damaged_stream_is_corrupt(named, tmp_path, suffix, from_end, words):
    data = bytearray((named / f"wrapped-1g3m.qcow2.{suffix}").read_bytes())
    data[-from_end] ^= 0xFF
    damaged = tmp_path / f"damaged.{suffix}"
    damaged.write_bytes(bytes(data))
    with FileSource(damaged) as source:
        reader = Reader(source)
        reader.head()
        with pytest.raises(BadField) as raised:
            open_decompressed(reader, SUFFIXES[suffix])
    kind = SUFFIXES[suffix]
    assert raised.value.rule.code == "compressed.corrupt"
    assert str(raised.value).startswith(f"the {kind} stream is ")
    assert words in str(raised.value)
    assert str(raised.value).endswith(
        f"expected valid {kind} data: the compressed file is damaged: compress the image again and upload it"
    )
