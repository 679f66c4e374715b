"""The container hook: every wrapper through one path in inspect(), nested at most
MAX_CONTAINER_DEPTH deep, and a new container (an OVA-like tar, here) plugged in by its
declaration alone, its member read in place as a slice of the source."""

from __future__ import annotations

import gzip
import subprocess
import sys
import types

import pytest

import introspect
from introspect import containers
from introspect.containers import (
    MAX_CONTAINER_DEPTH,
    Container,
    Member,
    ReaderSource,
    Unpacked,
    compressed,
    ova,
)
from introspect.model import Severity, Verdict
from introspect.sources import HEAD_SIZE, BytesSource, Reader, SliceSource
from tests.conftest import FIXTURES, fixture_group


def qcow2(tmp_path, size="1G"):
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def wrap(path, *tools):
    """`tool -c` over the file, once per tool, innermost first: disk.qcow2.gz.xz..."""
    for tool in tools:
        wrapped = path.with_name(f"{path.name}.{tool}")
        with wrapped.open("wb") as out:
            subprocess.run([tool, "-c", str(path)], stdout=out, check=True)
        path = wrapped
    return path


def test_the_registry_names_each_container_once():
    assert [c.name for c in containers.CONTAINERS] == ["gzip", "xz", "zstd", "bz2", "ova", "tar", "ovf"]
    assert set(containers.BY_NAME) == {c.name for c in containers.CONTAINERS}
    assert all(entry.load().name == name for name, entry in containers.BY_NAME.items())


def test_each_signature_is_its_module_s_own():
    """What each registered pattern matches is its module's own magic, where its sniff looks."""
    own = {
        "gzip": bytes((compressed.GZIP_ID1, compressed.GZIP_ID2)),
        "xz": compressed.XZ_MAGIC,
        "zstd": compressed.ZSTD_MAGIC,
        "bz2": compressed.BZIP2_MAGIC,
        "ova": bytes(ova.TarHeader.offset_of("magic")) + ova.USTAR,
        "tar": bytes(ova.TarHeader.offset_of("magic")) + ova.USTAR,
    }
    for name, magic in own.items():
        entry = containers.BY_NAME[name]
        assert entry.carried_by(magic) and not entry.carried_by(magic[:-1]), name
    assert containers.BY_NAME["ovf"].carried_by(b'\xef\xbb\xbf <?xml version="1.0"?>')
    for magic in [*own.values(), b'\xef\xbb\xbf <?xml version="1.0"?>']:
        assert containers._ANY.match(magic) and not containers._ANY.match(b"\0" + magic)


def test_no_sniff_claims_a_head_its_signature_does_not_start():
    """Every tool-made fixture's head: whenever a container's sniff claims it, its registered
    signature is there, so the sniff would have been asked."""
    claimed = set()
    for path in sorted(p for p in FIXTURES.rglob("*") if p.is_file()):
        with path.open("rb") as file:
            head = file.read(HEAD_SIZE)
        for entry in containers.CONTAINERS:
            if entry.load().sniff(head):
                claimed.add(entry.name)
                assert entry.carried_by(head), (entry.name, path)
        # The one pattern sniff_all turns heads away with says what the containers' own would.
        carried = [entry.name for entry in containers.CONTAINERS if entry.carried_by(head)]
        assert (containers._ANY.match(head) is not None) == bool(carried), path
    assert claimed == set(containers.BY_NAME)


@pytest.mark.parametrize(("suffix", "name"), [("gz", "gzip"), ("xz", "xz"), ("zst", "zstd"), ("bz2", "bz2")])
def test_sniff_names_the_container_tools_made(suffix, name):
    head = (fixture_group("named") / f"wrapped-1g3m.qcow2.{suffix}").read_bytes()[:HEAD_SIZE]
    assert containers.sniff(head) is containers.BY_NAME[name].load()
    assert containers.sniff((fixture_group("named") / "wrapped-1g3m.qcow2").read_bytes()[:HEAD_SIZE]) is None


def test_containers_inside_containers_are_opened_in_turn(tmp_path):
    """xz inside gzip: the outer one is the container_format (what the upload was declared as)."""
    report = introspect.inspect(wrap(qcow2(tmp_path), "xz", "gzip"))
    assert (report.format, report.container_format, report.verdict) == ("qcow2", "gzip", Verdict.OK)
    assert report.virtual_size == 1 << 30
    assert report.properties["introspect_container_format"] == "gzip"


