"""VMDK, against what qemu-img (and VMDKstream) wrote and what `qemu-img info` recorded.

The descriptors are checked against the text the tools wrote (IMAGE.descriptor.txt), read here
with a few plain regular expressions of their own, never with the parser under test.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import introspect
from introspect.formats import vmdk, vmdk_descriptor
from introspect.formats.base import Head
from introspect.formats.vmdk import Marker, SparseExtentHeader
from introspect.model import Severity, Verdict
from introspect.safety import Policy
from introspect.sources import Budget, BytesSource
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded, rewrite

SUBFORMATS = [
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"
]  # fmt: skip
ADAPTERS = ["ide", "buslogic", "lsilogic", "legacyESX"]
MATRIX = [f"{subformat}-{adapter}" for subformat in SUBFORMATS for adapter in ADAPTERS]
#: Images with an embedded descriptor (KDMV sparse extents).
SPARSE = [
    *(name for name in MATRIX if name.startswith(("monolithicSparse", "streamOptimized"))),
    "hwversion", "toolsversion", "compat6", "zeroed-grain", "sparse-1g", "sparse-1t", "odd-sparse",
    "base", "delta", "convert-stream", "vmdkstream", "cid-leftover-streamOptimized",
]  # fmt: skip
#: Descriptor files: their extents are other files.
DESCRIPTOR_FILES = [
    *(name for name in MATRIX if name.startswith(("monolithicFlat", "twoGbMaxExtent"))),
    "split-sparse", "split-flat", "odd-flat", "esx-vmfssparse", "cid-leftover-monolithicFlat",
]  # fmt: skip
IMAGES = SPARSE + DESCRIPTOR_FILES
STREAM_OPTIMIZED = [name for name in SPARSE if "stream" in name.lower()]


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("vmdk")


def image(group: Path, name: str) -> Path:
    return group / f"{name}.vmdk"


def codes(report: introspect.Report) -> list[str]:
    """The codes found, less the info that a descriptor holds qemu-img's writer defaults (most
    fixtures are qemu-made with adapter ide); test_writer_defaults_are_low_confidence covers it."""
    return [finding.code for finding in report.findings if finding.code != "vmdk.writer_defaults"]


def messages(report: introspect.Report, code: str) -> list[str]:
    return [finding.message for finding in report.findings if finding.code == code]


def details_of(report: introspect.Report) -> vmdk.VmdkDetails:
    assert isinstance(report.details, vmdk.VmdkDetails), report.findings
    return report.details


# --- What the tools wrote, read independently -----------------------------------------------


def descriptor_text(group: Path, name: str) -> str:
    return recorded(image(group, name), "descriptor.txt")


def key(text: str, name: str) -> str | None:
    match = re.search(rf'^{re.escape(name)}\s*=\s*"?([^"\n]*)"?\s*$', text, re.MULTILINE)
    return match.group(1) if match else None


def extents(text: str) -> list[tuple[str, int, str, str, int | None]]:
    lines = re.findall(r'^(RW|RDONLY|NOACCESS) (\d+) (\w+) "([^"]*)"(?: (\d+))?\s*$', text, re.MULTILINE)
    return [(a, int(s), t, f, int(o) if o else None) for a, s, t, f, o in lines]


def test_every_recorded_image_is_tested(group: Path) -> None:
    suffix = ".vmdk.qemu-img.json"
    assert {p.name.removesuffix(suffix) for p in group.glob(f"*{suffix}")} == set(IMAGES)


@pytest.mark.parametrize("name", IMAGES)
def test_descriptor_matches_what_the_tool_wrote(group: Path, name: str) -> None:
    text = descriptor_text(group, name)
    details = details_of(introspect.inspect(image(group, name)))
    descriptor = details.descriptor
    assert descriptor is not None
    assert details.create_type == descriptor.create_type == key(text, "createType")
    assert descriptor.cid == key(text, "CID")
    assert descriptor.parent_cid == key(text, "parentCID")
    assert descriptor.parent_file_name_hint == key(text, "parentFileNameHint")
    assert details.adapter_type == key(text, "ddb.adapterType")
    assert [(e.access, e.sectors, e.type, e.file_name, e.offset) for e in descriptor.extents] == extents(text)
    hw_version = key(text, "ddb.virtualHWVersion")
    assert details.virtual_hw_version == (int(hw_version) if hw_version else None)
    assert details.tools_version == key(text, "ddb.toolsVersion")
    assert details.long_content_id == key(text, "ddb.longContentID")
    geometry = [key(text, f"ddb.geometry.{part}") for part in ("cylinders", "heads", "sectors")]
    if None in geometry:
        assert details.geometry is None
    else:
        assert details.geometry is not None
        assert [details.geometry.cylinders, details.geometry.heads, details.geometry.sectors] == [
            int(value) for value in geometry if value is not None
        ]
    assert details.bios_geometry is None  # qemu-img writes no BIOS geometry
    for ddb_key in re.findall(r"^(ddb\.\w+(?:\.\w+)*)\s*=", text, re.MULTILINE):
        assert descriptor.ddb[ddb_key] == key(text, ddb_key)


@pytest.mark.parametrize("name", IMAGES)
def test_what_qemu_img_says(group: Path, name: str) -> None:
    path = image(group, name)
    info = qemu_info(path)
    data = info["format-specific"]["data"]
    report = introspect.inspect(path)
    details = details_of(report)
    assert report.format == "vmdk"
    assert report.virtual_size == info["virtual-size"]
    assert details.create_type == data["create-type"]
    assert details.descriptor is not None
    assert int(details.descriptor.cid or "", 16) == data["cid"]
    assert int(details.descriptor.parent_cid or "", 16) == data["parent-cid"]
    assert details.backing_file == info.get("backing-filename")
    assert details.backing_format == info.get("backing-filename-format")
    if name in SPARSE:
        assert details.layout == "sparse"
        assert details.cluster_size == info["cluster-size"]
        assert details.header is not None
        compressed = data["extents"][0].get("compressed", False)
        assert (details.footer or details.header).compressed_grains == compressed
    else:
        assert details.layout == "descriptor"
        assert [e.file_name for e in details.descriptor.extents] == [e["filename"] for e in data["extents"]]


@pytest.mark.parametrize("name", SPARSE)
def test_a_sparse_image_costs_the_head_the_tail_and_its_footer(group: Path, name: str) -> None:
    report = introspect.inspect(image(group, name))
    header = details_of(report).header
    assert header is not None
    # Head, tail, the footer of a stream; the grain directory and tables when they are not in the
    # head (one read, at most MAX_TABLES_READ; a VMware stream's tables, before its directory, one
    # more) and a compressed stream's last grain marker, to see that no grain lies past the end.
    tables = 2 if header.gd_at_end else 1 if header.gd_offset * 512 >= 64 * 1024 - 4096 else 0
    compressed = 1 if header.compressed_grains else 0
    assert report.reads <= 2 + (1 if header.gd_at_end else 0) + tables + compressed
    assert (
        report.bytes_read <= 64 * 1024 + 512 + (1024 if header.gd_at_end else 0) + vmdk.MAX_TABLES_READ + 512
    )


def test_reads_are_capped_whatever_the_virtual_size(group: Path) -> None:
    """1 GiB: head, tail and one read of the grain directory and tables (checked for grains past the
    end); 1 TiB: its 64 MiB of preallocated tables are past MAX_TABLES_READ and not read."""
    small, big = (introspect.inspect(image(group, name)) for name in ("sparse-1g", "sparse-1t"))
    assert (small.virtual_size, big.virtual_size) == (1 << 30, 1 << 40)
    assert small.ok and big.ok
    assert (small.reads, big.reads) == (3, 2)
    assert small.bytes_read - big.bytes_read <= vmdk.MAX_TABLES_READ


def test_allowed_subformats_pass_the_default_policy(group: Path) -> None:
    for name in SPARSE:
        report = introspect.inspect(image(group, name))
        if name == "delta":
            assert codes(report) == ["vmdk.delta_disk"]
        else:
            assert report.verdict == Verdict.OK, (name, report.findings)


def test_hardware_version_compat6_and_zeroed_grain(group: Path) -> None:
    # What `qemu-img create -o` was asked for (fixtures/make/vmdk.sh), as the descriptor says it.
    assert details_of(introspect.inspect(image(group, "hwversion"))).virtual_hw_version == 14
    assert details_of(introspect.inspect(image(group, "compat6"))).virtual_hw_version == 6
    assert details_of(introspect.inspect(image(group, "toolsversion"))).tools_version == "10304"
    header = details_of(introspect.inspect(image(group, "zeroed-grain"))).header
    assert header is not None and header.version == 2 and header.zeroed_grain
    plain = details_of(introspect.inspect(image(group, "base"))).header
    assert plain is not None and plain.version == 1 and not plain.zeroed_grain and plain.redundant_grain_table


# --- streamOptimized ---------------------------------------------------------------------------


def test_vmdkstream_footer_replaces_the_header(group: Path) -> None:
    path = image(group, "vmdkstream")
    report = introspect.inspect(path)
    details = details_of(report)
    assert details.header is not None and details.footer is not None
    assert details.header.gd_at_end and not details.footer.gd_at_end
    assert details.footer.compressed_grains and details.footer.markers
    assert report.virtual_size == qemu_info(path)["virtual-size"]
    # The footer marker and footer are one read; the end-of-stream marker is in the cached tail.
    # Then the grain directory (before the footer), the grain tables (spread among the grains) and
    # the last grain's marker: no grain lies past the end.
    assert report.reads == 6
    assert report.bytes_read <= 64 * 1024 + 512 + 1024 + (path.stat().st_size - 64 * 1024)
    # VMDKstream names its extent RDONLY "call-me-stream.vmdk": still this file, not an outside one.
    assert report.verdict == Verdict.OK


def test_qemu_stream_optimized_has_its_grain_directory_in_the_header(group: Path) -> None:
    for name in STREAM_OPTIMIZED:
        if name == "vmdkstream":
            continue
        details = details_of(introspect.inspect(image(group, name)))
        assert details.header is not None and details.footer is None
        assert details.header.compressed_grains and details.header.markers
        assert details.header.compress_algorithm == 1


# --- Descriptor files: nothing they name is ever opened ----------------------------------------


@pytest.mark.parametrize("name", DESCRIPTOR_FILES)
def test_a_descriptor_file_alone_is_enough(
    group: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lone = tmp_path / f"{name}.vmdk"
    shutil.copyfile(image(group, name), lone)
    opened: list[str] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    report = introspect.inspect(lone)
    monkeypatch.undo()
    assert opened == [str(lone)]
    assert report.reads == 1
    assert report.bytes_read == lone.stat().st_size
    assert report.virtual_size == qemu_info(image(group, name))["virtual-size"]
    expected = (
        "vmdk.descriptor_split"
        if name.startswith(("twoGbMaxExtent", "split"))
        else "vmdk.descriptor_only"  # its one extent is a VMFSSPARSE (COWD) file
        if name == "esx-vmfssparse"
        else "vmdk.descriptor_flat"
    )
    assert expected in codes(report)
    assert report.verdict == Verdict.REJECTED


def test_descriptor_file_findings_name_the_type_and_the_extents(group: Path) -> None:
    report = introspect.inspect(image(group, "split-flat"))
    assert messages(report, "vmdk.create_type") == [
        "the createType is 'twoGbMaxExtentFlat', which the policy does not accept (allowed: "
        "monolithicSparse, streamOptimized); re-export as streamOptimized or convert with "
        "`qemu-img convert -O vmdk -o subformat=streamOptimized`"
    ]
    assert messages(report, "vmdk.descriptor_split") == [
        "this is the descriptor of a split disk (twoGbMaxExtentFlat): its data is in 3 other file(s) "
        "('split-flat-f001.vmdk', 'split-flat-f002.vmdk', 'split-flat-f003.vmdk'), not part of this upload; "
        "where all its files are, make one self-contained image: `qemu-img convert -f vmdk DESCRIPTOR.vmdk "
        "-O vmdk -o subformat=streamOptimized` (or `vmware-vdiskmanager -r DESCRIPTOR.vmdk -t 5`), and upload that"
    ]
    allow_flat = Policy(vmdk_create_types=frozenset({"twoGbMaxExtentFlat"}))
    assert "vmdk.create_type" not in codes(introspect.inspect(image(group, "split-flat"), policy=allow_flat))


def test_descriptor_padded_with_nuls_is_still_a_descriptor(group: Path, tmp_path: Path) -> None:
    text = image(group, "monolithicFlat-lsilogic").read_bytes()
    padded = tmp_path / "padded.vmdk"
    padded.write_bytes(text + b"\0" * (-len(text) % 512))
    assert len(padded.read_bytes()) % 512 == 0
    report = introspect.inspect(padded)
    assert report.format == "vmdk"
    assert codes(report) == codes(introspect.inspect(image(group, "monolithicFlat-lsilogic")))


def test_probe_rejects_binary_and_plain_text(group: Path) -> None:
    descriptor = image(group, "monolithicFlat-ide").read_bytes()
    assert vmdk.probe(Head(descriptor, descriptor[-512:], len(descriptor)))
    with image(group, "monolithicFlat-ide-flat").open("rb") as extent:
        flat = extent.read(65536)
    for data in (
        flat,
        b'#!/bin/sh\nversion=1\ncreateType="x"\n\x00\x01\x02binary',
        descriptor.replace(b"createType", b"kind").replace(b"# Disk DescriptorFile", b"# some file"),
        b'hello\nversion=1\ncreateType="monolithicFlat"\n',
    ):
        assert not vmdk.probe(Head(data, data[-512:], len(data))), data[:60]


@pytest.mark.parametrize(
    ("change", "code", "text"),
    [
        (lambda d: d[:40] + b"\x07" + d[40:], "vmdk.descriptor_not_text", "binary (byte 0x07)"),
        (lambda d: d[:200] + bytes(range(256)) * 4, "vmdk.descriptor_not_text", "binary (byte 0x00)"),
        (lambda d: d.replace(b"createType", b"kind"), "vmdk.descriptor_syntax", "createType is 'missing'"),
    ],
    ids=["control-byte", "binary-garbage", "no-createType"],
)
def test_a_file_opening_as_a_descriptor_is_a_broken_vmdk_not_raw(
    group: Path, tmp_path: Path, change, code, text
):
    """`# Disk DescriptorFile` then binary data is a broken VMDK descriptor (an error naming it),
    never a raw disk that is `ok`; so is a descriptor without the createType qemu requires."""
    path = tmp_path / "broken.vmdk"
    path.write_bytes(change(image(group, "monolithicFlat-ide").read_bytes()))
    report = introspect.inspect(path)
    assert report.format == "vmdk"
    assert report.verdict == Verdict.ERROR
    assert [f.code for f in report.findings] == [code]
    assert text in report.findings[0].message


def edited(group: Path, tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of descriptor file NAME with one piece of its text replaced."""
    text = image(group, name).read_text()
    assert old in text
    path = tmp_path / f"edited-{name}.vmdk"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "extent_name", ["/etc/shadow", "../../secret.vmdk", "sub/../../x.vmdk", "C:\\disk.vmdk", "file:///x"]
)
def test_extent_path_escaping_the_directory(group: Path, tmp_path: Path, extent_name: str) -> None:
    path = edited(group, tmp_path, "monolithicFlat-ide", '"monolithicFlat-ide-flat.vmdk"', f'"{extent_name}"')
    report = introspect.inspect(path)
    assert messages(report, "vmdk.extent_path") == [
        f"the extent file name {extent_name!r} is absolute or climbs out with `..`: a hypervisor would "
        "open that file; re-export as streamOptimized or convert with "
        "`qemu-img convert -O vmdk -o subformat=streamOptimized`"
    ]
    assert details_of(report).descriptor.extents[0].file_name == extent_name  # type: ignore[union-attr]


