"""The format registry: one module and its entry in `introspect.formats.REGISTERED` are all a
format needs; everything else (the Report's details, the names `expect` accepts, what satisfies a
declared format) is derived from it, and a format's module is imported only for a file that
carries one of its registered signatures, which are its module's own constants."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

import introspect
from introspect.formats import (
    BY_NAME,
    PROBED,
    RAW,
    REGISTERED,
    bochs,
    carried,
    cloop,
    dmg,
    every_format,
    iso,
    luks,
    parallels,
    qcow2,
    qed,
    vdi,
    vhd,
    vhdx,
    vmdk,
)
from introspect.formats.base import Head
from introspect.model import Frozen, Severity
from introspect.report import Report
from introspect.safety import Policy
from introspect.sources import HEAD_SIZE, TAIL_SIZE
from tests.conftest import FIXTURES, ROOT, fixture_group

SIDECARS = (".json", ".txt", ".err", ".built", ".sh", ".py")

#: Each format's signatures as its own module's constants and structures place them.
ISO_IDENTIFIER_AT = iso.VOLUME_DESCRIPTOR_SET_SECTOR * iso.SECTOR_SIZE + iso.VolumeDescriptor.offset_of(
    "standard_identifier"
)
OWN_SIGNATURES = {
    "qcow2": {(0, qcow2.QCOW_MAGIC)},
    "qcow": {(0, qcow2.QCOW_MAGIC)},
    "qed": {(0, qed.QED_MAGIC)},
    "vmdk": {(0, vmdk.MAGIC), (0, vmdk.COWD_MAGIC), *((0, first) for first in vmdk.DESCRIPTOR_FIRST_BYTES)},
    "vhdx": {(0, vhdx.FILE_TYPE_SIGNATURE)},
    "vhd": {
        (0, vhd.FOOTER_COOKIE),
        (-vhd.FOOTER_SIZE, vhd.FOOTER_COOKIE),
        (-vhd.OLD_FOOTER_SIZE, vhd.FOOTER_COOKIE),
    },
    "vdi": {(vdi.VdiPreHeader.offset_of("signature"), vdi.VDI_IMAGE_SIGNATURE.to_bytes(4, "little"))},
    "ploop": {(0, magic) for magic in parallels.SIGNATURES},
    "luks": {(0, luks.LUKS_MAGIC)},
    "bochs": {(0, bochs.HEADER_MAGIC + b"\0")},
    "cloop": {(0, cloop.VERSION_LINE.pattern.split(b"(")[0].replace(b"\\n", b"\n"))},
    "dmg": {(-dmg.KOLY_SIZE, dmg.KOLY_SIGNATURE)},
    "iso": {(ISO_IDENTIFIER_AT, iso.STANDARD_IDENTIFIER), (ISO_IDENTIFIER_AT, iso.UDF_BEGIN)},
    "raw": set(),
}


def _fixture_files():
    return sorted(p for p in FIXTURES.rglob("*") if p.is_file() and not p.name.endswith(SIDECARS))


def test_each_signature_is_its_module_s_own():
    assert {entry.name: set(entry.signatures) for entry in REGISTERED} == OWN_SIGNATURES
    assert {entry.name: entry.load().name for entry in REGISTERED} == {name: name for name in OWN_SIGNATURES}
    assert (*PROBED, RAW) == REGISTERED and not RAW.signatures


def test_no_probe_claims_a_file_its_signatures_do_not_start():
    """Every tool-made fixture's head and tail (hybrid ISOs, VMDK descriptors, fixed VHDs, DMGs...):
    whenever a format's probe claims it, one of its registered signatures is there, so the probe
    would have been asked."""
    claimed = set()
    for path in _fixture_files():
        with path.open("rb") as file:
            data = file.read(HEAD_SIZE)
            size = path.stat().st_size
            file.seek(max(0, size - TAIL_SIZE))
            head = Head(data, file.read(TAIL_SIZE), size)
        for entry in PROBED:
            if entry.load().probe(head):
                claimed.add(entry.name)
                assert entry.carried_by(head), (entry.name, path)
        assert carried(head) == {entry.name for entry in PROBED if entry.carried_by(head)}, path
    assert claimed == {entry.name for entry in PROBED}


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_signatures_found_by_first_byte_are_each_entry_s_own(start, tail):
    """`carried` (the signatures looked up by the head's first byte) against each entry's
    `carried_by`, over heads starting with or holding a signature, and tails ending with one."""
    for entry in PROBED:
        for offset, magic in entry.signatures:
            data = (start + bytes(max(0, offset)))[: max(0, offset)] + magic + start if offset >= 0 else start
            end = tail + magic + bytes(-offset - len(magic)) if offset < 0 else tail
            head = Head(data, end, len(data))
            assert carried(head) == {e.name for e in PROBED if e.carried_by(head)}


@pytest.mark.parametrize("fmt", every_format(), ids=lambda f: f.name)
def test_every_format_declares_its_details_and_properties(fmt):
    assert issubclass(fmt.details, BaseModel)
    assert fmt.details.model_fields["format"].default == fmt.name
    assert callable(fmt.properties)
    assert fmt.checks is not None or fmt.no_checks_because
    assert BY_NAME[fmt.name].load() is fmt


def test_the_details_schema_is_exactly_the_registry():
    schema = Report.model_json_schema()
    union = schema["properties"]["details"]["anyOf"][0]
    assert union["discriminator"]["propertyName"] == "format"
    assert set(union["discriminator"]["mapping"]) == set(BY_NAME)
    assert {ref["$ref"] for ref in union["oneOf"]} == {
        f"#/$defs/{f.details.__name__}" for f in every_format()
    }


def test_details_are_validated_by_the_model_of_the_format_they_name(tmp_path):
    path = tmp_path / "disk.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", str(path), "64M"], check=True)
    report = introspect.inspect(path)
    data = report.model_dump(mode="json")
    assert type(Report.model_validate(data).details) is type(report.details)
    with pytest.raises(ValueError, match="details of an unknown format 'vhdz'"):
        Report.model_validate({**data, "details": {**data["details"], "format": "vhdz"}})
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Report.model_validate({**data, "details": {**data["details"], "surprise": 1}})
    with pytest.raises(ValueError, match="details are an object with a `format` field"):
        Report.model_validate({**data, "details": ["vhd"]})


@pytest.mark.parametrize(
    ("image", "formats"),
    [
        # qcow2 reads qcow's shared header; the block maps serve every format's guest view
        ("one.qcow2", ["blockmap", "partitions", "qcow", "qcow2"]),
        ("one.vhd", ["blockmap", "partitions", "raw", "vhd"]),  # a fixed VHD's disk is read as raw is
        ("one.raw", ["partitions", "raw"]),
    ],
)
def test_an_image_imports_the_modules_of_its_format_only(tmp_path, image, formats):
    """qemu-img's image, inspected in a new process: of the format and container modules, those
    of its format and the helpers it reads with (partition tables, block maps), the Format and
    Container types: no other format's or container's."""
    path = tmp_path / image
    fmt = {"vhd": "vpc"}.get(path.suffix[1:], path.suffix[1:])
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "64M"], check=True)
    code = f"""
import sys
import introspect
report = introspect.inspect({str(path)!r})
print(report.format, report.verdict)
print(" ".join(sorted(m.split(".", 1)[1] for m in sys.modules if m.startswith(("introspect.formats.", "introspect.containers.")))))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    found, modules = result.stdout.splitlines()
    assert found == f"{path.suffix[1:]} ok"
    helpers = ["containers.base", "formats.base"]  # the Container and Format types
    assert modules.split() == sorted([*helpers, *(f"formats.{name}" for name in formats)])


def test_threads_inspecting_at_once_each_load_their_format_whole(tmp_path):
    """The first inspections of a process, in threads at once (as Glance's import plugin runs in
    its API's threads): each format's and container's module is imported by one of them while the
    others wait for it, and none sees a module whose body has not run yet (a lookup in sys.modules
    would: "partially initialized module ... has no attribute 'FORMAT'")."""
    made = []
    for fmt, suffix in (("qcow2", "qcow2"), ("vpc", "vhd"), ("vhdx", "vhdx"), ("vdi", "vdi"), ("qed", "qed")):
        for copy in range(3):
            path = tmp_path / f"{copy}.{suffix}"
            subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "64M"], check=True)
            made.append(str(path))
    for copy in range(3):  # and a container's module: gzip's
        subprocess.run(["gzip", "-k", f"{copy}.qcow2"], cwd=tmp_path, check=True)
        made.append(str(tmp_path / f"{copy}.qcow2.gz"))
    code = f"""
import threading
import introspect
paths = {made!r}
barrier = threading.Barrier(len(paths))
found = {{}}
def run(path):
    barrier.wait()
    found[path] = introspect.inspect(path, guest=False)
threads = [threading.Thread(target=run, args=(path,)) for path in paths]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(" ".join(f"{{found[p].format}}:{{found[p].verdict}}" for p in paths))
"""
    for _ in range(3):  # fresh processes: the race is on the first import
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0 and not result.stderr, result.stderr
        expected = [f"{Path(path.removesuffix('.gz')).suffix[1:]}:ok" for path in made]
        assert result.stdout.split() == expected


