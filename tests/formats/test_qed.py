"""qed, against what `qemu-img info` recorded for images qemu-img itself made."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

import introspect
from introspect.formats import qed
from introspect.formats.qed import QEDHeader
from introspect.model import Severity, Verdict
from tests.conftest import fixture_group
from tests.tools import qemu_img_check, qemu_info, recorded, rewrite

IMAGES = [
    "qed-1g3m",
    "qed-1t",
    "qed-small-clusters",
    "qed-base",
    "qed-backed",
    "qed-backed-raw",
    "qed-written",
    "qed-many-tables",
]


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("qcow")


def image(group: Path, name: str) -> Path:
    return group / f"{name}.qed"


def patched(group: Path, tmp_path: Path, name: str, grow: int = 0, **changes: Any) -> Path:
    """A copy of fixture NAME with header fields changed, and `grow` zero bytes appended."""
    data = bytearray(image(group, name).read_bytes()) + bytes(grow)
    rewrite(data, QEDHeader, **changes)
    path = tmp_path / f"{name}-patched.qed"
    path.write_bytes(data)
    return path


def codes(report: introspect.Report) -> list[str]:
    return [finding.code for finding in report.findings]


def test_every_recorded_image_is_tested(group: Path) -> None:
    suffix = ".qed.qemu-img.json"
    assert {p.name.removesuffix(suffix) for p in group.glob(f"*{suffix}")} == set(IMAGES)


@pytest.mark.parametrize("name", IMAGES)
def test_details_match_qemu_img(group: Path, name: str) -> None:
    path = image(group, name)
    info = qemu_info(path)
    report = introspect.inspect(path)
    details = report.details
    assert report.format == "qed"
    assert isinstance(details, qed.QedDetails)
    assert report.virtual_size == info["virtual-size"]
    assert details.image_size == info["virtual-size"]
    assert details.cluster_size == info["cluster-size"]
    assert details.backing_file == info.get("backing-filename")
    assert details.backing_format == info.get("backing-filename-format")
    assert ("backing_file" in details.features.names) == ("backing-filename" in info)
    assert details.need_check == info["dirty-flag"]


def test_reads_do_not_depend_on_virtual_size(group: Path) -> None:
    """The head, the tail and the L1 table's entries that map the disk (the cut-image check), one
    read each whatever the size: of the L1 table, 8 bytes for every L2 table's worth of disk."""
    a = introspect.inspect(image(group, "qed-1g3m"))
    b = introspect.inspect(image(group, "qed-1t"))
    assert b.virtual_size == 1 << 40
    assert a.reads == b.reads == 3
    for report, name in ((a, "qed-1g3m"), (b, "qed-1t")):
        header = QEDHeader.unpack(image(group, name).read_bytes())
        mapped_by_l2 = header.table_size * header.cluster_size // 8 * header.cluster_size
        l1_entries = -(-qemu_info(image(group, name))["virtual-size"] // mapped_by_l2)
        assert report.bytes_read == 64 * 1024 + 512 + 8 * l1_entries, name


def test_the_cut_image_check_reads_the_entries_that_map_the_disk(group: Path) -> None:
    """Of a written image's tables (one L2 table, `qemu-img map` says where its data is), the L1
    entry and the part of the L2 table that map its disk: not the rest of either."""
    path = image(group, "qed-written")
    data = path.read_bytes()
    header = QEDHeader.unpack(data)
    (l2_table,) = struct.unpack_from("<Q", data, header.l1_table_offset)
    assert l2_table and not data[header.l1_table_offset + 8 : header.l1_table_offset + 16].strip(b"\0")
    clusters = -(-qemu_info(path)["virtual-size"] // header.cluster_size)
    assert clusters < header.table_size * header.cluster_size // 8  # one L2 table maps the whole disk
    report = introspect.inspect(path, guest=False)
    assert report.verdict == Verdict.OK
    assert report.reads == 4  # the head, the tail, the L1 entry, the L2 entries
    assert report.bytes_read == 64 * 1024 + 512 + 8 + 8 * clusters


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("qed-backed", "backing file 'qed-base.qed', which"),
        ("qed-backed-raw", "backing file 'qed-base.raw' (format raw)"),
    ],
)
def test_backing_file_is_rejected(group: Path, name: str, needle: str) -> None:
    report = introspect.inspect(image(group, name))
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["qed.backing_file"]
    assert needle in report.findings[0].message
    assert "qemu-img convert -O qcow2" in report.findings[0].message