def test_extent_name_over_the_cap(group: Path, tmp_path: Path) -> None:
    long_name = "x" * (vmdk_descriptor.MAX_NAME_LENGTH + 1)
    path = edited(group, tmp_path, "monolithicFlat-ide", "monolithicFlat-ide-flat.vmdk", long_name)
    report = introspect.inspect(path)
    extent = details_of(report).descriptor.extents[0]  # type: ignore[union-attr]
    assert extent.file_name == long_name[: vmdk_descriptor.MAX_NAME_LENGTH] and extent.file_name_truncated
    assert messages(report, "vmdk.extent_path")[0].startswith("an extent file name is longer than 1023")


def test_disk_database_shortcuts(group: Path, tmp_path: Path) -> None:
    # As VMware writes them: ddb.uuid as 16 hex bytes, BIOS geometry, thin provisioning.
    ddb = (
        '#DDB\nddb.uuid = "60 00 C2 9b 69 2f c9 76-74 c4 07 9e 10 87 3b f9"\nddb.thinProvisioned = "1"\n'
        'ddb.geometry.biosCylinders = "1024"\nddb.geometry.biosHeads = "255"\n'
        'ddb.geometry.biosSectors = "63"\nddb.longContentID = "0123456789abcdef0123456789abcdef"\n'
    )
    report = introspect.inspect(edited(group, tmp_path, "monolithicFlat-lsilogic", "#DDB\n", ddb))
    details = details_of(report)
    assert details.uuid == "6000c29b-692f-c976-74c4-079e10873bf9"
    assert details.thin_provisioned is True
    assert details.bios_geometry is not None
    assert (details.bios_geometry.cylinders, details.bios_geometry.heads, details.bios_geometry.sectors) == (
        1024,
        255,
        63,
    )
    assert details.long_content_id == "0123456789abcdef0123456789abcdef"
    assert "vmdk.descriptor_unknown_key" not in codes(report)


