"""The format registry: one module and its line in `introspect.formats` are all a format needs;
everything else (the Report's details union, the names `expect` accepts, what satisfies a
declared format) is derived from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import typing

import pytest
from pydantic import BaseModel

import introspect
from introspect.formats import ALL, BY_NAME, PROBED
from introspect.report import Details, Report
from tests.conftest import FIXTURES

SIDECARS = (".json", ".txt", ".err", ".built", ".sh", ".py")


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_every_format_declares_its_details_and_properties(fmt):
    assert issubclass(fmt.details, BaseModel)
    assert fmt.details.model_fields["format"].default == fmt.name
    assert callable(fmt.properties)
    assert fmt.checks is not None or fmt.no_checks_because
    assert BY_NAME[fmt.name] is fmt


def test_the_details_union_is_exactly_the_registry():
    union, discriminator = typing.get_args(Details)
    assert set(typing.get_args(union)) == {f.details for f in ALL}
    assert discriminator.discriminator == "format"
    schema = Report.model_json_schema()
    mapping = schema["properties"]["details"]["anyOf"][0]["discriminator"]["mapping"]
    assert set(mapping) == set(BY_NAME)


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
    """Every tool-made fixture's Report, parsed back from its JSON, is the same Report: the details
    union from the registry validates every format's details (and every format has a fixture)."""
    seen = set()
    for path in sorted(p for p in FIXTURES.rglob("*") if p.is_file() and not p.name.endswith(SIDECARS)):
        report = introspect.inspect(path)
        assert Report.model_validate_json(report.model_dump_json()) == report, path
        if report.details is not None:
            seen.add(report.details.format)
    assert seen == set(BY_NAME)


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
    satisfies=frozenset({"raw"}),
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
    """Copy the package, add the module and the one registry entry (its import and its place in
    PROBED: the order decides only which of two claiming formats is parsed), and nothing else."""
    package = tmp_path / "introspect"
    shutil.copytree(introspect.__path__[0], package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "formats" / "toy.py").write_text(textwrap.dedent(TOY_MODULE))
    registry = package / "formats" / "__init__.py"
    text = registry.read_text()
    assert text.count("    vmdk,\n") == 1 and text.count("    dmg.FORMAT,\n") == 1
    registry.write_text(
        text.replace("    vmdk,\n", "    vmdk,\n    toy,\n").replace(
            "    dmg.FORMAT,\n", "    dmg.FORMAT,\n    toy.FORMAT,\n"
        )
    )
    result = subprocess.run(
        [sys.executable, "-c", TOY_CHECK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == "ok\n", result.stderr
    assert len(PROBED) + 1 == len(ALL)  # raw is the one format never probed
