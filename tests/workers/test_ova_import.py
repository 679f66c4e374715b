"""`introspect import vm.ova`: the package is stored as it is, and the task inspects inside it (the
boot disk's format and size, the OVF's properties), in-process with the embedded deployment."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import introspect
from introspect.cli import main
from introspect.safety import Policy
from tests.conftest import fixture_group
from tests.workers.test_cli import catalog_of, cli, data_dir, ids_of

__all__ = ["data_dir"]  # the fixture, shared with test_cli


def test_an_imported_ova_is_inspected_inside(data_dir):
    ova = fixture_group("ova") / "vbox-sata.ova"
    result = cli("import", "--wait", str(ova))
    (image_id,) = ids_of(result)
    report = introspect.inspect(ova)
    assert (report.format, report.container_format) == ("vmdk", "ova")
    catalog = catalog_of(data_dir)
    assert catalog.effective(image_id) == report.properties
    assert catalog.effective(image_id)["hw_disk_bus"] == "sata"
    record = catalog.get(image_id)
    assert record.size == ova.stat().st_size
    assert (record.disk_format, record.virtual_size) == ("vmdk", report.virtual_size)
    assert record.container_format == "ova"  # adopted, as disk_format is: import declared neither


@pytest.mark.parametrize(
    ("group", "name", "word"),
    [("named", "wrapped-1g3m.qcow2.gz", "compressed"), ("qcow", "v3-1g3m.qcow2", "bare")],
)
def test_an_import_declares_glance_s_container_word_for_what_was_found(data_dir, group, name, word):
    """`gzip -c` of a qemu-img qcow2 is what Glance calls `compressed`; a qcow2 alone is `bare`."""
    path = fixture_group(group) / name
    assert (
        path.read_bytes()[:2] == b"\x1f\x8b" if word == "compressed" else path.read_bytes()[:4] == b"QFI\xfb"
    )
    (image_id,) = ids_of(cli("import", "--wait", str(path)))
    assert catalog_of(data_dir).get(image_id).container_format == word


def _members_as_tar_extracts_them(ova: Path) -> dict[int, dict[str, str]]:
    """Each file of the archive as GNU tar extracts it, hashed, by where its data starts."""
    with tarfile.open(ova) as archive:
        members = [member for member in archive.getmembers() if member.isfile()]
    found = {}
    for member in members:
        data = subprocess.run(["tar", "-xOf", str(ova), member.name], check=True, capture_output=True).stdout
        found[member.offset_data] = {
            name: hashlib.new(name, data).hexdigest() for name in ("sha1", "sha256", "sha512")
        }
    return found


@pytest.mark.parametrize(
    ("name", "status", "codes"),
    [("vbox-sata.ova", "active", []), ("manifest-mismatch.ova", "rejected", ["ova.manifest_mismatch"])],
)
def test_import_verifies_the_manifest_in_its_single_upload_pass(data_dir, caplog, name, status, codes):
    """The upload hashes each member as it passes; the task checks the manifest against those
    digests and reads no more than an inspection that does not verify it."""
    ova = fixture_group("ova") / name
    with caplog.at_level(logging.INFO, logger="workers.pipeline"):
        result = CliRunner().invoke(main, ["import", "--wait", str(ova)], catch_exceptions=False)
    assert result.exit_code == (0 if status == "active" else 1), result.output
    (image_id,) = ids_of(result)
    record = catalog_of(data_dir).get(image_id)
    assert record.status == status
    assert [f["code"] for f in record.findings or () if f["severity"] != "info"] == codes
    assert record.member_digests == _members_as_tar_extracts_them(ova)
    (inspected,) = [r for r in caplog.records if getattr(r, "image_id", None) == image_id]
    unverified, rereading = (
        introspect.inspect(ova),
        introspect.inspect(ova, policy=Policy(verify_manifest=True)),
    )
    assert inspected.bytes_read == unverified.bytes_read < rereading.bytes_read


def test_a_disk_image_uploads_without_member_digests(data_dir, tmp_path):
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(qcow2), "1G"], check=True, capture_output=True)
    (image_id,) = ids_of(cli("import", "--wait", str(qcow2)))
    assert catalog_of(data_dir).get(image_id).member_digests is None
