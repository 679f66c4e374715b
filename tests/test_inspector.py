"""introspect.inspect(): detection, wrappers, declared formats, policy, cross-check, the safety net."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import time

import pytest

import introspect
from introspect import inspector, qemu
from introspect.containers import compressed
from introspect.formats import every_format, qcow2
from introspect.model import Severity, Verdict
from introspect.safety import Policy
from tests.conftest import fixture_group
from tests.tools import qemu_info


def replace_qcow2_parser(monkeypatch, parser):
    """Detection hands qcow2 files to `parser` instead of the real one (for the two tests below)."""
    monkeypatch.setattr(qcow2, "FORMAT", dataclasses.replace(qcow2.FORMAT, inspect=parser))


def make(tmp_path, fmt: str, size: str, *options: str):
    path = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(path), size], check=True)
    return path


WRAPPED = [
    (image, wrapper)
    for image in ("wrapped-1g3m.qcow2", "wrapped-1t.qcow2")
    for wrapper in ("gz", "xz", "zst", "bz2")
] + [("wrapped-1g3m.qcow2", "members.gz")]


@pytest.mark.parametrize(("image", "wrapper"), WRAPPED)
def test_compressed_qcow2_is_read_through_its_wrapper(image, wrapper):
    plain = fixture_group("named") / image
    report = introspect.inspect(plain.with_name(f"{image}.{wrapper}"))
    assert report.format == "qcow2"
    assert (
        report.container_format
        == {"gz": "gzip", "members.gz": "gzip", "xz": "xz", "zst": "zstd", "bz2": "bz2"}[wrapper]
    )
    assert report.virtual_size == qemu_info(plain)["virtual-size"]
    assert report.verdict == Verdict.OK
    assert report.properties["introspect_container_format"] == report.container_format


def test_a_gzip_bomb_is_read_only_up_to_the_cap():
    report = introspect.inspect(fixture_group("named") / "zeros-256m.raw.gz")
    assert (report.format, report.container_format, report.virtual_size) == ("raw", "gzip", None)
    assert [f.code for f in report.findings] == ["compressed.partial"]
    assert report.bytes_read < 1 << 20


def test_declared_format_mismatch(tmp_path):
    report = introspect.inspect(make(tmp_path, "qcow2", "1G"), expect="raw")
    assert report.verdict == Verdict.REJECTED
    (finding,) = [f for f in report.findings if f.code == "image.format_mismatch"]
    assert finding.message == (
        "declared as raw but the content is qcow2: set disk_format=qcow2, "
        "or convert with `qemu-img convert -O raw`"
    )


@pytest.mark.parametrize(("declared", "image"), [("raw", "plain.iso"), ("iso", "plain.iso")])
def test_an_iso_satisfies_raw(declared, image):
    report = introspect.inspect(fixture_group("iso") / image, expect=declared)
    assert report.verdict == Verdict.OK


def test_qemu_names_are_accepted_for_expect(tmp_path):
    report = introspect.inspect(make(tmp_path, "vpc", "7M"), expect="vpc")
    assert (report.format, report.verdict) == ("vhd", Verdict.OK)


def test_unknown_expected_format_is_a_usage_error(tmp_path):
    with pytest.raises(introspect.UsageError, match="unknown format 'qcow3'"):
        introspect.inspect(make(tmp_path, "qcow2", "1G"), expect="qcow3")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.img"
    path.touch()
    report = introspect.inspect(path)
    # Its own outcome, not an error: nothing failed to parse; image.empty rejects it.
    assert (report.format, report.verdict, report.reads) == (None, Verdict.REJECTED, 0)
    assert [f.code for f in report.findings] == ["image.empty"]
    assert report.findings[0].message.startswith("the file is empty: nothing was uploaded")
    demoted = introspect.inspect(path, policy=Policy(severity={"image.empty": Severity.WARN}))
    assert demoted.verdict == Verdict.OK


def test_open_file_and_byte_source(tmp_path):
    path = make(tmp_path, "qcow2", "3G")
    with path.open("rb") as handle:
        from_file = introspect.inspect(handle)
    from_bytes = introspect.inspect(introspect.BytesSource(path.read_bytes(), "in-memory"))
    assert from_file.virtual_size == from_bytes.virtual_size == 3 << 30
    assert from_bytes.source == "in-memory"


def test_policy_demotes_and_report_only(tmp_path):
    base = make(tmp_path, "qcow2", "1G")
    child = tmp_path / "child.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(child)], check=True
    )
    assert introspect.inspect(child).verdict == Verdict.REJECTED
    demoted = introspect.inspect(child, policy=Policy(severity={"qcow2.*": Severity.WARN}))
    assert demoted.verdict == Verdict.OK
    assert [f.severity for f in demoted.findings if f.code == "qcow2.backing_file"] == [Severity.WARN]
    recorded = introspect.inspect(child, policy=Policy(report_only=True))
    assert recorded.verdict == Verdict.OK
    assert [f.severity for f in recorded.findings if f.code == "qcow2.backing_file"] == [Severity.REJECT]


def test_virtual_size_limit(tmp_path):
    report = introspect.inspect(make(tmp_path, "qcow2", "2T"), policy=Policy(max_virtual_size=1 << 40))
    assert [f.code for f in report.findings] == ["image.virtual_size_limit"]


@pytest.mark.qemu
def test_cross_check_agrees_and_skips_what_qemu_would_follow(tmp_path):
    base = make(tmp_path, "qcow2", "1G")
    assert introspect.inspect(base, cross_check=True).findings == []
    child = tmp_path / "child.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(child)], check=True
    )
    codes = [f.code for f in introspect.inspect(child, cross_check=True).findings]
    assert codes == ["qcow2.backing_file", "qemu.skipped"]


def _flat_vmdk_naming(tmp_path, extent):
    """A monolithicFlat VMDK made by qemu-img, its descriptor's extent renamed to `extent` (the
    descriptor is a text file; the rename keeps its length rules). Its own flat extent is replaced
    by a FIFO: a qemu-img that opened it would hang there until its timeout."""
    descriptor = tmp_path / "disk.vmdk"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(descriptor), "64M"],
        check=True,
    )
    flat = tmp_path / "disk-flat.vmdk"
    flat.unlink()
    os.mkfifo(flat)
    text = descriptor.read_text()
    assert '"disk-flat.vmdk"' in text
    descriptor.write_text(text.replace('"disk-flat.vmdk"', f'"{extent}"'))
    return descriptor


@pytest.mark.qemu
@pytest.mark.timeout(60)
@pytest.mark.parametrize("extent", ["disk-flat.vmdk", "/etc/passwd", "../../../../dev/zero"])
def test_cross_check_never_runs_on_an_image_naming_files_whatever_the_policy(tmp_path, extent):
    """The decision rests on the safety fact (the image names a file), not on a severity a policy
    may have lowered: with every vmdk.* rule demoted to info, qemu-img still never looks."""
    image = _flat_vmdk_naming(tmp_path, extent)
    started = time.monotonic()
    report = introspect.inspect(image, cross_check=True, policy=Policy(severity={"vmdk.*": Severity.INFO}))
    assert time.monotonic() - started < qemu.TIMEOUT_SECONDS
    skipped = [f.message for f in report.findings if f.code == "qemu.skipped"]
    assert len(skipped) == 1 and "names files outside itself (vmdk." in skipped[0], report.findings
    assert not [f for f in report.findings if f.code in ("qemu.failed", "qemu.disagrees")]


@pytest.mark.qemu
def test_cross_check_reports_a_disagreement(tmp_path, monkeypatch):
    """A parser that misreads the size (simulated by wrapping the real one) is caught by qemu-img."""
    path = make(tmp_path, "qcow2", "1G")
    real = qcow2.FORMAT.inspect

    def misread(reader, policy):
        inspection = real(reader, policy)
        inspection.virtual_size += 512
        return inspection

    replace_qcow2_parser(monkeypatch, misread)
    report = introspect.inspect(path, cross_check=True)
    assert [f.code for f in report.findings] == ["qemu.disagrees"]
    assert report.findings[0].message.startswith(
        f"qemu-img says the virtual size is {1 << 30} bytes, introspect read {(1 << 30) + 512}"
    )
    assert report.verdict == Verdict.REJECTED


def test_a_parser_bug_is_an_error_verdict_not_an_exception(tmp_path, monkeypatch):
    def broken(reader, policy):
        raise ZeroDivisionError("division by zero")

    replace_qcow2_parser(monkeypatch, broken)
    report = introspect.inspect(make(tmp_path, "qcow2", "1G"))
    assert report.verdict == Verdict.ERROR
    assert report.findings[0].message == (
        "introspect failed on this qcow2 image (ZeroDivisionError: division by zero); "
        "please report it with the file"
    )


def test_file_objects_without_a_descriptor(tmp_path):
    path = make(tmp_path, "qcow2", "3G")
    handle = io.BytesIO(path.read_bytes())
    handle.seek(7)
    report = introspect.inspect(handle)
    assert (report.format, report.virtual_size) == ("qcow2", 3 << 30)
    assert handle.tell() == 7


def test_a_failing_source_raises_instead_of_blaming_the_image(tmp_path):
    """EIO from a disk or a dropped connection says nothing of the image: the caller retries."""

    class Failing(introspect.ByteSource):
        name = "flaky"

        @property
        def size(self):
            return 1 << 20

        def pread(self, offset, length):
            if offset > 0:
                raise OSError(5, "Input/output error")
            return make(tmp_path, "qcow2", "1G").read_bytes()[:length]

    with pytest.raises(OSError, match="Input/output error"):
        introspect.inspect(Failing())


def test_a_source_error_inside_a_parser_is_not_the_images_fault(tmp_path):
    """A source that fails in the middle of a parse (a 503 from the server holding the image)."""
    data = make(tmp_path, "vhdx", "1G").read_bytes()

    class Unavailable(introspect.ByteSource):
        name = "remote"
        size = len(data)

        def pread(self, offset, length):
            if offset >= 64 * 1024 and offset != len(data) - 512:
                raise introspect.SourceError("503 Service Unavailable")
            return data[offset : offset + length]

    with pytest.raises(introspect.SourceError, match="503"):
        introspect.inspect(Unavailable())


def test_cross_check_needs_a_local_file(tmp_path):
    path = make(tmp_path, "qcow2", "1G")
    with path.open("rb") as handle:
        report = introspect.inspect(handle, cross_check=True)
    assert [(f.code, f.message) for f in report.findings] == [
        ("qemu.skipped", "not cross-checked: qemu-img is given local files only")
    ]


def test_a_partial_head_says_what_is_unknown():
    """A raw disk's size is its file's, which a head of its decompressed stream cannot know."""
    report = introspect.inspect(fixture_group("named") / "zeros-256m.raw.gz")
    (finding,) = report.findings
    assert finding.message == (
        f"only the first {4 << 20} decompressed bytes were read; facts that need the end of the image "
        "(a raw disk's size, a trailing footer) are unknown: decompress it to inspect it whole"
    )
    assert report.properties == {"disk_format": "raw", "introspect_container_format": "gzip"}


def test_the_declared_format_is_checked_inside_a_container():
    report = introspect.inspect(fixture_group("named") / "wrapped-1g3m.qcow2.gz", expect="raw")
    assert (report.format, report.container_format, report.verdict) == ("qcow2", "gzip", Verdict.REJECTED)
    assert [f.code for f in report.findings] == ["image.format_mismatch"]


def test_a_damaged_container_is_an_error_verdict_naming_it(tmp_path):
    wrapped = (fixture_group("named") / "wrapped-1g3m.qcow2.xz").read_bytes()
    cut = tmp_path / "cut.xz"
    cut.write_bytes(wrapped[: len(wrapped) // 2])
    report = introspect.inspect(cut)
    assert (report.format, report.container_format, report.verdict) == (None, "xz", Verdict.ERROR)
    assert [f.code for f in report.findings] == ["image.truncated"]


def test_a_container_this_installation_cannot_open(monkeypatch):
    monkeypatch.setattr(compressed, "_zstandard", lambda: None)
    report = introspect.inspect(fixture_group("named") / "wrapped-1g3m.qcow2.zst")
    assert (report.format, report.container_format, report.verdict) == (None, "zstd", Verdict.ERROR)
    assert [f.code for f in report.findings] == ["compressed.unsupported"]


def partitioned_images():
    group = fixture_group("partitioned")
    return sorted(
        p for p in group.iterdir() if p.suffix in {".vhd", ".vhdx", ".qcow2", ".vmdk", ".vdi", ".raw"}
    )


@pytest.mark.parametrize("image", partitioned_images(), ids=lambda p: p.name)
def test_a_partitioned_disk_in_any_container_is_one_thing(image):
    """A disk partitioned by sfdisk or sgdisk, converted by qemu-img into every format users upload:
    never a polyglot, whichever container holds the table (fixtures/make/partitioned.sh)."""
    report = introspect.inspect(image)
    info = qemu_info(image) if image.suffix != ".raw" else None
    assert "image.polyglot" not in [f.code for f in report.findings]
    assert report.verdict == Verdict.OK, report.findings
    if info is not None:
        assert report.virtual_size == info["virtual-size"]


def test_a_partition_table_is_content_only_where_the_format_says_its_disk_starts():
    """`Format.data_at_zero`: raw and ISO always, a VHD when its footer says fixed, nothing else."""
    always = sorted(f.name for f in every_format() if f.data_at_zero is True)
    decided = sorted(f.name for f in every_format() if callable(f.data_at_zero))
    assert (always, decided) == (["iso", "raw"], ["vhd"])


@pytest.mark.parametrize(
    ("declared", "group", "name", "text"),
    [
        ("vhd", "qcow", "base.qcow2", "set disk_format=qcow2, or convert with `qemu-img convert -O vpc`"),
        ("vpc", "qcow", "base.qcow2", "set disk_format=qcow2, or convert with `qemu-img convert -O vpc`"),
        ("ploop", "qcow", "base.qcow2", "or convert with `qemu-img convert -O parallels`"),
        ("iso", "qcow", "base.qcow2", "set disk_format=qcow2 (an ISO is made by a mastering tool"),
        (
            "raw",
            "qcow",
            "qed-base.qed",
            "Glance's default disk_formats have no qed; convert with `qemu-img convert -O raw`",
        ),
    ],
)
def test_mismatch_advice_names_what_qemu_img_and_glance_accept(declared, group, name, text):
    """Every fix-it hint names a real `qemu-img convert -O` format (vpc, parallels; never iso) and
    a disk_format Glance has; each -O name is one `qemu-img --help` lists as a format."""
    report = introspect.inspect(fixture_group(group) / name, expect=declared)
    (finding,) = [f for f in report.findings if f.code == "image.format_mismatch"]
    assert text in finding.message
    assert "-O iso" not in finding.message and "-O vhd`" not in finding.message
    listed = subprocess.run(["qemu-img", "--help"], capture_output=True, text=True, check=True).stdout
    formats = listed.split("Supported formats:", 1)[1].split()
    for written in inspector.QEMU_WRITES:
        assert written in formats


def test_a_luks_image_declared_raw_gets_advice_glance_can_follow():
    report = introspect.inspect(fixture_group("luks") / "cs-luks1.img", expect="raw")
    (finding,) = [f for f in report.findings if f.code == "image.format_mismatch"]
    assert (
        "keep disk_format=raw and give it the key Cinder needs (cinder_encryption_key_id)" in finding.message
    )
    assert "`cryptsetup open`" in finding.message


#: Tool-made images of every format that declares where its data must be, and cuts (bytes kept;
#: "half" of the file) that lose some of it: tables, blocks, grains, key material, volume space.
CUTS = [
    ("partitioned", "gpt.qcow2", (4096, "half")),
    ("qcow", "qed-base.qed", (4096, "half")),
    ("qcow", "qcow-1g3m.qcow", (4096,)),
    ("partitioned", "gpt-dynamic.vhd", (4096, "half")),
    ("partitioned", "gpt.vhdx", (4096, "half")),
    ("partitioned", "gpt.vdi", (4096, "half")),
    ("partitioned", "gpt.vmdk", (4096, "half")),
    ("partitioned", "gpt-stream.vmdk", (4096, 66048)),
    ("vmdk", "vmdkstream.vmdk", (4096, "half")),
    ("luks", "cs-luks1.img", (4096, 1 << 20)),
    ("luks", "cs-luks2.img", (4096, 1 << 20)),
    ("iso", "floppy.iso", (40 * 2048, "half")),
    ("parallels", "p-7m.hds", (4096, "half")),
]


@pytest.mark.parametrize(("group", "name", "cuts"), CUTS, ids=[c[1] for c in CUTS])
def test_a_cut_image_of_every_format_is_named_truncated(tmp_path, group, name, cuts):
    path = fixture_group(group) / name
    assert introspect.inspect(path).verdict == Verdict.OK
    with path.open("rb") as file:
        size = path.stat().st_size
        for cut in cuts:
            keep = size // 2 if cut == "half" else cut
            file.seek(0)
            target = tmp_path / f"{keep}-{name}"
            target.write_bytes(file.read(keep))
            report = introspect.inspect(target)
            assert report.format == path.suffix.lstrip(".").replace("hds", "ploop").replace("img", "luks"), (
                report
            )
            assert report.verdict in (Verdict.REJECTED, Verdict.ERROR), (keep, report.findings)
            assert "image.truncated" in [f.code for f in report.findings], (keep, report.findings)
            assert report.reads <= 8