@pytest.mark.parametrize("name", ["cid-leftover-streamOptimized", "cid-leftover-monolithicFlat"])
def test_what_qemus_cid_rewrite_leaves_after_the_nul_is_qemus_own_output(group: Path, name: str) -> None:
    """qemu-img rewrites the CID in place at a VMDK's first write: a new CID with fewer digits
    leaves the end of the old text after the new text's NUL (fixtures/make/vmdk.sh converts until
    it does, in a sparse extent and in a descriptor file). That is no broken descriptor: it reads
    as qemu reads it, with no finding about its text (about 1 in 100 of qemu-img's VMDKs were
    rejected, or an error)."""
    path = image(group, name)
    text, after = recorded(path, "descriptor.txt"), recorded(path, "after-nul.txt")
    assert after and text.endswith(after)  # what the fixture holds: a NUL, then the text's last bytes again
    report = introspect.inspect(path)
    info = qemu_info(path)
    assert (report.format, report.virtual_size) == ("vmdk", info["virtual-size"])
    assert not {"vmdk.descriptor_syntax", "vmdk.descriptor_not_text"} & set(codes(report))
    descriptor = report.details.descriptor
    assert descriptor is not None
    assert descriptor.create_type == info["format-specific"]["data"]["create-type"]
    assert int(descriptor.cid, 16) == info["format-specific"]["data"]["cid"]
    assert descriptor.ddb["ddb.toolsVersion"] == re.search(r'ddb.toolsVersion = "(\d+)"', text)[1]
    if name.endswith("streamOptimized"):
        assert report.verdict == Verdict.OK, report.findings


