"""Bochs redologs made by bximage (fixtures/make/named.sh), judged against qemu-img and bximage."""

from __future__ import annotations

import re
import shutil

import pytest

import introspect
from introspect.formats.bochs import HEADER_V1, HEADER_VERSION, RedologHeader, StandardHeader
from introspect.sources import HEAD_SIZE, TAIL_SIZE
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded, rewrite

GROWING = ["growing-10m", "growing-129m", "growing-1g3m", "growing-1t"]


@pytest.fixture(scope="module")
def named():
    return fixture_group("named")


def _bximage(image):
    """bximage -func=info: the mode and the C/H/S geometry it reads from the image."""
    text = recorded(image, "bximage.txt")
    mode = re.search(r"disk image mode = '(\w+)'", text)[1]
    cylinders, heads, sectors = map(int, re.search(r"geometry = (\d+)/(\d+)/(\d+)", text).groups())
    return mode, cylinders * heads * sectors * 512


@pytest.mark.parametrize("name", GROWING)
def test_growing_images_match_qemu_and_bximage(named, name):
    image = named / f"{name}.bochs"
    report = introspect.inspect(image)
    info = qemu_info(image)
    mode, geometry_size = _bximage(image)
    assert report.format == info["format"] == "bochs"
    assert report.verdict == "ok", report.findings
    assert report.virtual_size == info["virtual-size"] == geometry_size
    assert report.details.subtype.lower() == mode
    assert report.details.version == HEADER_VERSION >> 16
    assert report.details.disk_size // 512 * 512 == info["virtual-size"]
    assert report.details.catalog_entries * report.details.extent_size >= info["virtual-size"]
    assert report.details.timestamp is None
    assert report.reads <= 2
    assert report.bytes_read <= HEAD_SIZE + TAIL_SIZE


def test_reads_do_not_depend_on_the_virtual_size(named):
    small = introspect.inspect(named / "growing-1g3m.bochs")
    big = introspect.inspect(named / "growing-1t.bochs")
    assert big.virtual_size > 1000 * small.virtual_size
    assert (small.reads, small.bytes_read) == (big.reads, big.bytes_read)


def test_version_1_header_reads_the_disk_size_where_qemu_does(named):
    image = named / "v1-10m.bochs"
    report = introspect.inspect(image)
    assert report.verdict == "ok"
    assert report.details.version == HEADER_V1 >> 16
    assert (
        report.virtual_size
        == qemu_info(image)["virtual-size"]
        == qemu_info(named / "growing-10m.bochs")["virtual-size"]
    )


def test_undoable_redolog_is_named_and_rejected_as_qemu_refuses_it(named):
    image = named / "undoable-10m.bochs"
    assert "Image not in Bochs format" in recorded(image, "qemu-img.err")
    report = introspect.inspect(image)
    assert report.format == "bochs"
    assert report.details.subtype == "Undoable"
    assert report.verdict == "rejected"
    [finding] = report.findings
    assert finding.code == "bochs.not_growing"
    assert "'Undoable' redolog" in finding.message
    assert "bximage -func=commit" in finding.message


def _patched(named, tmp_path, standard=None, redolog=None):
    """growing-10m (a version 2 header) with header fields replaced."""
    image = tmp_path / "patched.bochs"
    shutil.copyfile(named / "growing-10m.bochs", image)
    data = bytearray(image.read_bytes())
    assert StandardHeader.unpack(data).version == HEADER_VERSION
    rewrite(data, StandardHeader, **(standard or {}))
    rewrite(data, RedologHeader, **(redolog or {}))
    image.write_bytes(bytes(data))
    return image


@pytest.mark.parametrize(
    ("standard", "redolog", "message"),
    [
        ({"type": b"Flat"}, None, "type is 'Flat', expected 'Redolog'"),
        ({"version": 0x00030000}, None, "version is '0x30000', expected 0x20000 or 0x10000"),
        (None, {"catalog": 0x100001}, "catalog is 1048577, expected at most 1048576 entries"),
        (None, {"extent": 3000}, "extent is 3000, expected a power of two from 512 to 8388608"),
        (None, {"extent": 1 << 24}, "extent is 16777216, expected a power of two from 512 to 8388608"),
    ],
)
def test_fields_qemu_refuses_are_errors(named, tmp_path, standard, redolog, message):
    report = introspect.inspect(_patched(named, tmp_path, standard, redolog))
    assert report.verdict == "error"
    assert report.format == "bochs"
    [finding] = report.findings
    assert finding.code == "bochs.bad_header"
    assert finding.message.startswith(message)
    assert "bximage -func=convert" in finding.message


def test_catalog_too_small_for_the_disk_is_an_error(named, tmp_path):
    original = named / "growing-10m.bochs"
    extent = RedologHeader.unpack(original.read_bytes()).extent
    size = qemu_info(original)["virtual-size"]
    report = introspect.inspect(_patched(named, tmp_path, redolog={"catalog": 1}))
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "bochs.bad_header"
    assert finding.message.startswith(
        f"catalog is 1, expected at least {-(-size // extent)} entries to map a disk of {size} bytes"
    )


def test_cut_header_is_truncated(named, tmp_path):
    image = tmp_path / "cut.bochs"
    image.write_bytes((named / "growing-10m.bochs").read_bytes()[:300])
    report = introspect.inspect(image)
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "image.truncated"
    assert finding.message.startswith(
        "the bochs header needs bytes 0..512 but the file ends at 300: the image was cut short"
    )


def test_cut_catalog_is_truncated(named, tmp_path):
    # qemu-img pads a short read with zeros and would still open this; its catalog is gone.
    original = named / "growing-1t.bochs"
    image = tmp_path / "cut.bochs"
    image.write_bytes(original.read_bytes()[: 600 * 1024])
    report = introspect.inspect(image)
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "image.truncated"
    assert finding.message.startswith(
        f"the bochs catalog needs bytes 512..{original.stat().st_size} but the file ends at {600 * 1024}"
    )
