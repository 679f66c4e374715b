"""Raw files: what no format claims. A disk (partition table, filesystem, zeros) is `ok`; anything
libmagic names as something else (a web page, an archive, compressed data, a program) is rejected
with `raw.not_a_disk_image`. libmagic's words are compared with file(1)'s, recorded at build time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import introspect
from introspect.formats import raw
from introspect.safety import DEFAULT_POLICY
from introspect.sources import FileSource, Reader
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded

#: What each raw fixture is (fixtures/make/partitions.sh) and whether it is a disk.
DISKS = ["zeros.raw", "ext4.img", "vfat.img", "swap.img"]
NOT_DISKS = {
    "page.html": "check the URL",
    "archive.tar": "archive",
    "program.elf": "program",
}
#: Compressed files: once the inspector looks inside compression wrappers (introspect.formats.
#: compressed), these reach raw only when the wrapper is not opened, so raw's own verdict on them
#: is tested through the format's parser directly.
COMPRESSED = ["page.html.gz", "page.html.xz", "page.html.zst", "page.html.bz2"]
PARTITIONED = [
    "gpt-129m.img",
    "gpt-1t.img",
    "gpt-4k.img",
    "gpt-grown.img",
    "gpt-cut.img",
    "mbr.img",
    "mbr-boot.img",
]


def image(name: str) -> Path:
    return fixture_group("partitions") / name


@pytest.mark.parametrize("name", [*DISKS, *NOT_DISKS, *PARTITIONED])
def test_virtual_size_is_what_qemu_says(name):
    report = introspect.inspect(image(name))
    assert report.format == "raw"
    assert report.virtual_size == qemu_info(image(name))["virtual-size"]


@pytest.mark.parametrize("name", DISKS)
def test_disks_without_partition_table_are_ok(name):
    report = introspect.inspect(image(name))
    assert report.verdict == "ok", report.findings
    assert report.findings == []
    assert report.details.partition_table is None
    assert report.details.firmware is None
    assert report.details.magic == recorded(image(name), "file.txt").strip()
    # file(1) says these are octet-streams; introspect does not ask libmagic again when the
    # description already names a disk (or "data")
    assert recorded(image(name), "mime.txt").strip() == "application/octet-stream"
    assert report.details.mime is None
    assert report.reads <= 2


@pytest.mark.parametrize(("name", "advice"), NOT_DISKS.items())
def test_not_a_disk_is_rejected_with_what_libmagic_says(name, advice):
    report = introspect.inspect(image(name))
    assert report.verdict == "rejected"
    [finding] = report.findings
    assert finding.code == "raw.not_a_disk_image"
    assert finding.severity == "reject"
    # file(1) reads the whole file; introspect gives libmagic the first 64 KiB, so file(1) may say
    # more (gzip's "original size" is at the end). For an ELF program, file(1) also reads the
    # dynamic section (PIE or not), so only the kind is compared there.
    file_says = recorded(image(name), "file.txt").strip()
    if name == "program.elf":
        assert report.details.magic.split(",")[0].startswith("ELF 64-bit LSB")
        assert file_says.startswith("ELF 64-bit LSB")
    else:
        assert file_says.startswith(report.details.magic)
        assert report.details.mime == recorded(image(name), "mime.txt").strip()
    assert f"libmagic says the content is {report.details.magic!r} ({report.details.mime})" in finding.message
    assert advice in finding.message
    assert report.reads == 1  # the head is the whole file


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_content_is_not_a_disk(name):
    with FileSource(image(name)) as source:
        inspection = raw.FORMAT.inspect(Reader(source), DEFAULT_POLICY)
    assert inspection.virtual_size == qemu_info(image(name))["virtual-size"]
    assert recorded(image(name), "file.txt").startswith(inspection.details.magic)
    assert inspection.details.mime == recorded(image(name), "mime.txt").strip()
    [finding] = inspection.findings
    assert finding.code == "raw.not_a_disk_image"
    assert finding.message.endswith(
        "not a disk image: the image is compressed: decompress it, or upload it with the matching "
        "container format"
    )


def test_html_page_message():
    [finding] = introspect.inspect(image("page.html")).findings
    assert finding.message == (
        "libmagic says the content is 'HTML document, ASCII text' (text/html), not a disk image: "
        "the upload saved a web page (an error or login page?): check the URL"
    )


def test_policy_can_demote_not_a_disk():
    policy = introspect.safety.Policy(severity={"raw.not_a_disk_image": "warn"})
    report = introspect.inspect(image("archive.tar"), policy=policy)
    assert report.verdict == "ok"
    assert [f.severity for f in report.findings] == ["warn"]


@pytest.mark.parametrize("name", PARTITIONED)
def test_partitioned_disks_are_disks_whatever_libmagic_says(name):
    report = introspect.inspect(image(name))
    assert report.verdict == "ok"
    assert report.details.partition_table is not None
    assert "raw.not_a_disk_image" not in {f.code for f in report.findings}
    # the partition table names the content: libmagic is not asked
    assert report.details.mime is None and report.details.magic is None


def test_partition_beyond_end_of_cut_disk():
    """sgdisk -v on the cut disk: "Problem: partition 4 is too big for the disk"."""
    assert "partition 4 is too big for the disk" in recorded(image("gpt-cut.img"), "sgdisk-verify.txt")
    report = introspect.inspect(image("gpt-cut.img"))
    [finding] = [f for f in report.findings if f.code == "raw.partition_beyond_end"]
    assert finding.severity == "warn"
    assert finding.message.startswith(f"partition(s) 4 end past the end of the file ({report.size} bytes)")


def test_raw_report_serialises():
    report = introspect.inspect(image("gpt-129m.img"))
    again = type(report).model_validate_json(report.model_dump_json())
    assert again == report
    assert again.details.partition_table.scheme == "gpt"


def test_a_blank_disk_is_what_libmagic_calls_data():
    """The all-zero shortcut agrees with libmagic itself (and with file(1)'s record)."""
    import magic

    head = image("zeros.raw").read_bytes()[:65536]
    assert head.count(0) == len(head)
    assert raw.describe(head) == magic.from_buffer(head) == recorded(image("zeros.raw"), "file.txt").strip()