@pytest.mark.parametrize(
    ("after", "read_past"),
    [
        (b"\n", False),  # one digit shorter: the text's last byte again
        (b'47"\n', False),
        (b'483647"\n'[-6:], False),  # the most a CID's 8 digits can leave
        (b'2483647"\n', True),  # more than qemu's rewrite can leave
        (b"x\n", True),  # not the text's end
        (b'RW 1 FLAT "/etc/passwd" 0\n', True),  # a line other readers would read
    ],
)
def test_after_a_nul_only_qemus_cid_leftover_is_let_pass(after: bytes, read_past: bool) -> None:
    text = b'# Disk DescriptorFile\nversion=1\nCID=1a\nddb.toolsVersion = "2147483647"\n'
    read, nul = vmdk_descriptor.descriptor_text(text + b"\0" + after + bytes(100))
    assert read == text
    assert nul == (len(text) if read_past else None)


def test_unknown_key_warns_and_unknown_line_rejects(group: Path, tmp_path: Path) -> None:
    path = edited(group, tmp_path, "monolithicFlat-ide", "#DDB\n", '#DDB\nfancyKey="1"\nthis is not vmdk\n')
    report = introspect.inspect(path)
    unknown = [f for f in report.findings if f.code == "vmdk.descriptor_unknown_key"]
    assert [(f.severity, f.message) for f in unknown] == [
        (
            Severity.WARN,
            "1 descriptor line(s) have a key the VMDK spec does not list (first: 'fancyKey=\"1\"'); check "
            "where the image comes from, or re-export as streamOptimized or convert with "
            "`qemu-img convert -O vmdk -o subformat=streamOptimized`",
        )
    ]
    assert messages(report, "vmdk.descriptor_syntax") == [
        "1 descriptor line(s) are neither a comment, `key = value` nor an extent (first: "
        "'this is not vmdk'): a hypervisor may read them differently; re-export as streamOptimized or "
        "convert with `qemu-img convert -O vmdk -o subformat=streamOptimized`"
    ]


