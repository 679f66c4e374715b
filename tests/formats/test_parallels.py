"""Parallels/ploop images written by qemu-img (fixtures/make/parallels.sh), judged against qemu-img.

Hostile variants are made in tmp_path from a real fixture, changing one header field with the
module's own structure declaration; where qemu's opinion matters, the real qemu-img reads them too.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import introspect
from introspect.formats import parallels
from introspect.sources import HEAD_SIZE, TAIL_SIZE
from tests.conftest import fixture_group
from tests.tools import qemu_info, rewrite

KIB = 1024
MIB = 1024 * KIB
#: image -> the cluster size parallels.sh asked qemu-img for (1 MiB is qemu's default)
IMAGES = {
    "p-7m.hds": MIB,
    "p-1g3m.hds": MIB,
    "p-odd.hds": MIB,
    "p-129m-64k.hds": 64 * KIB,
    "p-1g3m-256k.hds": 256 * KIB,
    "p-1t.hds": MIB,
    "data.hds": MIB,
}


@pytest.fixture(scope="module")
def group():
    return fixture_group("parallels")


def _qemu_live(image):
    """What the real qemu-img says about an image made in the test: (info, error text)."""
    done = subprocess.run(
        ["qemu-img", "info", "-f", "parallels", "--output=json", str(image)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return (json.loads(done.stdout) if done.returncode == 0 else None), done.stderr


def _qemu_check(image):
    """`qemu-img check`: (exit status, what it printed). qemu 7.2 opens an image whose BAT points
    past the end of the file (later releases refuse it), but check reports the corruption."""
    done = subprocess.run(
        ["qemu-img", "check", "-f", "parallels", str(image)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _patched(group, tmp_path, name="p-7m.hds", **changes):
    """A copy of a fixture with header fields changed."""
    image = tmp_path / name
    shutil.copyfile(group / name, image)
    data = bytearray(image.read_bytes())
    header = parallels.ParallelsHeader.unpack(data)
    rewrite(data, parallels.ParallelsHeader, **changes)
    image.write_bytes(bytes(data))
    return image, header


@pytest.mark.parametrize(("name", "cluster_size"), IMAGES.items())
def test_matches_qemu(group, name, cluster_size):
    image = group / name
    report = introspect.inspect(image)
    info = qemu_info(image)
    assert info["format"] == "parallels"
    assert report.format == "ploop"
    assert report.verdict == "ok", report.findings
    assert report.findings == []
    assert report.virtual_size == info["virtual-size"]
    details = report.details
    assert details.signature_variant == "WithouFreSpacExt"  # the only one qemu-img writes
    assert details.version == 2
    assert details.cluster_size == cluster_size
    assert details.bat_entries == -(-info["virtual-size"] // cluster_size)
    assert details.nb_sectors * 512 == info["virtual-size"]
    assert details.geometry.sectors * 512 == cluster_size
    assert details.in_use is False
    assert details.empty is False
    assert details.data_off * 512 % cluster_size == 0  # "aligned to cluster size" for WithouFreSpacExt
    assert details.ext_off == 0
    assert report.reads <= 2
    assert report.bytes_read <= HEAD_SIZE + TAIL_SIZE


def test_reads_do_not_depend_on_the_virtual_size(group):
    small = introspect.inspect(group / "p-7m.hds")
    big = introspect.inspect(group / "p-1t.hds")
    assert big.virtual_size > 100_000 * small.virtual_size
    assert (small.reads, small.bytes_read) == (big.reads, big.bytes_read)


@pytest.mark.qemu
def test_image_in_use_is_a_warning_and_qemu_still_reads_it(group, tmp_path):
    image, _ = _patched(group, tmp_path, in_use=parallels.HEADER_INUSE_MAGIC)
    info, error = _qemu_live(image)
    assert info is not None, error
    report = introspect.inspect(image)
    assert report.details.in_use is True
    assert report.verdict == "ok"
    assert report.virtual_size == info["virtual-size"]
    [finding] = report.findings
    assert (finding.code, finding.severity) == ("parallels.in_use", "warn")
    assert "was not closed cleanly" in finding.message
    assert "qemu-img check -r all -f parallels" in finding.message


@pytest.mark.qemu
def test_without_free_space_signature_uses_the_low_32_bits_of_nb_sectors_as_qemu_does(group, tmp_path):
    """A "WithoutFreeSpace" image counts BAT entries in sectors: point the data cluster's entry
    there, and set high bits in nb_sectors that only the extended variant may use."""
    image, header = _patched(
        group, tmp_path, "data.hds", magic=parallels.HEADER_MAGIC, nb_sectors=(1 << 32) | 10240
    )
    data = bytearray(image.read_bytes())
    for index in range(header.bat_entries):
        at = parallels.BAT_OFFSET + index * parallels.BAT_ENTRY.size
        (entry,) = parallels.BAT_ENTRY.unpack_from(data, at)
        parallels.BAT_ENTRY.pack_into(data, at, entry * header.tracks)
    image.write_bytes(bytes(data))
    info, error = _qemu_live(image)
    assert info is not None, error
    report = introspect.inspect(image)
    assert report.details.signature_variant == "WithoutFreeSpace"
    assert report.details.nb_sectors == 10240
    assert report.virtual_size == info["virtual-size"] == 10240 * 512
    assert report.verdict == "ok", report.findings


@pytest.mark.qemu
def test_bat_entry_past_the_end_of_the_file_is_truncation_as_qemu_check_says(group, tmp_path):
    image = tmp_path / "data.hds"
    shutil.copyfile(group / "data.hds", image)
    data = bytearray(image.read_bytes())
    header = parallels.ParallelsHeader.unpack(data)
    far = len(data) // (header.tracks * 512) + 10  # a cluster well past the end
    parallels.BAT_ENTRY.pack_into(data, parallels.BAT_OFFSET + 3 * parallels.BAT_ENTRY.size, far)
    image.write_bytes(bytes(data))
    status, said = _qemu_check(image)
    assert status == 2  # corruptions found
    assert "ERROR cluster 3 is outside image" in said
    report = introspect.inspect(image)
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "image.truncated"
    cluster = header.tracks * 512
    assert finding.message == (
        f"the cluster that BAT entry 3 points to needs bytes {far * cluster}..{(far + 1) * cluster} but the "
        f"file ends at {len(data)}: the image was cut short; upload it again (at offset {far * cluster})"
    )


def test_bat_cut_short_is_truncation(group, tmp_path):
    image = tmp_path / "cut.hds"
    shutil.copyfile(group / "p-1t.hds", image)
    details = introspect.inspect(image).details
    with image.open("r+b") as file:
        file.truncate(MIB)
    [finding] = introspect.inspect(image).findings
    assert finding.code == "image.truncated"
    end = parallels.BAT_OFFSET + details.bat_entries * 4
    assert finding.message.startswith(
        f"the Parallels BAT needs bytes {parallels.BAT_OFFSET}..{end} but the file ends at {MIB}"
    )


def test_format_extension_past_the_end_of_the_file_is_truncation(group, tmp_path):
    image, _ = _patched(group, tmp_path, ext_off=4096)
    [finding] = introspect.inspect(image).findings
    assert finding.code == "image.truncated"
    assert finding.message.startswith("the Parallels Format Extension cluster needs bytes 2097152..3145728")


@pytest.mark.qemu
def test_zero_sectors_per_cluster_is_a_bad_field_as_qemu_refuses_it(group, tmp_path):
    image, _ = _patched(group, tmp_path, tracks=0)
    info, error = _qemu_live(image)
    assert info is None
    assert "Zero sectors per track" in error
    report = introspect.inspect(image)
    assert report.verdict == "error"
    [finding] = report.findings
    assert finding.code == "parallels.bad_header"
    assert finding.message == (
        f"tracks (sectors per cluster) is 0, expected 1..{parallels.TRACKS_MAX} (at offset 0)"
    )


def test_unknown_version_is_a_bad_field(group, tmp_path):
    image, _ = _patched(group, tmp_path, version=3)
    [finding] = introspect.inspect(image).findings
    assert finding.code == "parallels.bad_header"
    assert finding.message == "version is 3, expected 2 (at offset 0)"


def test_unknown_in_use_value_and_short_bat_are_out_of_spec(group, tmp_path):
    image, header = _patched(group, tmp_path, in_use=0x12345678, bat_entries=3)
    report = introspect.inspect(image)
    assert report.verdict == "ok"
    assert [f.code for f in report.findings] == ["parallels.out_of_spec", "parallels.out_of_spec"]
    assert "in_use is 0x12345678" in report.findings[0].message
    assert f"the BAT covers {3 * header.tracks} sectors of a {header.nb_sectors}-sector disk" in (
        report.findings[1].message
    )
