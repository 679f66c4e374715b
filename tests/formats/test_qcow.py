"""qcow version 1, against what `qemu-img info` recorded for images qemu-img itself made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import introspect
from introspect.formats import qcow
from introspect.formats.qcow import QCowHeader
from introspect.model import Verdict
from tests.conftest import fixture_group
from tests.tools import qemu_info, rewrite

IMAGES = ["qcow-1g3m", "qcow-129g", "qcow-1t", "qcow-base", "qcow-backed", "qcow-aes"]


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("qcow")


def image(group: Path, name: str) -> Path:
    return group / f"{name}.qcow"


def patched(group: Path, tmp_path: Path, name: str, **changes: Any) -> Path:
    """A copy of fixture NAME with header fields changed."""
    data = bytearray(image(group, name).read_bytes())
    rewrite(data, QCowHeader, **changes)
    path = tmp_path / f"{name}-patched.qcow"
    path.write_bytes(data)
    return path


def codes(report: introspect.Report) -> list[str]:
    return [finding.code for finding in report.findings]


def test_every_recorded_image_is_tested(group: Path) -> None:
    suffix = ".qcow.qemu-img.json"
    assert {p.name.removesuffix(suffix) for p in group.glob(f"*{suffix}")} == set(IMAGES)


@pytest.mark.parametrize("name", IMAGES)
def test_details_match_qemu_img(group: Path, name: str) -> None:
    path = image(group, name)
    info = qemu_info(path)
    report = introspect.inspect(path)
    details = report.details
    assert report.format == "qcow"
    assert isinstance(details, qcow.QcowDetails)
    assert details.version == 1
    assert report.virtual_size == info["virtual-size"]
    assert details.cluster_size == info["cluster-size"]
    assert details.backing_file == info.get("backing-filename")
    assert (details.encryption == "aes") == info.get("encrypted", False)


def test_qcow_is_not_qcow2(group: Path) -> None:
    """Both start with QFI\\xfb: the version decides, and only one format claims the file."""
    report = introspect.inspect(image(group, "qcow-base"))
    assert report.format == "qcow"
    assert not [f for f in report.findings if f.code == "image.polyglot"]


def test_reads_do_not_depend_on_virtual_size(group: Path) -> None:
    a = introspect.inspect(image(group, "qcow-129g"))
    b = introspect.inspect(image(group, "qcow-1t"))
    assert (a.reads, a.bytes_read) == (b.reads, b.bytes_read)
    assert b.reads <= 2
    assert b.bytes_read <= 64 * 1024 + 512


@pytest.mark.parametrize(
    ("name", "code", "needle"),
    [
        ("qcow-backed", "qcow.backing_file", "backing file 'qcow-base.qcow'"),
        ("qcow-aes", "qcow.aes_encryption", "encrypt.format=luks"),
    ],
)
def test_findings(group: Path, name: str, code: str, needle: str) -> None:
    report = introspect.inspect(image(group, name))
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == [code]
    assert needle in report.findings[0].message
    assert "qemu-img convert -O qcow2" in report.findings[0].message


@pytest.mark.parametrize("name", ["qcow-1g3m", "qcow-base", "qcow-1t"])
def test_plain_images_are_ok(group: Path, name: str) -> None:
    report = introspect.inspect(image(group, name))
    assert report.verdict == Verdict.OK
    assert report.findings == []


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("qcow-base", {"size": 1}, "size is 1, expected at least 2 bytes"),
        ("qcow-base", {"cluster_bits": 17}, "cluster_bits is 17, expected 9..16"),
        ("qcow-base", {"l2_bits": 14}, "l2_bits is 14, expected 6..13"),
        ("qcow-base", {"crypt_method": 2}, "crypt_method is 2, expected 0 (none) or 1 (AES)"),
        # qemu's smallest refused size with 4 KiB clusters and 512-entry L2 tables, plus one.
        ("qcow-base", {"size": 562949951324161}, "size is 562949951324161, expected at most 562949951324160"),
        ("qcow-backed", {"backing_file_size": 1024}, "backing_file_size is 1024, expected at most 1023"),
    ],
)
def test_values_qemu_refuses_are_bad_fields(
    group: Path, tmp_path: Path, name: str, changes: dict[str, int], message: str
) -> None:
    report = introspect.inspect(patched(group, tmp_path, name, **changes))
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["qcow.bad_header"]
    assert report.findings[0].message.startswith(message)
    assert report.findings[0].message.endswith(f": {qcow.CONVERT}")


def test_unaligned_size_counts_whole_sectors(group: Path, tmp_path: Path) -> None:
    size = qemu_info(image(group, "qcow-base"))["virtual-size"]
    report = introspect.inspect(patched(group, tmp_path, "qcow-base", size=size + 100))
    assert report.virtual_size == size
    assert isinstance(report.details, qcow.QcowDetails)
    assert report.details.size == size + 100


def test_image_cut_inside_its_l1_table_is_truncated(group: Path, tmp_path: Path) -> None:
    data = image(group, "qcow-1t").read_bytes()
    path = tmp_path / "cut.qcow"
    path.write_bytes(data[: len(data) // 2])
    report = introspect.inspect(path)
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["image.truncated"]
    header = QCowHeader.unpack(data)
    assert report.findings[0].message == (
        f"the qcow L1 table needs bytes {header.l1_table_offset}..{len(data)} but the file ends at "
        f"{len(data) // 2}: the image was cut short; upload it again (at offset {header.l1_table_offset})"
    )