@pytest.mark.parametrize(
    ("old", "new", "first"),
    [
        ("# Disk DescriptorFile\n", '# Disk DescriptorFile\n# parentFileNameHint="/etc/shadow"\n',
         "'parentFileNameHint'"),
        ('createType="monolithicFlat"\n', 'createType="monolithicFlat"\ncreateType="monolithicSparse"\n',
         "'createType=\"monolithicSparse\"'"),
    ],
)  # fmt: skip
def test_ambiguous_descriptor(group: Path, tmp_path: Path, old: str, new: str, first: str) -> None:
    report = introspect.inspect(edited(group, tmp_path, "monolithicFlat-ide", old, new))
    found = messages(report, "vmdk.descriptor_ambiguous")
    assert len(found) == 1 and f"(first: {first})" in found[0]


def test_descriptor_over_the_limits(group: Path, tmp_path: Path) -> None:
    text = image(group, "monolithicFlat-ide").read_text()
    extent = extents(text)[0]
    many = "".join(f'RW 1 FLAT "part-{i}.vmdk" 0\n' for i in range(vmdk_descriptor.MAX_EXTENTS + 5))
    big = tmp_path / "big.vmdk"
    padding = "#" * vmdk_descriptor.DESCRIPTOR_MAX_SIZE
    big.write_text(text.replace(f'RW {extent[1]} FLAT "{extent[3]}" 0\n', many) + padding)
    report = introspect.inspect(big)
    details = details_of(report)
    assert len(details.descriptor.extents) == vmdk_descriptor.MAX_EXTENTS  # type: ignore[union-attr]
    assert report.virtual_size == vmdk_descriptor.MAX_EXTENTS * 512
    assert sorted(messages(report, "vmdk.descriptor_limit")) == [
        f"the descriptor file is {big.stat().st_size} bytes, more than the 1048575 qemu reads: what lies "
        "beyond is seen by VMware but not by qemu; re-export as streamOptimized or convert with "
        "`qemu-img convert -O vmdk -o subformat=streamOptimized`",
        "the descriptor has more than 1024 extents: 5 line(s) were not read (first: "
        "'RW 1 FLAT \"part-1024.vmdk\" 0'); re-export as streamOptimized or convert with "
        "`qemu-img convert -O vmdk -o subformat=streamOptimized`",
    ]


# --- Delta disks, split extents, ESX sparse -----------------------------------------------------


def test_delta_disk(group: Path) -> None:
    path = image(group, "delta")
    report = introspect.inspect(path)
    info = qemu_info(path)
    assert details_of(report).backing_file == info["backing-filename"] == "base.vmdk"
    parent_cid = key(descriptor_text(group, "delta"), "parentCID")
    assert int(parent_cid or "", 16) == qemu_info(image(group, "base"))["format-specific"]["data"]["cid"]
    assert messages(report, "vmdk.delta_disk") == [
        f"the disk is a delta of a parent disk (parentFileNameHint 'base.vmdk', parentCID '{parent_cid}') "
        "and holds only the changes: flatten it with `qemu-img convert -O vmdk -o subformat=streamOptimized` "
        "on the top of the chain"
    ]


def test_lone_extent_of_a_split_disk(group: Path) -> None:
    path = group / "split-sparse-s001.vmdk"
    # qemu-img cannot open it (fixtures/make/vmdk.sh records why); its size is the descriptor's.
    assert "Could not open" in recorded(path, "qemu-img.txt")
    report = introspect.inspect(path)
    details = details_of(report)
    assert details.layout == "sparse" and details.descriptor is None
    assert report.virtual_size == extents(descriptor_text(group, "split-sparse"))[0][1] * 512
    assert codes(report) == ["vmdk.no_descriptor"]
    assert report.verdict == Verdict.REJECTED