def test_a_declared_model_must_carry_the_format_name():
    class Misnamed(BaseModel):
        format: typing.Literal["other"] = "other"

    with pytest.raises(ValueError, match=r'needs a field `format: Literal\["toy"\] = "toy"`'):
        introspect.formats.base.Format(
            name="toy",
            qemu_name=None,
            probe=lambda head: False,
            inspect=lambda reader, policy: None,
            checks=None,
            no_checks_because="a test",
            details=Misnamed,
            properties=lambda details: {},
        )


def test_every_report_round_trips_through_json():
    """Every tool-made fixture's Report, parsed back from its JSON, is the same Report: each format's
    details are validated by its own model (and every format has a fixture)."""
    seen = set()
    for path in _fixture_files():
        report = introspect.inspect(path)
        assert Report.model_validate_json(report.model_dump_json()) == report, path
        if report.details is not None:
            seen.add(report.details.format)
    assert seen == set(BY_NAME)


def test_an_output_model_is_built_as_model_construct_builds_it():
    """Output models (`Frozen`: the Report, details, findings) are built unvalidated, as
    `model_construct` builds them: the same fields in order, defaults, fields set and JSON, and a
    fresh default list each time; a required field missing or an unknown one is an error, not a
    half-made model."""
    report = introspect.inspect(fixture_group("qcow") / "v3-7m.qcow2", guest=False)
    given = {name: getattr(report, name) for name in report.model_fields_set}
    made, constructed = Report(**given), Report.model_construct(set(given), **given)
    assert made == constructed == report
    assert made.__dict__ == constructed.__dict__ and list(made.__dict__) == list(Report.model_fields)
    assert made.model_fields_set == constructed.model_fields_set == set(given)
    assert made.model_dump_json() == constructed.model_dump_json() == report.model_dump_json()
    assert made.members is not Report(**given).members
    with pytest.raises(TypeError, match=r"Report: missing \['verdict'\], unknown \[\]"):
        Report(**{name: value for name, value in given.items() if name != "verdict"})
    with pytest.raises(TypeError, match=r"Report: missing \[\], unknown \['verdicts'\]"):
        Report(**given, verdicts="ok")


