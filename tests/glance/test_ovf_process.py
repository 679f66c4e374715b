"""What Glance's own OVA handling (`glance.async_.flows.ovf_process`, Glance 33.0.0, run by
tests/glance/peer/ovf_process.py in Glance's venv) does with the OVA fixtures, beside introspect on
the same files: each fact the README's comparison states, from what Glance's code did here."""

from __future__ import annotations

import json
import subprocess
import tarfile
from typing import Any

import pytest

import introspect
from introspect.model import Verdict
from introspect.safety import Policy
from tests.conftest import fixture_group
from tests.glance.peer import ROOT, build_venv

pytestmark = pytest.mark.glance

#: Packages small enough to copy out whole in a test (Glance copies every byte of the disk).
LARGEST = 64 << 20
#: The packages as exporters write them (fixtures/make/ova.sh): one disk each.
EXPORTED = ("vmware-pvscsi.ova", "vmware-lsisas.ova", "vbox-sata.ova", "stream-1g.ova")
#: Packages holding several disks.
SEVERAL_DISKS = ("nvme.ova", "collection.ova", "backed-member.ova")
#: What introspect refuses (HOSTILE.json's codes) and Glance's extractor hands to the store.
EXTRACTED_HOSTILE = (
    "abs-path.ova",  # ova.path
    "climbing.ova",  # ova.path
    "device.ova",  # ova.link
    "hardlink.ova",  # ova.link: tarfile follows the link inside the archive
    "duplicate.ova",  # ova.duplicate: the last of the two entries
    "missing-file.ova",  # ova.missing_file
    "qcow2-polyglot.ova",  # image.polyglot
    "manifest-mismatch.ova",  # ova.manifest_mismatch: no manifest is read
    "big-ovf.ova",  # ova.ovf_size: the whole descriptor is parsed
    "flat-extent.ova",  # ova.extent_member: the descriptor's 355 bytes become the image
    "flat-extent-missing.ova",  # ova.extent_missing: the same
    "many-entries.ova",  # ova.entries
)


@pytest.fixture(scope="module")
def glance_says() -> dict[str, dict[str, Any]]:
    """Glance's outcome for every OVA fixture up to LARGEST bytes, by file name."""
    paths = [str(p) for p in sorted(fixture_group("ova").glob("*.ova")) if p.stat().st_size <= LARGEST]
    result = subprocess.run(
        [build_venv() / "bin" / "python", "-m", "tests.glance.peer.ovf_process", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(said) == len(paths)
    return {entry["ova"]: entry for entry in said}


def inspect(name: str) -> introspect.Report:
    return introspect.inspect(fixture_group("ova") / name, policy=Policy(verify_manifest=True), guest=False)


def disk_files(name: str) -> list[tarfile.TarInfo]:
    """The package's disks as Python's tarfile lists them (every file but the descriptor,
    manifest and certificate)."""
    with tarfile.open(fixture_group("ova") / name) as archive:
        return [
            m for m in archive.getmembers() if m.isfile() and not m.name.endswith((".ovf", ".mf", ".cert"))
        ]


@pytest.mark.parametrize("name", EXPORTED)
def test_glance_copies_the_disk_and_states_none_of_the_ovf_facts(glance_says, name):
    """Glance reads only CIM_ProcessorAllocationSettingData elements, which none of these exports
    holds: no guest OS, controller, NIC or firmware, all of which introspect writes."""
    said = glance_says[name]
    (disk,) = disk_files(name)
    assert (said["outcome"], said["bytes"], said["properties"]) == ("extracted", disk.size, {})
    report = inspect(name)
    assert report.verdict == Verdict.OK
    assert {"hw_disk_bus", "introspect_ovf_vcpus", "introspect_ovf_memory_mib"} <= set(report.properties)


@pytest.mark.parametrize("name", SEVERAL_DISKS)
def test_glance_refuses_several_disks_where_introspect_reads_each(glance_says, name):
    assert glance_says[name]["outcome"] == "refused"
    assert glance_says[name]["error"] == (
        "RuntimeError: Currently, OVA packages containing multiple disk are not supported."
    )
    assert len(inspect(name).members) == len(disk_files(name))


def test_glance_fails_on_vmware_s_ovf_0_9(glance_says):
    """OVF 0.9's DiskSection is a generic `Section` (xsi:type), so Glance finds no disk name and
    fails on it; introspect reads the package."""
    assert glance_says["v09.ova"]["outcome"] == "refused"
    assert glance_says["v09.ova"]["error"].startswith("AttributeError: ")
    assert inspect("v09.ova").verdict == Verdict.OK


@pytest.mark.parametrize("name", EXTRACTED_HOSTILE)
def test_glance_extracts_what_introspect_rejects(glance_says, name):
    assert glance_says[name]["outcome"] == "extracted"
    assert inspect(name).verdict != Verdict.OK


def test_every_package_glance_refuses_introspect_names(glance_says):
    """Where Glance's import fails (with whatever its code raised), introspect's Report says why
    in a finding; none is a package introspect calls ok but for the Glance gaps above."""
    refused = {name for name, said in glance_says.items() if said["outcome"] == "refused"}
    gaps = {*SEVERAL_DISKS, "v09.ova"}
    assert refused - gaps  # the broken tars and descriptors, XML with entities, a link to /etc/shadow
    for name in refused - gaps:
        report = inspect(name)
        assert report.verdict != Verdict.OK and report.findings, name