def test_esx_sparse_cowd_extent(group: Path) -> None:
    path = group / "cowd.vmdk"
    assert "Could not open" in recorded(path, "qemu-img.txt")
    # qemu-img read the same extent through the vmfsSparse descriptor that names it.
    qemu_extent = qemu_info(image(group, "esx-vmfssparse"))["format-specific"]["data"]["extents"][0]
    assert qemu_extent["filename"] == "cowd.vmdk"
    report = introspect.inspect(path)
    details = details_of(report)
    assert details.layout == "esx_sparse" and details.esx_sparse_header is not None
    assert report.virtual_size == qemu_extent["virtual-size"]
    assert details.cluster_size == qemu_extent["cluster-size"]
    assert details.esx_sparse_header.version == 1
    assert messages(report, "vmdk.esx_sparse") == [
        "the file is an ESX sparse (COWD) extent: a vmfsSparse redo log or snapshot that needs its "
        "descriptor and parent on a VMFS datastore; re-export as streamOptimized or convert with "
        "`qemu-img convert -O vmdk -o subformat=streamOptimized` from ESX"
    ]
    assert report.reads == 1


# --- Hostile headers, derived from real images --------------------------------------------------


def patched(group: Path, tmp_path: Path, name: str, structure: Any = SparseExtentHeader, at: int = 0,
            **changes: Any) -> Path:  # fmt: skip
    """A copy of fixture NAME with fields of the structure at offset AT (from the end if negative) changed."""
    data = bytearray(image(group, name).read_bytes())
    rewrite(data, structure, at if at >= 0 else len(data) + at, **changes)
    path = tmp_path / f"{name}-patched.vmdk"
    path.write_bytes(data)
    return path


def only_finding(report: introspect.Report) -> tuple[str, str]:
    assert report.verdict == Verdict.ERROR
    assert len(report.findings) == 1, report.findings
    return report.findings[0].code, report.findings[0].message


def test_truncated_header(group: Path, tmp_path: Path) -> None:
    path = tmp_path / "short.vmdk"
    path.write_bytes(image(group, "base").read_bytes()[:300])
    assert only_finding(introspect.inspect(path)) == (
        "image.truncated",
        "the sparse extent header needs bytes 0..512 but the file ends at 300: the image was cut short; "
        "upload it again (at offset 0)",
    )


def cut(path: Path, size: int, tmp_path: Path) -> Path:
    target = tmp_path / f"cut-{size}-{path.name}"
    target.write_bytes(path.read_bytes()[:size])
    return target


@pytest.mark.parametrize("keep", [512, 4096, 8192, 35840, 66048, "half", "-512", "-1024", "-1536"])
def test_a_cut_vmware_stream_is_truncated(group: Path, tmp_path: Path, keep) -> None:
    """VMDKstream writes VMware's layout (gdOffset = GD_AT_END, the real header as a footer before
    the end-of-stream marker): any cut loses the footer, and the image cannot be read at all."""
    path = image(group, "vmdkstream")
    size = path.stat().st_size
    keep = size // 2 if keep == "half" else size + int(keep) if isinstance(keep, str) else keep
    report = introspect.inspect(cut(path, keep, tmp_path))
    assert report.verdict == Verdict.ERROR
    code, message = only_finding(report)
    assert code == "image.truncated"
    assert "cut short" in message


@pytest.mark.parametrize(
    ("name", "cuts"),
    [
        # qemu-img's stream: directory and tables up front, its last grain at sector 129, then the
        # end-of-stream marker: cut inside the grain. (Cut just before the marker, it is what qemu-img
        # itself writes when the last grain ends the file: see the test below.)
        ("convert-stream", (66048,)),
        # qemu-img convert of a GPT disk (fixtures/make/partitioned.sh): grains for the primary
        # table at the start and the backup at the end of the disk.
        ("partitioned/gpt", (66048, "half", "-512")),
        ("partitioned/gpt-stream", (66048, 66560)),  # grains at sectors 128-130, then the EOS
    ],
)
def test_a_cut_sparse_extent_is_truncated_where_its_grains_are_missing(
    group: Path, tmp_path: Path, name, cuts
):
    """qemu writes the grain directory and tables ahead of the grains: a cut file still parses, and
    its tables name the grains that are gone, so it is rejected (the uncut one is ok)."""
    path = (
        image(group, name) if "/" not in name else fixture_group("partitioned") / f"{name.split('/')[1]}.vmdk"
    )
    assert introspect.inspect(path).ok
    size = path.stat().st_size
    for keep in cuts:
        keep = (
            size // 2 // 512 * 512 if keep == "half" else size + int(keep) if isinstance(keep, str) else keep
        )
        report = introspect.inspect(cut(path, keep, tmp_path))
        assert report.verdict == Verdict.REJECTED, (keep, report.findings)
        assert codes(report) == ["image.truncated"]
        message = messages(report, "image.truncated")[0]
        assert message.startswith("the VMDK's grain tables map data past the end of the file: the last ")
        assert f"but the file ends at {keep}" in message
        assert report.reads <= 5