def test_a_mutable_default_is_a_copy_for_each_model_as_pydantic_makes_it():
    class Listed(Frozen):
        names: list[str] = ["a"]  # noqa: RUF012  (pydantic copies it; so must Frozen's constructor)
        mapped: dict[str, int] = Field(default_factory=dict)

    first, second = Listed(), Listed()
    first.names.append("b")
    first.mapped["b"] = 1
    assert second.names == ["a"] and second.mapped == {} and Listed.model_construct().names == ["a"]


def test_a_policy_written_in_code_is_validated():
    """Policy is an operator's input, not an output model: its constructor validates."""
    assert Policy(severity={"image.empty": "warn"}).severity == {"image.empty": Severity.WARN}
    with pytest.raises(ValidationError):
        Policy(max_virtual_size="a lot")
    with pytest.raises(ValidationError):
        Policy(severities={})


@pytest.mark.parametrize(
    ("declared", "found", "ok"),
    [
        ("raw", "raw", True),
        ("raw", "iso", True),
        ("iso", "raw", False),
        ("qcow2", "raw", False),
        ("raw", "qcow2", False),
        ("vpc", "vhd", True),
        ("VHD", "vpc", True),
        ("parallels", "ploop", True),
        ("vhd", "vhdx", False),
    ],
)
def test_satisfies(declared, found, ok):
    assert introspect.satisfies(declared, found) is ok