@pytest.mark.parametrize("name", ["qed-1g3m", "qed-1t", "qed-small-clusters", "qed-base"])
def test_plain_images_are_ok(group: Path, name: str) -> None:
    report = introspect.inspect(image(group, name))
    assert report.verdict == Verdict.OK
    assert report.findings == []


def test_need_check_warns(group: Path, tmp_path: Path) -> None:
    report = introspect.inspect(patched(group, tmp_path, "qed-base", features=qed.QED_F_NEED_CHECK))
    assert report.verdict == Verdict.OK
    assert codes(report) == ["qed.need_check"]
    assert report.findings[0].severity == Severity.WARN
    assert "run `qemu-img check -r all`" in report.findings[0].message


def test_unknown_feature_bits_reject_and_are_listed(group: Path, tmp_path: Path) -> None:
    report = introspect.inspect(patched(group, tmp_path, "qed-base", features=1 << 7, compat_features=1 << 3))
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["qed.unknown_features"]
    assert "(7)" in report.findings[0].message
    assert isinstance(report.details, qed.QedDetails)
    assert report.details.features.unknown_bits == [7]
    assert report.details.compat_features.unknown_bits == [3]


def test_no_probe_without_backing_file_names_no_format(group: Path, tmp_path: Path) -> None:
    report = introspect.inspect(
        patched(group, tmp_path, "qed-base", features=qed.QED_F_BACKING_FORMAT_NO_PROBE)
    )
    assert isinstance(report.details, qed.QedDetails)
    assert report.details.backing_file is None
    assert report.details.backing_format is None


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("qed-base", {"cluster_size": 3 << 12}, "cluster_size is 12288, expected a power of 2 from 4096"),
        ("qed-base", {"cluster_size": 1 << 27}, "cluster_size is 134217728, expected a power of 2 from 4096"),
        ("qed-base", {"table_size": 3}, "table_size is 3, expected a power of 2 from 1 to 16"),
        ("qed-base", {"table_size": 32}, "table_size is 32, expected a power of 2 from 1 to 16"),
        ("qed-base", {"image_size": 7 * 2**20 + 1}, "image_size is 7340033, expected a multiple of 512"),
        ("qed-base", {"header_size": 1 << 16}, "header_size is 65536, expected at most 65535 clusters"),
        ("qed-base", {"l1_table_offset": 4096}, "l1_table_offset is 4096, expected a multiple of the"),
        ("qed-base", {"l1_table_offset": 0}, "l1_table_offset is 0, expected a multiple of the cluster"),
        ("qed-backed", {"backing_filename_offset": 65530},
         "backing_filename_offset + backing_filename_size is 65542, expected within the header clusters"),
    ],
)  # fmt: skip
def test_values_qemu_refuses_are_bad_fields(
    group: Path, tmp_path: Path, name: str, changes: dict[str, int], message: str
) -> None:
    report = introspect.inspect(patched(group, tmp_path, name, **changes))
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["qed.bad_header"]
    assert report.findings[0].message.startswith(message)
    assert report.findings[0].message.endswith(f": {qed.CONVERT}")


def test_backing_file_name_longer_than_qemu_reads_is_refused(group: Path, tmp_path: Path) -> None:
    """4096 bytes do not fit qemu's PATH_MAX buffer with its NUL. Two header clusters make room
    for them, and the L1 table moves one cluster on to stay past the header."""
    original = QEDHeader.unpack(image(group, "qed-backed").read_bytes())
    path = patched(
        group, tmp_path, "qed-backed", grow=original.cluster_size, header_size=2,
        l1_table_offset=original.l1_table_offset + original.cluster_size, backing_filename_size=4096,
    )  # fmt: skip
    report = introspect.inspect(path)
    assert codes(report) == ["qed.bad_header"]
    assert report.findings[0].message == (
        f"backing_filename_size is 4096, expected at most 4095 bytes: {qed.CONVERT}"
    )


def test_image_cut_before_its_l1_table_is_truncated(group: Path, tmp_path: Path) -> None:
    data = image(group, "qed-1t").read_bytes()
    header = QEDHeader.unpack(data)
    path = tmp_path / "cut.qed"
    path.write_bytes(data[: header.l1_table_offset + 8])
    report = introspect.inspect(path)
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["image.truncated"]
    end = header.l1_table_offset + header.table_size * header.cluster_size
    assert report.findings[0].message.startswith(
        f"the qed L1 table needs bytes {header.l1_table_offset}..{end} but the file ends at "
        f"{header.l1_table_offset + 8}"
    )