def test_a_stream_that_ends_with_its_last_grain_is_whole(group: Path, tmp_path: Path) -> None:
    """qemu-img 7.2 writes streams whose last grain ends the file, with no end-of-stream marker after
    it (seen converting 1 GiB of random data; `qemu-img check` finds no error): without its marker,
    a stream whose every grain is there is not cut."""
    path = image(group, "convert-stream")
    trimmed = cut(path, path.stat().st_size - 512, tmp_path)
    assert (
        subprocess.run(["qemu-img", "check", "-f", "vmdk", str(trimmed)], capture_output=True).returncode == 0
    )
    assert introspect.inspect(trimmed).ok


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grain_size": 3}, "header grainSize is 3, expected a power of two of at most 2097152 sectors: "
                            "the image is corrupt; re-export it"),
        ({"version": 4}, "header version is 4, expected 1, 2 or 3: qemu cannot open it; re-export it"),
        ({"num_gtes_per_gt": 4096}, "header numGTEsPerGT is 4096, expected 1 to 512: the image is corrupt; "
                                    "re-export it"),
        ({"compress_algorithm": 7}, "header compressAlgorithm is 7, expected 0 (none) or 1 (deflate): the "
                                    "image is corrupt; re-export it"),
        ({"double_end_line_char1": b"\n"}, "header newline detection characters is b'\\n \\n\\n', expected "
                                           "b'\\n \\r\\n': the file went through a text-mode transfer that "
                                           "rewrote its bytes; upload it again in binary mode"),
        ({"descriptor_offset": 1 << 40}, "descriptorOffset is 1099511627776, expected a sector inside the "
                                         "file (it has 128 sectors): the image is truncated or corrupt; "
                                         "upload it again"),
        ({"gd_offset": 1 << 20}, "header gdOffset is 1048576, expected a sector inside the file, after "
                                 "the header (it has 128): the image is truncated or corrupt; upload it "
                                 "again"),
        ({"capacity": 1 << 62}, "header capacity is 4611686018427387904, expected at most 33554432 grain "
                                "directory entries of 65536 sectors and at most 18014398509481983 sectors: "
                                "the image is corrupt; re-export it"),
    ],
)  # fmt: skip
def test_header_out_of_range(group: Path, tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    report = introspect.inspect(patched(group, tmp_path, "base", **changes))
    assert only_finding(report) == ("vmdk.bad_header", message)


def test_overhead_past_the_end(group: Path, tmp_path: Path) -> None:
    report = introspect.inspect(patched(group, tmp_path, "base", over_head=1000))
    assert only_finding(report) == (
        "image.truncated",
        "the sparse extent metadata (overHead) needs bytes 0..512000 but the file ends at 65536: the image "
        "was cut short; upload it again (at offset 0)",
    )


def test_footer_with_a_bad_end_of_stream_marker(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path, "vmdkstream", Marker, at=-512, type=vmdk.MARKER_GT)
    code, message = only_finding(introspect.inspect(path))
    assert (code, message.split(": ")[0]) == ("vmdk.bad_header", "end-of-stream marker type is 1, expected 0")


def test_read_budget(group: Path) -> None:
    report = introspect.inspect(image(group, "vmdkstream"), budget=Budget(max_reads=2))
    assert only_finding(report) == (
        "image.read_budget",
        "reading the stream-optimized footer would exceed the inspection budget (at most 2 reads); a "
        "well-formed image never needs this much, so the file is treated as hostile",
    )


def test_unclean_shutdown_warns(group: Path, tmp_path: Path) -> None:
    report = introspect.inspect(patched(group, tmp_path, "base", unclean_shutdown=True))
    assert report.verdict == Verdict.OK
    assert [(f.code, f.severity) for f in report.findings if f.code in codes(report)] == [
        ("vmdk.unclean_shutdown", Severity.WARN)
    ]


def test_descriptor_elsewhere_than_qemu_reads_it(group: Path, tmp_path: Path) -> None:
    report = introspect.inspect(patched(group, tmp_path, "base", descriptor_offset=2))
    assert messages(report, "vmdk.descriptor_location") == [
        "the embedded descriptor is at sector 2, but qemu reads CID and parentFileNameHint at sector 1: "
        "the two readers may see different disks; re-export as streamOptimized or convert with "
        "`qemu-img convert -O vmdk -o subformat=streamOptimized`"
    ]


def test_capacity_zero_turns_the_embedded_descriptor_into_a_descriptor_file(
    group: Path, tmp_path: Path
) -> None:
    # qemu then opens the extents the descriptor names (here base.vmdk): the data is elsewhere.
    report = introspect.inspect(patched(group, tmp_path, "base", capacity=0))
    details = details_of(report)
    assert details.layout == "descriptor"
    assert report.virtual_size == qemu_info(image(group, "base"))["virtual-size"]
    assert "vmdk.descriptor_only" in codes(report)
    assert messages(report, "vmdk.descriptor_only")[0].startswith(
        "this is only the descriptor of a disk whose data is the SPARSE extent 'base.vmdk', not part of this upload"
    )


def test_embedded_descriptor_listing_another_extent(group: Path, tmp_path: Path) -> None:
    path = patched(group, tmp_path, "base")
    data = path.read_bytes()
    edited = data.replace(b'SPARSE "base.vmdk"', b'FLAT "/dev/sda" 0 ')  # same length: tables stay put
    assert len(edited) == len(data)
    path.write_bytes(edited)
    report = introspect.inspect(path)
    assert sorted(codes(report)) == ["vmdk.extent_outside", "vmdk.extent_path"]
    assert messages(report, "vmdk.extent_outside")[0].startswith(
        "the embedded descriptor lists 1 extent(s) (FLAT 14336) but a monolithic sparse disk has exactly "
        "one SPARSE extent of 14336 sectors, this file"
    )


@pytest.mark.parametrize("name", ["base", "vmdkstream", "monolithicFlat-ide", "delta"])
def test_mutated_images_never_reach_an_internal_error(group: Path, name: str) -> None:
    """Random byte changes in the header and descriptor (and cuts) of real images: every VMDK
    outcome is a verdict, never `introspect.internal_error` (seeded, so a failure reproduces)."""
    data = image(group, name).read_bytes()
    rng = random.Random(name)
    for _ in range(400):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(min(len(mutated), 1536))] = rng.randrange(256)
        if rng.random() < 0.1:
            mutated = mutated[: rng.randrange(1, len(mutated))]
        report = introspect.inspect(BytesSource(bytes(mutated)))
        if report.format == "vmdk":  # what no longer probes as VMDK is another module's business
            assert "introspect.internal_error" not in codes(report), report.findings