def test_nesting_is_opened_up_to_the_cap(tmp_path):
    report = introspect.inspect(wrap(qcow2(tmp_path), *["gzip"] * MAX_CONTAINER_DEPTH))
    assert (report.format, report.verdict, report.findings) == ("qcow2", Verdict.OK, [])


def test_nesting_past_the_cap_is_a_finding(tmp_path):
    report = introspect.inspect(wrap(qcow2(tmp_path), *["gzip"] * (MAX_CONTAINER_DEPTH + 1)))
    assert (report.format, report.container_format, report.verdict) == (None, "gzip", Verdict.ERROR)
    assert [(f.code, f.severity) for f in report.findings] == [("container.depth", Severity.REJECT)]
    assert report.findings[0].message == (
        f"a gzip container inside {MAX_CONTAINER_DEPTH} others: introspect opens containers at most "
        f"{MAX_CONTAINER_DEPTH} deep; unwrap the image and upload the image itself"
    )
    assert report.properties == {}


def test_a_thousand_wrappers_are_a_finding_not_a_recursion_error(tmp_path):
    data = qcow2(tmp_path).read_bytes()
    for _ in range(1000):
        data = gzip.compress(data, compresslevel=1)
    report = introspect.inspect(introspect.BytesSource(data, "nested.gz"))
    assert [f.code for f in report.findings] == ["container.depth"]
    assert report.verdict == Verdict.ERROR


# --- A container plugged in by its declaration alone ------------------------------------------

#: POSIX ustar (IEEE 1003.1-1988): 512-byte headers; name at 0 (100 bytes), size at 124 (12 octal
#: digits), magic "ustar" at 257; the member's data follows its header.
TAR_BLOCK = 512


def _sniff_tar(head: bytes) -> bool:
    return head[257:262] == b"ustar"


def _open_tar(reader: Reader, policy: introspect.Policy) -> Unpacked:
    header = reader.read(0, TAR_BLOCK, "tar header")
    name = header[:100].rstrip(b"\0").decode()
    size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
    source = SliceSource(ReaderSource(reader, "tar member"), TAR_BLOCK, size, name)
    return Unpacked(members=(Member(name, source, complete=TAR_BLOCK + size <= reader.size),), boot=0)


def _never_partial(member: Member, needed: str | None) -> introspect.Finding:
    raise AssertionError("a tar member's end is known")


TAR = Container(name="ova", sniff=_sniff_tar, open=_open_tar, partial=_never_partial)


def test_a_new_container_is_its_declaration_and_its_registry_line(tmp_path, monkeypatch):
    disk = qcow2(tmp_path, "3G")
    archive = tmp_path / "appliance.ova"
    subprocess.run(["tar", "--format=ustar", "-cf", str(archive), "-C", str(tmp_path), disk.name], check=True)
    # Its module, and its entry ahead of the registry's own OVA container, which would claim the
    # tar (and find no OVF in it).
    module = types.ModuleType("introspect.containers.toy_tar")
    module.TAR = TAR
    monkeypatch.setitem(sys.modules, module.__name__, module)
    entry = containers.Registered("ova", "toy_tar", "TAR", containers.USTAR_SIGNATURE)
    monkeypatch.setattr(containers, "CONTAINERS", (entry, *containers.CONTAINERS))
    report = introspect.inspect(archive)
    plain = introspect.inspect(disk)
    assert (report.format, report.container_format, report.verdict) == ("qcow2", "ova", Verdict.OK)
    assert report.virtual_size == plain.virtual_size == 3 << 30
    assert report.details == plain.details
    assert report.properties == {**plain.properties, "introspect_container_format": "ova"}
    # The member is read in place through the archive's metered reader: its reads are counted.
    assert report.reads > plain.reads
    assert report.size == archive.stat().st_size


def test_a_reader_source_meters_the_slices_cut_from_it():
    data = bytes(range(256)) * 16
    reader = Reader(BytesSource(data))
    member = SliceSource(ReaderSource(reader, "member"), 1000, 100, "m")
    assert member.size == 100
    assert member.pread(90, 20) == data[1090:1100]
    assert (reader.reads, reader.bytes_read) == (1, 10)
