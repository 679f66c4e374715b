"""qcow2 v2 and v3, against what `qemu-img info` recorded for images qemu-img itself made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import introspect
from introspect.formats import qcow2
from introspect.formats.qcow2 import (
    AdditionalFields,
    BitmapsExtensionData,
    CryptoHeaderExtension,
    HeaderExtension,
    QCowHeader,
    QCowHeaderV3,
)
from introspect.model import Severity, Verdict
from introspect.sources import Budget
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.tools import qemu_img_check, qemu_info, recorded, rewrite

#: Every qcow2 image of fixtures/make/qcow.sh that qemu-img opened (zstd-hl104 it refuses).
IMAGES = [
    "aes", "backed", "base", "bitmap", "cluster-2m", "cluster-512", "data-file", "data-file-raw",
    "extended-l2", "hl104", "lazy-refcounts", "luks", "refcount-1", "refcount-64", "size-unaligned",
    "snapshot", "v2-129m", "v2-1g3m", "v2-1t", "v2-backed", "v2-cluster-512", "v3-1g3m", "v3-1t",
    "v3-7m", "zstd", "written", "written-extended-l2", "compressed",
]  # fmt: skip
#: qemu-img's `compat` word for each header version.
COMPAT_VERSION = {"0.10": 2, "1.1": 3}


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("qcow")


def image(group: Path, name: str) -> Path:
    return group / f"{name}.qcow2"


def patched(group: Path, tmp_path: Path, name: str, structure: Any, **changes: Any) -> Path:
    """A copy of fixture NAME with fields of a header structure changed, where that structure
    is declared (`structure.OFFSET`)."""
    data = bytearray(image(group, name).read_bytes())
    rewrite(data, structure, **changes)
    path = tmp_path / f"{name}-patched.qcow2"
    path.write_bytes(data)
    return path


def codes(report: introspect.Report) -> list[str]:
    return [finding.code for finding in report.findings]


def test_every_recorded_image_is_tested(group: Path) -> None:
    suffix = ".qcow2.qemu-img.json"
    assert {p.name.removesuffix(suffix) for p in group.glob(f"*{suffix}")} == set(IMAGES)


@pytest.mark.parametrize("name", IMAGES)
def test_details_match_qemu_img(group: Path, name: str) -> None:
    path = image(group, name)
    info = qemu_info(path)
    data = info["format-specific"]["data"]
    report = introspect.inspect(path)
    details = report.details
    assert report.format == "qcow2"
    assert isinstance(details, qcow2.Qcow2Details)
    assert report.virtual_size == info["virtual-size"]
    assert details.cluster_size == info["cluster-size"]
    assert details.cluster_size == 1 << details.cluster_bits
    assert details.version == COMPAT_VERSION[data["compat"]]
    assert details.compression_type == data["compression-type"]
    assert details.refcount_bits == data["refcount-bits"]
    assert details.lazy_refcounts == data.get("lazy-refcounts", False)
    assert details.corrupt == data.get("corrupt", False)
    assert details.extended_l2 == data.get("extended-l2", False)
    assert details.data_file == data.get("data-file")
    assert details.data_file_raw == data.get("data-file-raw", False)
    assert details.encryption == data.get("encrypt", {}).get("format", "none")
    assert (details.encryption != "none") == info.get("encrypted", False)
    assert details.dirty == info["dirty-flag"]
    assert details.backing_file == info.get("backing-filename")
    assert details.backing_format == info.get("backing-filename-format")
    assert details.nb_snapshots == len(info.get("snapshots", []))
    if "bitmaps" in data:
        assert details.bitmaps is not None
        assert details.bitmaps.consistent
        assert details.bitmaps.nb_bitmaps == len(data["bitmaps"])
        assert "bitmaps" in details.autoclear_features.names
    else:
        assert details.bitmaps is None
    if details.version == 2:
        assert details.header_length == 72
        assert details.incompatible_features.value == 0
        assert details.refcount_order == 4


def test_v3_names_its_features_in_a_feature_table(group: Path) -> None:
    details = introspect.inspect(image(group, "v3-7m")).details
    assert isinstance(details, qcow2.Qcow2Details)
    names = {(f.type, f.bit): f.name for f in details.feature_names}
    assert names[("incompatible", qcow2.DIRTY_BIT)] == "dirty bit"
    assert names[("compatible", qcow2.LAZY_REFCOUNTS_BIT)] == "lazy refcounts"
    assert names[("autoclear", qcow2.BITMAPS_BIT)] == "bitmaps"


def test_luks_encryption_header_pointer(group: Path) -> None:
    path = image(group, "luks")
    encrypt = qemu_info(path)["format-specific"]["data"]["encrypt"]
    details = introspect.inspect(path).details
    assert isinstance(details, qcow2.Qcow2Details)
    assert details.encryption == "luks"
    assert details.crypto_header is not None
    assert details.crypto_header.offset % details.cluster_size == 0
    # The LUKS header ends where its payload begins.
    assert details.crypto_header.length == encrypt["payload-offset"]
    with path.open("rb") as file:
        file.seek(details.crypto_header.offset)
        assert file.read(6) == b"LUKS\xba\xbe"


@pytest.mark.parametrize(("small", "huge"), [("v3-1g3m", "v3-1t"), ("v2-1g3m", "v2-1t"), ("v3-7m", "v3-1t")])
def test_reads_do_not_depend_on_virtual_size(group: Path, small: str, huge: str) -> None:
    a = introspect.inspect(image(group, small))
    b = introspect.inspect(image(group, huge))
    assert b.virtual_size == 1 << 40
    assert (a.reads, a.bytes_read) == (b.reads, b.bytes_read)
    # The head and the tail (everything else lies in the first cluster), and the refcount table
    # with the refcount block after it (clusters in use past the end of the file?).
    assert b.reads <= 3
    assert b.bytes_read <= 64 * 1024 + 512 + qcow2.MAX_REFCOUNT_READ


def test_2m_clusters_cost_the_head_and_the_refcounts_past_the_end(group: Path) -> None:
    """The head, and what says whether the file was cut: one refcount table entry and the
    refcounts of the clusters after the end of the file (their blocks are too large to read)."""
    report = introspect.inspect(image(group, "cluster-2m"))
    assert report.reads <= 4
    assert report.bytes_read <= 64 * 1024 + 512 + 8 + qcow2.MAX_TAIL_REFCOUNTS


def test_compression_type_is_read_only_when_header_length_covers_it(group: Path) -> None:
    hl104 = introspect.inspect(image(group, "hl104")).details
    zstd = introspect.inspect(image(group, "zstd")).details
    assert isinstance(hl104, qcow2.Qcow2Details)
    assert isinstance(zstd, qcow2.Qcow2Details)
    assert (hl104.header_length, hl104.compression_type) == (104, "zlib")
    assert (zstd.header_length, zstd.compression_type) == (112, "zstd")
    assert "compression_type" in zstd.incompatible_features.names
    # header_length 104 leaves the feature table found where it was moved to.
    assert hl104.feature_names


def test_uncovered_compression_type_with_its_bit_set_is_refused_like_qemu(group: Path) -> None:
    path = image(group, "zstd-hl104")
    assert "Compression type incompatible feature bit must not be set" in recorded(path, "qemu-img.err")
    report = introspect.inspect(path)
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["qcow2.bad_header"]
    assert report.findings[0].message.startswith(
        "incompatible_features is 8, expected bit 3 (compression type) clear, since the compression "
        "type is zlib (header_length 104)"
    )


def test_v2_header_does_not_read_v3_fields(group: Path, tmp_path: Path) -> None:
    """Bytes 72-103 of a v2 image are not the v3 fields: a 'corrupt' bit there means nothing."""
    path = patched(group, tmp_path, "v2-1g3m", QCowHeaderV3, incompatible_features=qcow2.INCOMPAT_CORRUPT)
    report = introspect.inspect(path)
    assert report.verdict == Verdict.OK
    assert isinstance(report.details, qcow2.Qcow2Details)
    assert not report.details.corrupt


@pytest.mark.parametrize(
    ("name", "code", "needle"),
    [
        ("backed", "qcow2.backing_file", "backing file 'base.qcow2' (format qcow2)"),
        ("v2-backed", "qcow2.backing_file", "backing file 'base.qcow2' (format qcow2)"),
        ("data-file", "qcow2.data_file", "external data file 'data-file.raw'"),
        ("data-file-raw", "qcow2.data_file", "external data file 'data-file-raw.raw'"),
        ("aes", "qcow2.aes_encryption", "encrypt.format=luks"),
    ],
)
def test_images_that_depend_on_other_files_are_rejected(
    group: Path, name: str, code: str, needle: str
) -> None:
    report = introspect.inspect(image(group, name))
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == [code]
    assert needle in report.findings[0].message
    assert "qemu-img convert -O qcow2" in report.findings[0].message


@pytest.mark.parametrize("name", ["base", "v2-1g3m", "luks", "snapshot", "bitmap", "zstd", "extended-l2"])
def test_self_contained_images_are_ok(group: Path, name: str) -> None:
    report = introspect.inspect(image(group, name))
    assert report.verdict == Verdict.OK
    # An encrypted image's guest cannot be read without its key: it says so, and nothing else.
    assert codes(report) == (["guest.encrypted"] if name == "luks" else [])


def test_corrupt_bit_rejects(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path, "v3-7m", QCowHeaderV3, incompatible_features=qcow2.INCOMPAT_CORRUPT)
    report = introspect.inspect(path)
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["qcow2.corrupt"]
    assert "qemu-img check -r all" in report.findings[0].message


def test_dirty_bit_warns(group: Path, tmp_path: Path) -> None:
    path = patched(
        group, tmp_path, "lazy-refcounts", QCowHeaderV3, incompatible_features=qcow2.INCOMPAT_DIRTY
    )
    report = introspect.inspect(path)
    assert report.verdict == Verdict.OK
    assert codes(report) == ["qcow2.dirty"]
    assert report.findings[0].severity == Severity.WARN
    assert report.findings[0].message == (
        "the image was not closed cleanly (dirty bit): its refcounts may be stale; "
        "run `qemu-img check -r all` on it before use"
    )


def test_unknown_incompatible_bits_reject_and_are_listed(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path, "v3-7m", QCowHeaderV3, incompatible_features=1 << 20 | 1 << 63)
    report = introspect.inspect(path)
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["qcow2.unknown_incompatible_features"]
    assert "(20, 63)" in report.findings[0].message
    assert isinstance(report.details, qcow2.Qcow2Details)
    assert report.details.incompatible_features.unknown_bits == [20, 63]


def test_unknown_compatible_and_autoclear_bits_are_listed(group: Path, tmp_path: Path) -> None:
    path = patched(
        group, tmp_path, "lazy-refcounts", QCowHeaderV3,
        compatible_features=qcow2.COMPAT_LAZY_REFCOUNTS | 1 << 5, autoclear_features=1 << 9,
    )  # fmt: skip
    report = introspect.inspect(path)
    assert report.verdict == Verdict.OK
    assert isinstance(report.details, qcow2.Qcow2Details)
    assert report.details.compatible_features.names == ["lazy_refcounts"]
    assert report.details.compatible_features.unknown_bits == [5]
    assert report.details.autoclear_features.unknown_bits == [9]


@pytest.mark.parametrize(
    ("structure", "changes", "message"),
    [
        (QCowHeader, {"version": 4}, "version is 4, expected 2 or 3"),
        (QCowHeader, {"cluster_bits": 8}, "cluster_bits is 8, expected 9..21"),
        (QCowHeader, {"cluster_bits": 22}, "cluster_bits is 22, expected 9..21"),
        (QCowHeader, {"crypt_method": 3}, "crypt_method is 3, expected 0 (none), 1 (AES) or 2 (LUKS)"),
        (QCowHeader, {"l1_size": 0}, "l1_size is 0, expected at least 1 entries"),
        (QCowHeader, {"l1_size": 1 << 30}, "l1_size is 1073741824, expected at most 4194304 entries"),
        (QCowHeader, {"l1_table_offset": 65536 + 8}, "l1_table_offset is 65544, expected a multiple"),
        (QCowHeader, {"refcount_table_clusters": 0}, "refcount_table_clusters is 0, expected at least 1"),
        (QCowHeader, {"nb_snapshots": 65537}, "nb_snapshots is 65537, expected at most 65536"),
        (QCowHeader, {"backing_file_offset": 1 << 20}, "backing_file_offset is 1048576, expected within"),
        (QCowHeaderV3, {"header_length": 100}, "header_length is 100, expected 104..65536"),
        (QCowHeaderV3, {"header_length": 1 << 17}, "header_length is 131072, expected 104..65536"),
        (QCowHeaderV3, {"refcount_order": 7}, "refcount_order is 7, expected at most 6"),
        (AdditionalFields, {"compression_type": 2}, "compression_type is 2, expected 0 (zlib) or 1 (zstd)"),
        (QCowHeaderV3, {"autoclear_features": qcow2.AUTOCLEAR_DATA_FILE_RAW}, "autoclear_features is 2"),
    ],
)
def test_values_qemu_refuses_are_bad_fields(
    group: Path, tmp_path: Path, structure: Any, changes: dict[str, int], message: str
) -> None:
    report = introspect.inspect(patched(group, tmp_path, "v3-7m", structure, **changes))
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["qcow2.bad_header"]
    assert report.findings[0].message.startswith(message)
    assert qcow2.RECREATE in report.findings[0].message


def test_extended_l2_needs_16k_clusters(group: Path, tmp_path: Path) -> None:
    path = patched(
        group, tmp_path, "cluster-512", QCowHeaderV3, incompatible_features=qcow2.INCOMPAT_EXTENDED_L2
    )
    report = introspect.inspect(path)
    assert codes(report) == ["qcow2.bad_header"]
    assert "cluster_bits is 9, expected at least 14 with extended L2 entries" in report.findings[0].message


def test_backing_file_name_longer_than_1023_bytes_is_refused(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path, "backed", QCowHeader, backing_file_size=1024)
    report = introspect.inspect(path)
    assert report.verdict == Verdict.ERROR
    assert report.findings[0].message.startswith("backing_file_size is 1024, expected at most 1023 bytes")


def _with_extensions(group: Path, tmp_path: Path, name: str, extensions: bytes) -> Path:
    data = bytearray(image(group, name).read_bytes())
    start = QCowHeaderV3.unpack(bytes(data)).header_length
    data[start : start + len(extensions)] = extensions
    path = tmp_path / f"{name}-extensions.qcow2"
    path.write_bytes(data)
    return path


def test_header_extension_running_past_the_first_cluster_is_refused(group: Path, tmp_path: Path) -> None:
    oversized = pack(HeaderExtension(type=qcow2.EXT_FEATURE_TABLE, length=1 << 16))
    report = introspect.inspect(_with_extensions(group, tmp_path, "v3-7m", oversized))
    assert codes(report) == ["qcow2.bad_header_extension"]
    assert report.findings[0].message.startswith(
        "length of header extension 0x6803f857 is 65536, expected at most 65416"
    )


def test_header_extension_walk_is_capped(group: Path, tmp_path: Path) -> None:
    empties = pack(HeaderExtension(type=0x12345678, length=0)) * (qcow2.MAX_HEADER_EXTENSIONS + 1)
    report = introspect.inspect(_with_extensions(group, tmp_path, "v3-7m", empties))
    assert codes(report) == ["qcow2.bad_header_extension"]
    assert report.findings[0].message.startswith(
        "number of header extensions is 65, expected at most 64 before the end marker"
    )


def test_64_extensions_before_the_end_marker_are_fine(group: Path, tmp_path: Path) -> None:
    empties = pack(HeaderExtension(type=0x12345678, length=0)) * qcow2.MAX_HEADER_EXTENSIONS
    end = pack(HeaderExtension(type=qcow2.EXT_END, length=0))
    report = introspect.inspect(_with_extensions(group, tmp_path, "v3-7m", empties + end))
    assert report.verdict == Verdict.OK


@pytest.mark.parametrize(
    ("name", "extension", "message"),
    [
        ("v3-7m", pack(HeaderExtension(qcow2.EXT_BACKING_FORMAT, 16)) + b"q" * 16,
         "backing file format name length is 16, expected at most 15 bytes"),
        ("v3-7m", pack(HeaderExtension(qcow2.EXT_CRYPTO_HEADER, 16)) + pack(CryptoHeaderExtension(0, 0)),
         "full disk encryption header extension is 'none', expected only with crypt_method 2 (LUKS)"),
        ("bitmap", pack(HeaderExtension(qcow2.EXT_BITMAPS, 24)) + pack(BitmapsExtensionData(0, 0, 0, 0)),
         "bitmaps extension nb_bitmaps is 0, expected 1..65535"),
        ("bitmap", pack(HeaderExtension(qcow2.EXT_BITMAPS, 16)) + bytes(16),
         "bitmaps extension length is 16, expected 24"),
    ],
)  # fmt: skip
def test_malformed_extensions_are_bad_fields(
    group: Path, tmp_path: Path, name: str, extension: bytes, message: str
) -> None:
    report = introspect.inspect(_with_extensions(group, tmp_path, name, extension))
    assert codes(report) == ["qcow2.bad_header_extension"]
    assert report.findings[0].message.startswith(message)


def test_extensions_must_fit_before_the_backing_file_name(group: Path, tmp_path: Path) -> None:
    header_length = QCowHeaderV3.unpack(image(group, "v3-7m").read_bytes()).header_length
    path = patched(group, tmp_path, "v3-7m", QCowHeader, backing_file_offset=header_length + 4)
    report = introspect.inspect(path)
    assert codes(report) == ["qcow2.bad_header_extension"]
    assert report.findings[0].message.startswith(
        "room for a header extension is 4, expected at least 8 bytes"
    )


def test_unknown_extensions_are_recorded_and_skipped(group: Path, tmp_path: Path) -> None:
    unknown = pack(HeaderExtension(type=0x12345678, length=3)) + b"abc\0\0\0\0\0"
    end = pack(HeaderExtension(type=qcow2.EXT_END, length=0))
    report = introspect.inspect(_with_extensions(group, tmp_path, "v3-7m", unknown + end))
    assert report.verdict == Verdict.OK
    assert isinstance(report.details, qcow2.Qcow2Details)
    assert report.details.unknown_extensions == [0x12345678]


def test_duplicate_backing_format_is_refused(group: Path, tmp_path: Path) -> None:
    one = pack(HeaderExtension(type=qcow2.EXT_BACKING_FORMAT, length=3)) + b"raw\0\0\0\0\0"
    report = introspect.inspect(_with_extensions(group, tmp_path, "v3-7m", one * 2))
    assert codes(report) == ["qcow2.bad_header_extension"]
    assert "count of header extension 0xe2792aca is 2, expected at most 1" in report.findings[0].message


def test_luks_without_its_header_pointer_is_refused(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path, "v3-7m", QCowHeader, crypt_method=qcow2.CRYPT_LUKS)
    report = introspect.inspect(path)
    assert report.findings[0].message.startswith(
        "full disk encryption header extension is None, expected one when crypt_method is 2 (LUKS)"
    )


def test_truncated_header_is_an_error(group: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.qcow2"
    path.write_bytes(image(group, "v3-7m").read_bytes()[:50])
    report = introspect.inspect(path)
    assert report.format == "qcow2"
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["image.truncated"]
    assert report.findings[0].message == (
        "the qcow2 header needs bytes 0..72 but the file ends at 50: the image was cut short; "
        "upload it again (at offset 0)"
    )


def test_image_cut_before_its_tables_is_truncated(group: Path, tmp_path: Path) -> None:
    data = image(group, "v3-1t").read_bytes()
    header = QCowHeader.unpack(data)
    path = tmp_path / "cut.qcow2"
    path.write_bytes(data[: header.l1_table_offset + 8])
    report = introspect.inspect(path)
    assert codes(report) == ["image.truncated"]
    message = report.findings[0].message
    assert message.startswith(f"the active L1 table needs bytes {header.l1_table_offset}..")


def test_reads_past_the_head_are_metered(group: Path, tmp_path: Path) -> None:
    """With 2 MiB clusters, a backing file name may sit past the 64 KiB head: reading it is one
    more metered read, and a budget that does not allow it stops the parse."""
    data = bytearray(image(group, "cluster-2m").read_bytes())
    name = b"far-away.qcow2"
    offset = 1 << 20
    data[offset : offset + len(name)] = name
    rewrite(data, QCowHeader, backing_file_offset=offset, backing_file_size=len(name))
    path = tmp_path / "far-backing.qcow2"
    path.write_bytes(data)
    report = introspect.inspect(path)
    assert isinstance(report.details, qcow2.Qcow2Details)
    assert report.details.backing_file == "far-away.qcow2"
    assert report.reads == 5  # 2 MiB clusters: a table entry and the refcounts past the end, not whole blocks
    tight = introspect.inspect(path, budget=Budget(max_reads=2))
    assert codes(tight) == ["image.read_budget"]
    assert tight.findings[0].message.startswith(
        "reading the qcow2 backing file name would exceed the inspection budget (at most 2 reads)"
    )


def _cut_at(
    tmp_path: Path, data: bytes, end: int, keeps: tuple[int, ...]
) -> Iterator[tuple[int, introspect.Report]]:
    """The image cut at its end (`qemu-img check`'s image-end-offset: nothing is missing, no
    finding), then each report of it cut at `keeps`."""
    for keep in (end, *keeps):
        cut = tmp_path / f"cut-{keep}.qcow2"
        cut.write_bytes(data[:keep])
        report = introspect.inspect(cut)
        if keep >= end:
            assert report.ok and report.findings == [], report.findings
        else:
            yield keep, report


@pytest.mark.parametrize("refcount_bits", [16, 1, 64])
def test_a_cut_qcow2_with_2m_clusters_is_truncated_from_the_refcounts_after_its_end(
    tmp_path: Path, refcount_bits: int
) -> None:
    """2 MiB clusters (a 2 MiB refcount table and blocks, too large to read whole): the refcounts
    of the clusters after the end of the file are read instead. A GPT disk with data in three
    places, converted by qemu-img; `qemu-img check` says where its clusters end."""
    import json
    import random
    import subprocess

    raw = tmp_path / "disk.raw"
    with raw.open("wb") as out:
        out.truncate(1 << 30)
    subprocess.run(
        ["sgdisk", "-n1:2048:+100M", "-t1:ef00", "-n2:0:0", str(raw)], check=True, capture_output=True
    )
    noise = random.Random(7).randbytes(3 << 20)
    with raw.open("r+b") as out:
        for offset in (200 << 20, 600 << 20, 900 << 20):
            out.seek(offset)
            out.write(noise)
    image = tmp_path / "disk.qcow2"
    options = f"cluster_size=2M,refcount_bits={refcount_bits}"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", "-o", options, str(raw), str(image)], check=True)
    checked = subprocess.run(
        ["qemu-img", "check", "--output=json", str(image)], check=True, capture_output=True, text=True
    )
    end, data = json.loads(checked.stdout)["image-end-offset"], image.read_bytes()
    assert qcow2.QCowHeader.unpack(data).cluster_bits == 21
    cluster = 2 << 20
    for keep, report in _cut_at(tmp_path, data, end, (end - cluster, end - cluster - 512, end - 3 * cluster)):
        assert report.verdict == Verdict.REJECTED, (keep, report.findings)
        assert codes(report) == ["image.truncated"]
        first_missing = -(-keep // cluster) * cluster
        assert report.findings[0].message.startswith(
            f"the qcow2 refcounts count a cluster in use at byte {first_missing}, but the file ends at {keep}"
        )
        assert report.bytes_read < 256 * 1024


@pytest.mark.parametrize("name", ["gpt.qcow2", "mbr.qcow2"])
def test_a_cut_qcow2_is_truncated_where_its_refcounts_say_clusters_are(tmp_path: Path, name: str) -> None:
    """qemu-img convert of partitioned disks (fixtures/make/partitioned.sh); `qemu-img check` said
    where its allocated clusters end (image-end-offset). Cut at or before the start of the last
    cluster, the refcounts count a cluster past the end; cut at that end, nothing is missing. (A cut
    inside the last cluster: see the written images' test below.)"""
    import json

    path = fixture_group("partitioned") / name
    end = json.loads(recorded(path, "qemu-img-check.json"))["image-end-offset"]
    data = path.read_bytes()
    cluster = qcow2.QCowHeader.unpack(data).cluster_bits
    last_cluster = end - (1 << cluster)
    for keep, report in _cut_at(tmp_path, data, end, (last_cluster, last_cluster - 512, end // 2)):
        if keep == end // 2:  # the L1 or L2 tables are gone too: cannot be parsed at all
            assert report.verdict in (Verdict.REJECTED, Verdict.ERROR)
            assert codes(report) == ["image.truncated"]
            continue
        assert report.verdict == Verdict.REJECTED, (keep, report.findings)
        assert codes(report) == ["image.truncated"]
        assert report.findings[0].message.startswith("the qcow2 refcounts count a cluster in use at byte ")
        assert f"but the file ends at {keep}" in report.findings[0].message
        assert report.reads <= 3


@pytest.mark.parametrize("name", ["written", "written-extended-l2", "partitioned"])
def test_a_qcow2_cut_inside_its_last_data_cluster_is_truncated(
    group: Path, tmp_path: Path, name: str
) -> None:
    """qemu allocates a data cluster whole at the end of the file (qemu-io wrote three places of
    `written`; qemu-img convert made `partitioned/gpt.qcow2`), or with extended L2 entries up to its
    last subcluster written (`written-extended-l2`: 4 KiB of a 128 KiB cluster, and the file ends
    there). Cut anywhere inside that cluster's bytes, the file has lost data: `image.truncated`,
    naming the cluster where `qemu-img map` puts the last data and ending it where `qemu-img check`
    says the image ends. qemu-img check itself reports no error (it reads the missing bytes as
    zeros)."""
    import json

    path = fixture_group("partitioned") / "gpt.qcow2" if name == "partitioned" else image(group, name)
    data = path.read_bytes()
    cluster_size = qemu_info(path)["cluster-size"]
    end = qemu_img_check(path, "qcow2")["image-end-offset"]  # where the last cluster in use ends
    cluster = (end - 1) // cluster_size * cluster_size
    if name != "partitioned":
        extents = [e for e in json.loads(recorded(path, "qemu-img-map.json")) if e["data"]]
        last = max(extents, key=lambda e: e["offset"])
        assert last["offset"] == cluster  # the last cluster in use holds the last data
        if name == "written-extended-l2":
            end = last["offset"] + last["length"]  # the subclusters written, then the file ends
            assert len(data) % cluster_size
    assert end == len(data)
    report = introspect.inspect(path, guest=False)
    assert report.verdict == Verdict.OK and report.findings == [], report.findings
    for keep in (end - 1, end - 512, (cluster + end) // 2, cluster + 1):
        cut = tmp_path / f"cut-{keep}.qcow2"
        cut.write_bytes(data[:keep])
        assert qemu_img_check(cut, "qcow2")["check-errors"] == 0
        report = introspect.inspect(cut, guest=False)
        assert report.verdict == Verdict.REJECTED, keep
        assert codes(report) == ["image.truncated"], keep
        assert report.findings[0].message == (
            f"the qcow2 L2 tables place a data cluster at bytes {cluster}..{end}, but the file ends at {keep}: "
            "the image was cut short (a partial upload or download); upload it again"
        )


def test_compressed_clusters_may_end_the_file_mid_cluster(group: Path) -> None:
    """qemu-img convert -c writes each cluster's data as long as it compresses to (`qemu-img map`
    gives compressed data no offset): the file ends inside its last cluster, and is whole."""
    import json

    path = image(group, "compressed")
    extents = [e for e in json.loads(recorded(path, "qemu-img-map.json")) if e["data"]]
    assert extents and all("offset" not in e for e in extents)
    assert path.stat().st_size % qemu_info(path)["cluster-size"]
    assert qemu_img_check(path, "qcow2")["check-errors"] == 0
    report = introspect.inspect(path, guest=False)
    assert report.verdict == Verdict.OK and report.findings == [], report.findings


def test_many_l2_tables_are_not_read_one_by_one(tmp_path: Path) -> None:
    """512-byte clusters make 512-byte L2 tables: qemu-io writing 512 bytes at every 64 KiB of an
    8 MiB disk gives it 128 of them. Cut inside its last data cluster, the tables are not read one by
    one past `MAX_L2_READS`: the header pass stays within its 64 reads (the cut goes unnamed)."""
    import subprocess

    path = tmp_path / "many.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(path), "8M"], check=True
    )
    writes = [arg for i in range(128) for arg in ("-c", f"write -P {i + 1} {i * 64}k 512")]
    subprocess.run(["qemu-io", "-f", "qcow2", *writes, str(path)], check=True, capture_output=True)
    l1_entries = sum(1 for e in qcow2_l1(path) if e)
    assert l1_entries > qcow2.MAX_L2_READS
    data = path.read_bytes()
    cut = tmp_path / "cut.qcow2"
    cut.write_bytes(data[:-1])
    assert introspect.inspect(path, guest=False).verdict == Verdict.OK
    report = introspect.inspect(cut, guest=False)
    assert "image.read_budget" not in codes(report)
    assert report.verdict != Verdict.ERROR and report.reads <= 4, report.findings


def qcow2_l1(path: Path) -> list[int]:
    import struct

    data = path.read_bytes()
    header = QCowHeader.unpack(data)
    return list(struct.unpack_from(f">{header.l1_size}Q", data, header.l1_table_offset))


@given(
    st.lists(
        st.sampled_from([0, 0, 0, 1, 0x200, 0x10000, 0x0C0000, 0x12340000, 0x80000000000C0000]), max_size=64
    ),
    st.sampled_from([1, 0x200, 0x10000, 0x0C0000, 0x12340000]),
    st.sampled_from([(8, 0), (8, 1), (16, 1)]),
)
def test_aligned_find_is_the_first_aligned_entry_that_matches(entries, value, layout):
    """Against a plain walk over the entries: matches across entries never count."""
    stride, skip = layout
    data = b"".join(e.to_bytes(8, "big") + (bytes(8) if stride == 16 else b"") for e in entries)
    needle = value.to_bytes(8, "big")[skip:]
    expected = next(
        (
            i * stride
            for i in range(len(entries))
            if data[i * stride + skip : i * stride + skip + len(needle)] == needle
        ),
        None,
    )
    assert qcow2._aligned_find(data, needle, stride, skip) == expected
