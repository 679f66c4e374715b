"""UDIF images from the documented writer in fixtures/make/named.sh, judged against qemu-img and
dmg2img (two independent readers)."""

from __future__ import annotations

import re

import pytest

import introspect
from introspect.formats.dmg import KOLY_SIZE, UDIFResourceFile
from introspect.sources import TAIL_SIZE
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded, rewrite

IMAGES = ["payload-7m3s", "payload-1t", "koly-count"]


@pytest.fixture(scope="module")
def named():
    return fixture_group("named")


def _dmg2img(image):
    """dmg2img -l -v: "reading property list, LENGTH bytes from address OFFSET"."""
    text = recorded(image, "dmg2img.txt")
    found = re.search(r"reading property list, (\d+) bytes from address (\d+)", text)
    return int(found[2]), int(found[1])


@pytest.mark.parametrize("name", IMAGES)
def test_images_match_qemu_and_dmg2img(named, name):
    image = named / f"{name}.dmg"
    report = introspect.inspect(image)
    info = qemu_info(image)
    assert report.format == info["format"] == "dmg"
    assert report.verdict == "ok", report.findings
    assert report.virtual_size == info["virtual-size"] == report.details.sector_count * 512
    assert (report.details.xml_offset, report.details.xml_length) == _dmg2img(image)
    assert report.details.version == 4
    assert report.details.segment_count == 1
    # The whole trailer is in the cached tail: nothing else is read.
    assert report.reads == 1
    assert report.bytes_read == image.stat().st_size
    assert report.bytes_read >= TAIL_SIZE


def test_virtual_size_is_the_trailer_sector_count_as_in_qemu(named):
    # The block tables map 129 MiB; the koly trailer says 1027 MiB, and so does qemu-img.
    info = qemu_info(named / "koly-count.dmg")
    report = introspect.inspect(named / "koly-count.dmg")
    assert report.virtual_size == info["virtual-size"] == 1027 * 1024 * 1024


def test_reads_do_not_depend_on_the_virtual_size(named):
    small = introspect.inspect(named / "payload-7m3s.dmg")
    big = introspect.inspect(named / "payload-1t.dmg")
    assert big.virtual_size == qemu_info(named / "payload-1t.dmg")["virtual-size"] == 1 << 40
    assert (small.reads, small.bytes_read) == (big.reads, big.bytes_read)


def _patched(named, tmp_path, **fields):
    """payload-7m3s with koly fields replaced, through the trailer's own layout."""
    image = tmp_path / "patched.dmg"
    data = bytearray((named / "payload-7m3s.dmg").read_bytes())
    rewrite(data, UDIFResourceFile, len(data) - KOLY_SIZE, **fields)
    image.write_bytes(bytes(data))
    return image


def test_segmented_image_is_rejected(named, tmp_path):
    report = introspect.inspect(_patched(named, tmp_path, segment_number=1, segment_count=3))
    assert report.verdict == "rejected"
    [finding] = report.findings
    assert finding.code == "dmg.segmented"
    assert finding.message.startswith("the image is segment 1 of 3 of a segmented disk image")
    assert "hdiutil convert" in finding.message


def test_unknown_version_is_a_warning(named, tmp_path):
    report = introspect.inspect(_patched(named, tmp_path, version=5))
    assert report.verdict == "ok"
    [finding] = report.findings
    assert (finding.code, finding.severity) == ("dmg.unknown_version", "warn")
    assert finding.message.startswith("the koly trailer says version 5 with a 512-byte header")


def _error(image):
    report = introspect.inspect(image)
    assert report.verdict == "error"
    assert report.format == "dmg"
    [finding] = report.findings
    return finding


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"xml_length": 0}, "XMLLength is 0, expected from 1 to 16777216 bytes of property list"),
        ({"xml_length": 32 << 20, "xml_offset": 0, "data_fork_length": 0}, "XMLLength is 33554432"),
        ({"sector_count": 1 << 63}, "SectorCount is 9223372036854775808, expected at most 18014398509481983"),
        ({"rsrc_fork_offset": 1 << 40}, "RsrcForkOffset is 1099511627776, expected at most"),
    ],
)
def test_trailer_fields_qemu_refuses_are_errors(named, tmp_path, fields, message):
    finding = _error(_patched(named, tmp_path, **fields))
    assert finding.code == "dmg.bad_trailer"
    assert message in finding.message


def test_plist_past_the_trailer_is_an_error(named, tmp_path):
    image = named / "payload-7m3s.dmg"
    offset, length = _dmg2img(image)
    finding = _error(_patched(named, tmp_path, xml_length=length + 1))
    koly_offset = image.stat().st_size - KOLY_SIZE
    assert finding.code == "dmg.bad_trailer"
    assert finding.message.startswith(
        f"XMLOffset + XMLLength is {offset + length + 1}, expected at most {koly_offset}, where the koly "
        "trailer starts: bytes before the trailer are missing"
    )


def test_trailer_without_its_forks_is_an_error(named, tmp_path):
    # All that is left of the image is its last 512 bytes.
    image = tmp_path / "trailer-only.dmg"
    image.write_bytes((named / "payload-7m3s.dmg").read_bytes()[-KOLY_SIZE:])
    finding = _error(image)
    assert finding.code == "dmg.bad_trailer"
    assert re.match(
        r"DataForkOffset \+ DataForkLength is \d+, expected at most 0, where the koly trailer",
        finding.message,
    )
    assert "upload it again" in finding.message


def test_image_cut_short_loses_its_trailer_and_is_not_named_dmg(named, tmp_path):
    image = tmp_path / "cut.dmg"
    image.write_bytes((named / "payload-7m3s.dmg").read_bytes()[:-100])
    assert introspect.inspect(image).format != "dmg"