#: A whole new format, as a newcomer writes it: its module...
TOY_MODULE = '''
"""Toy: an 8-byte magic, then a little-endian 64-bit disk size."""

from __future__ import annotations

from typing import ClassVar, Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.properties import header_properties
from introspect.safety import Policy
from introspect.sources import Reader
from introspect.structure import LittleEndianStructure, chars, u64

MAGIC = b"TOYDISK1"


class ToyHeader(LittleEndianStructure):
    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(8)
    disk_size: int = u64()


class ToyDetails(Frozen):
    format: Literal["toy"] = "toy"
    disk_size: int


def probe(head: Head) -> bool:
    return head.data.startswith(MAGIC)


def inspect(reader: Reader, policy: Policy) -> Inspection[ToyDetails]:
    size = ToyHeader.read(reader, "toy header").disk_size
    return Inspection(ToyDetails(disk_size=size), size)


def properties(details: ToyDetails) -> dict[str, str]:
    return header_properties(version=1)


FORMAT = Format(
    name="toy",
    qemu_name=None,
    probe=probe,
    inspect=inspect,
    checks=None,
    no_checks_because="a toy names no other file",
    details=ToyDetails,
    properties=properties,
)
'''
#: ...and what it reports, through the same inspect() as every format.
TOY_CHECK = """
import introspect, struct
from introspect.report import Report
path = "disk.toy"
open(path, "wb").write(struct.pack("<8s Q", b"TOYDISK1", 1 << 30) + bytes(4096))
report = introspect.inspect(path, expect="raw")
assert (report.format, report.verdict, report.virtual_size) == ("toy", "ok", 1 << 30), report
assert report.properties == {"disk_format": "toy", "introspect_format_version": "1"}
assert type(report.details).__name__ == "ToyDetails"
assert Report.model_validate_json(report.model_dump_json()) == report
print("ok")
"""


def test_a_new_format_is_one_module_and_its_registry_line(tmp_path):
    """Copy the package, add the module and its one registry entry (its place in the probe order,
    which decides only which of two claiming formats is parsed; its signature; what it satisfies),
    and nothing else."""
    package = tmp_path / "introspect"
    shutil.copytree(introspect.__path__[0], package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "formats" / "toy.py").write_text(textwrap.dedent(TOY_MODULE))
    registry = package / "formats" / "__init__.py"
    text = registry.read_text()
    line = '    Registered("dmg", "dmg", ((-512, b"koly"),)),\n'
    assert text.count(line) == 1
    toy = '    Registered("toy", "toy", ((0, b"TOYDISK1"),), satisfies=frozenset({"raw"})),\n'
    registry.write_text(text.replace(line, line + toy))
    result = subprocess.run(
        [sys.executable, "-c", TOY_CHECK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == "ok\n", result.stderr