def test_a_written_image_cut_past_its_l1_table_is_truncated(group: Path, tmp_path: Path) -> None:
    """qemu allocates a qed's L2 tables and data clusters at the end of the file as the guest
    writes (qemu-io wrote three clusters, `qemu-img map` says where): whole, the image is ok; cut
    inside or before its last data cluster, or inside its L2 table, it is `image.truncated`, where
    `qemu-img check` finds corruptions."""
    whole = image(group, "qed-written")
    data = whole.read_bytes()
    assert qemu_img_check(whole, "qed").get("corruptions", 0) == 0
    assert (report := introspect.inspect(whole)).verdict == Verdict.OK, report.findings
    header = QEDHeader.unpack(data)
    cluster, table = header.cluster_size, header.table_size * header.cluster_size
    (l2_table,) = struct.unpack_from("<Q", data, header.l1_table_offset)  # the file's one L2 table
    clusters = sorted(
        entry["offset"] for entry in json.loads(recorded(whole, "qemu-img-map.json")) if entry["data"]
    )
    assert clusters[-1] + cluster == len(data)  # the last thing qemu allocated is a data cluster
    cuts = {
        len(data) - 1: ("a data cluster", clusters[-1], cluster),
        clusters[-1]: ("a data cluster", clusters[-1], cluster),
        clusters[-2] + 100: ("a data cluster", clusters[-1], cluster),
        l2_table + table - 8: ("an L2 table", l2_table, table),
        l2_table: ("an L2 table", l2_table, table),
    }
    for size, (what, offset, length) in cuts.items():
        path = tmp_path / f"cut-{size}.qed"
        path.write_bytes(data[:size])
        # qemu-img check counts an entry that points at or past the end as a corruption; a cluster
        # that starts before the end and is cut is not its concern (qemu reads the rest as zeros).
        pointing_past = any(start >= size for start in [l2_table, *clusters])
        assert (qemu_img_check(path, "qed").get("corruptions", 0) > 0) == pointing_past, size
        report = introspect.inspect(path)
        assert report.verdict == Verdict.REJECTED, size
        assert codes(report) == ["image.truncated"], size
        assert report.findings[0].message == (
            f"the qed tables place {what} at bytes {offset}..{offset + length}, but the file ends at {size}: "
            "the image was cut short (a partial upload or download); upload it again"
        )


def test_many_small_tables_are_checked_by_their_places_within_the_budget(group: Path, tmp_path: Path) -> None:
    """4 KiB clusters in 2-cluster tables: qemu-io wrote 512 bytes at every 4 MiB of a 400 MiB disk,
    which gave it 100 L2 tables, and `qemu-img check` finds it clean. More tables than
    `MAX_L2_READS` are not read one by one (the header pass has 64 reads): their places are checked,
    and the image is ok. Cut inside its last L2 table, it is `image.truncated`."""
    path = image(group, "qed-many-tables")
    data = path.read_bytes()
    header = QEDHeader.unpack(data)
    entries = header.table_size * header.cluster_size // 8
    tables = [t for t in struct.unpack_from(f"<{entries}Q", data, header.l1_table_offset) if t]
    assert len(tables) == 100 > qed.MAX_L2_READS
    assert qemu_img_check(path, "qed").get("corruptions", 0) == 0
    report = introspect.inspect(path, guest=False)
    assert report.verdict == Verdict.OK, report.findings
    assert header.l1_table_offset + 8 * len(tables) <= 64 * 1024
    assert report.reads == 2  # the head (the L1 table's entries are in it) and the tail
    cut = tmp_path / "cut.qed"
    size = max(tables) + 100
    cut.write_bytes(data[:size])
    report = introspect.inspect(cut, guest=False)
    assert codes(report) == ["image.truncated"]
    table = header.table_size * header.cluster_size
    assert report.findings[0].message.startswith(
        f"the qed tables place an L2 table at bytes {max(tables)}..{max(tables) + table}, but the file "
        f"ends at {size}"
    )


def test_truncated_header_is_an_error(tmp_path: Path, group: Path) -> None:
    path = tmp_path / "cut.qed"
    path.write_bytes(image(group, "qed-base").read_bytes()[:20])
    report = introspect.inspect(path)
    assert report.format == "qed"
    assert codes(report) == ["image.truncated"]
    assert report.findings[0].message.startswith("the qed header needs bytes 0..64 but the file ends at 20")
