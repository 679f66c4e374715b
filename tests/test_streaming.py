"""Images read once from a stream (`introspect inspect -`): OVAs stream natively, head-and-tail
formats from bounded windows, and a read of bytes the stream passed is `stream.partial`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import introspect
from introspect.containers import ova
from introspect.model import Severity, Verdict
from introspect.safety import Policy
from introspect.sources import HEAD_SIZE, TAIL_SIZE, FileSource
from introspect.streaming import MEMBER_HEAD, MEMBER_TAIL, DigestedSource, StreamSource
from tests.conftest import fixture_group

ROOT = Path(__file__).resolve().parent.parent
#: Small enough to stream in a test (the 1 TiB raw members are sparse files, not streams).
STREAMED = sorted(
    p.name
    for p in fixture_group("ova").iterdir()
    if p.name.endswith((".ova", ".ovf", ".tar", ".tar.gz")) and p.stat().st_size < 300 << 20
)


def streamed(path: Path, **keep: int) -> introspect.Report:
    with path.open("rb") as stream:
        return introspect.inspect(StreamSource(stream, path.name, **keep))


#: The least a stream may keep: the head every probe reads, the last sector. What an OVA needs
#: beyond them comes from the tar headers watched as they pass.
LEAST = {"keep_head": HEAD_SIZE, "keep_tail": TAIL_SIZE}


@pytest.mark.parametrize("keep", [{}, LEAST], ids=["default", "least"])
@pytest.mark.parametrize("name", STREAMED)
def test_an_ova_streams_natively(name, keep):
    path = fixture_group("ova") / name
    file, stream = introspect.inspect(path), streamed(path, **keep)
    assert (stream.format, stream.container_format, stream.virtual_size, stream.verdict) == (
        file.format,
        file.container_format,
        file.virtual_size,
        file.verdict,
    )
    # The same header facts; the guest's bytes went by with the stream (said once, as guest.partial).
    assert [f.code for f in stream.findings if not f.code.startswith("guest.")] == [
        f.code for f in file.findings if not f.code.startswith("guest.")
    ]
    assert [f.code for f in stream.findings if f.code.startswith("guest.")] in ([], ["guest.partial"])
    assert stream.properties == file.properties
    assert [m.virtual_size for m in stream.members] == [m.virtual_size for m in file.members]


def test_memory_is_bounded_whatever_the_stream(tmp_path):
    """A 1 TiB streamOptimized disk's OVA (134 MB of grain tables): the windows kept stay small."""
    path = fixture_group("ova") / "stream-1t.ova"
    with path.open("rb") as stream:
        source = StreamSource(stream, path.name, **LEAST)
    kept = sum(len(w.data) for w in source._windows)
    assert source.size == path.stat().st_size
    assert kept <= HEAD_SIZE + TAIL_SIZE + 2 * (MEMBER_HEAD + MEMBER_TAIL) + 4 * ova.BLOCK + 8192
    assert introspect.inspect(source).virtual_size == 1 << 40


@pytest.mark.parametrize(("name", "verified"), [("vbox-sata.ova", True), ("manifest-mismatch.ova", False)])
def test_the_manifest_is_verified_in_the_same_single_pass(name, verified):
    """Each member hashed as it streams by: the verification reads nothing more."""
    path = fixture_group("ova") / name
    with path.open("rb") as stream:
        source = StreamSource(stream, path.name, digests=True, **LEAST)
    report = introspect.inspect(source, policy=Policy(verify_manifest=True))
    assert report.container.manifest.verified is verified
    informed = [f.code for f in report.findings if f.severity != Severity.INFO]
    assert informed == ([] if verified else ["ova.manifest_mismatch"])
    with path.open("rb") as stream:
        unverified = introspect.inspect(StreamSource(stream, path.name, **LEAST))
    assert report.bytes_read == unverified.bytes_read


def test_a_head_and_tail_format_streams_from_its_windows():
    """A fixed VHD's footer is its last sector: the kept tail holds it."""
    path = fixture_group("vhd") / "fixed-129M+3.vhd"
    file, stream = introspect.inspect(path), streamed(path)
    assert (stream.format, stream.virtual_size, stream.verdict) == (
        file.format,
        file.virtual_size,
        file.verdict,
    )
    assert stream.format == "vhd"