@pytest.mark.parametrize("version", [1, 2])
def test_a_stream_below_version_3_is_a_warning(group: Path, tmp_path: Path, version: int) -> None:
    """qemu-img today writes version 3 (as the fixture's header says); qemu 2.1-2.5 wrote 1, which
    ESXi refuses: the same image with its version rewritten warns, naming the fix."""
    assert SparseExtentHeader.unpack(image(group, "convert-stream").read_bytes()).version == 3
    path = patched(group, tmp_path, "convert-stream", version=version)
    report = introspect.inspect(path)
    assert report.verdict == Verdict.OK
    assert [(f.code, f.severity) for f in report.findings] == [("vmdk.stream_version", Severity.WARN)]
    assert f"sparse header is version {version}: ESXi and vCenter refuse" in report.findings[0].message
    assert "-o subformat=streamOptimized" in report.findings[0].message
    assert introspect.inspect(image(group, "convert-stream")).findings == []


@pytest.mark.parametrize(
    ("name", "confidence"),
    [("monolithicSparse-ide", "low"), ("monolithicFlat-ide", "low"), ("monolithicSparse-lsilogic", "stated"),
     ("hwversion", "stated"), ("compat6", "stated")],
)  # fmt: skip
def test_writer_defaults_are_low_confidence(group: Path, name: str, confidence: str) -> None:
    """qemu-img writes adapterType ide and virtualHWVersion 4 unless told (fixtures/make/vmdk.sh asked
    for lsilogic, hwversion 14 and compat6 in the others, as their recorded descriptors say)."""
    descriptor = recorded(image(group, name), "descriptor.txt")
    report = introspect.inspect(image(group, name))
    details = details_of(report)
    assert details.adapter_type_confidence == confidence
    found = [f for f in report.findings if f.code == "vmdk.writer_defaults"]
    if confidence == "low":
        assert 'ddb.adapterType = "ide"' in descriptor and 'ddb.virtualHWVersion = "4"' in descriptor
        assert [f.severity for f in found] == [Severity.INFO]
        assert "set hw_disk_bus" in found[0].message and "-o adapter_type=" in found[0].message
        if "Sparse" in name:
            assert report.verdict == Verdict.OK  # an info finding rejects nothing
    else:
        assert found == []


def test_a_descriptor_of_several_extents_is_multi_extent(group: Path, tmp_path: Path) -> None:
    """monolithicFlat-lsilogic's descriptor (qemu-img), its one FLAT extent listed twice under new
    names: not a split createType, so its own code, naming both files."""
    path = edited(
        group,
        tmp_path,
        "monolithicFlat-lsilogic",
        'FLAT "monolithicFlat-lsilogic-flat.vmdk" 0',
        'FLAT "part-a.vmdk" 0\nRW 8 FLAT "part-b.vmdk" 0',
    )
    report = introspect.inspect(path)
    assert codes(report) == ["vmdk.descriptor_multi_extent", "vmdk.create_type"]
    assert messages(report, "vmdk.descriptor_multi_extent")[0].startswith(
        "this is the descriptor of a disk made of 2 extents in other files ('part-a.vmdk', 'part-b.vmdk')"
    )
    assert report.verdict == Verdict.REJECTED
