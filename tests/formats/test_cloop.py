"""cloop V2.0 images made by create_compressed_fs (fixtures/make/named.sh), judged against qemu-img
and extract_compressed_fs."""

from __future__ import annotations

import re

import pytest

import introspect
from introspect.formats.cloop import OFFSET_SIZE, OFFSETS_START, BlockOffset, CloopHead
from introspect.sources import HEAD_SIZE, TAIL_SIZE
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded, rewrite

IMAGES = ["iso-64k", "zero-7m-512", "zero-129m-192k"]


@pytest.fixture(scope="module")
def named():
    return fixture_group("named")


def _extracted(image):
    """extract_compressed_fs: "compressed input has N blocks of size B."."""
    found = re.search(r"has (\d+) blocks of size (\d+)", recorded(image, "extract_compressed_fs.txt"))
    return int(found[1]), int(found[2])


@pytest.mark.parametrize("name", IMAGES)
def test_images_match_qemu_and_cloop_utils(named, name):
    image = named / f"{name}.cloop"
    report = introspect.inspect(image)
    info = qemu_info(image)
    n_blocks, block_size = _extracted(image)
    assert report.format == info["format"] == "cloop"
    assert report.verdict == "ok", report.findings
    assert report.virtual_size == info["virtual-size"] == n_blocks * block_size
    assert (report.details.n_blocks, report.details.block_size) == (n_blocks, block_size)
    assert report.details.version == 2
    assert report.details.data_end == image.stat().st_size
    # The head and tail, and at most the last offset when the table runs past the head.
    assert report.reads <= 3
    assert report.bytes_read <= HEAD_SIZE + TAIL_SIZE + OFFSET_SIZE


def test_offsets_table_is_not_read(named):
    image = named / "zero-7m-512.cloop"
    n_blocks, _ = _extracted(image)
    assert OFFSETS_START + (n_blocks + 1) * OFFSET_SIZE > HEAD_SIZE
    report = introspect.inspect(image)
    assert report.reads == 3
    assert report.bytes_read == HEAD_SIZE + TAIL_SIZE + OFFSET_SIZE


def _patched(named, tmp_path, name="iso-64k", **fields):
    image = tmp_path / "patched.cloop"
    data = bytearray((named / f"{name}.cloop").read_bytes())
    rewrite(data, CloopHead, **fields)
    image.write_bytes(bytes(data))
    return image


def _only_finding(image):
    report = introspect.inspect(image)
    assert report.verdict == "error"
    assert report.format == "cloop"
    [finding] = report.findings
    return finding


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"block_size": 1000}, "block_size is 1000, expected a non-zero multiple of 512 of at most 67108864"),
        ({"block_size": 0}, "block_size is 0, expected a non-zero multiple of 512"),
        ({"block_size": 128 << 20}, "block_size is 134217728, expected a non-zero multiple of 512 of"),
        ({"num_blocks": 0xFFFFFFFF}, "num_blocks is 4294967295, expected at most 67108863"),
    ],
)
def test_header_fields_qemu_refuses_are_errors(named, tmp_path, fields, message):
    finding = _only_finding(_patched(named, tmp_path, **fields))
    assert finding.code == "cloop.bad_header"
    assert finding.message.startswith(message)
    assert "upload the uncompressed ISO" in finding.message


def test_offsets_going_backwards_are_an_error(named, tmp_path):
    image = tmp_path / "backwards.cloop"
    data = bytearray((named / "iso-64k.cloop").read_bytes())
    n_blocks, _ = _extracted(named / "iso-64k.cloop")
    last = OFFSETS_START + n_blocks * OFFSET_SIZE
    rewrite(data, BlockOffset, last, offset=0)
    image.write_bytes(bytes(data))
    finding = _only_finding(image)
    assert finding.code == "cloop.bad_header"
    assert finding.message.startswith(f"offsets[{n_blocks}] is 0, expected at least offsets[0]")


def test_other_cloop_versions_are_named_but_refused(named, tmp_path):
    image = tmp_path / "v4.cloop"
    data = (named / "iso-64k.cloop").read_bytes()
    assert data.startswith(b"#!/bin/sh\n#V2.0 Format\n")
    image.write_bytes(data.replace(b"#V2.0 Format", b"#V4.0 Format", 1))
    finding = _only_finding(image)
    assert finding.code == "cloop.unsupported_version"
    assert finding.message.startswith("preamble version is '4.0', expected 2.0: qemu reads only cloop V2.0")


def test_cut_offsets_table_is_truncated(named, tmp_path):
    original = named / "zero-7m-512.cloop"
    n_blocks, _ = _extracted(original)
    image = tmp_path / "cut.cloop"
    image.write_bytes(original.read_bytes()[:100_000])
    finding = _only_finding(image)
    assert finding.code == "image.truncated"
    end = OFFSETS_START + (n_blocks + 1) * OFFSET_SIZE
    assert finding.message.startswith(
        f"the cloop offsets table needs bytes {OFFSETS_START}..{end} but the file ends at 100000: "
        "the image was cut short"
    )


def test_cut_blocks_are_truncated(named, tmp_path):
    original = named / "zero-129m-192k.cloop"
    size = original.stat().st_size
    image = tmp_path / "cut.cloop"
    image.write_bytes(original.read_bytes()[: size - 1000])
    finding = _only_finding(image)
    assert finding.code == "image.truncated"
    assert re.match(
        rf"the cloop block data needs bytes \d+\.\.{size} but the file ends at {size - 1000}", finding.message
    )