def test_bytes_the_stream_passed_make_the_report_partial():
    """A VHDX whose log lies past the kept head: its facts are partial, and the Report says so."""
    path = fixture_group("vhd") / "log-2M-129M.vhdx"
    report = streamed(path)
    assert report.verdict == Verdict.ERROR
    assert [f.code for f in report.findings] == ["stream.partial"]
    assert report.findings[0].message.startswith("bytes ")
    assert "were passed and not kept" in report.findings[0].message
    assert introspect.inspect(path).verdict == Verdict.OK


def _inspect_stdin(path: Path, *args: str) -> str:
    """`introspect inspect ARGS -` with the file on standard input: its stdout."""
    with path.open("rb") as stdin:
        result = subprocess.run(
            [sys.executable, "-c", "from introspect.cli import main; main()", "inspect", *args, "-"],
            stdin=stdin,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_cli_reads_standard_input_once():
    report = json.loads(_inspect_stdin(fixture_group("ova") / "vbox-sata.ova", "--json"))
    assert (report["source"], report["format"], report["container_format"]) == ("<stdin>", "vmdk", "ova")
    assert report["properties"]["hw_disk_bus"] == "sata"


def test_the_cli_table_names_standard_input_whole():
    """The row's image column is as wide as `<stdin>`, the name it shows, not as `-`."""
    header, row = _inspect_stdin(fixture_group("ova") / "vbox-sata.ova").splitlines()
    assert header.split()[:2] == ["image", "format"]
    assert row.split()[:2] == ["<stdin>", "vmdk"]


def _member_hashes(path: Path) -> dict[int, dict[str, str]]:
    """Each file member as GNU tar extracts it, hashed, by where its data starts (tarfile's word)."""
    with tarfile.open(path) as archive:
        members = [member for member in archive.getmembers() if member.isfile()]
    return {
        member.offset_data: {
            name: hashlib.new(
                name,
                subprocess.run(
                    ["tar", "-xOf", str(path), member.name], check=True, capture_output=True
                ).stdout,
            ).hexdigest()
            for name in ("sha1", "sha256", "sha512")
        }
        for member in members
    }


@pytest.mark.parametrize("chunk", [100, 511, 512, 65536 + 3])
@pytest.mark.parametrize("name", ["vbox-sata.ova", "vmware-pvscsi-pax.ova", "long-name-gnu.ova"])
def test_a_fed_stream_hashes_each_member_as_tar_extracts_it(name, chunk):
    """Bytes given in any pieces (an upload's chunks): the digests of every member, whole."""
    path = fixture_group("ova") / name
    data = path.read_bytes()
    source = StreamSource.fed(path.name, digests=True, keep_head=0, keep_tail=0)
    for start in range(0, len(data), chunk):
        source.feed(data[start : start + chunk])
    source.finish()
    assert source.size == len(data)
    assert source.member_digests() == _member_hashes(path)


@pytest.mark.parametrize(("name", "verified"), [("vbox-sata.ova", True), ("manifest-mismatch.ova", False)])
def test_digests_kept_from_an_earlier_pass_verify_the_manifest_reading_nothing_more(name, verified):
    """What a catalog keeps from an upload: the file inspected later checks its manifest against it."""
    path = fixture_group("ova") / name
    source = StreamSource.fed(path.name, digests=True)
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            source.feed(chunk)
    source.finish()
    with FileSource(path) as file:
        report = introspect.inspect(
            DigestedSource(file, source.member_digests()), policy=Policy(verify_manifest=True)
        )
    assert report.container.manifest.verified is verified
    assert [f.code for f in report.findings if f.severity != Severity.INFO] == (
        [] if verified else ["ova.manifest_mismatch"]
    )
    assert report.bytes_read == introspect.inspect(path).bytes_read


def test_a_stream_shorter_than_a_tar_block_is_kept_whole():
    source = StreamSource.fed("tiny")
    source.feed(b"QFI")
    source.feed(b"\xfb")
    source.finish()
    assert (source.size, source.pread(0, 8)) == (4, b"QFI\xfb")
