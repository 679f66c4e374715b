"""VHD (qemu's vpc): every qemu-img-built fixture against what `qemu-img info` recorded, and
corrupted copies made by rewriting fields through the structures declared in the parser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import introspect
from introspect import qemu
from introspect.formats import vhd
from introspect.model import Verdict
from introspect.sources import Budget, FileSource, Reader
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded, rewrite

GROUP = fixture_group("vhd")
IMAGES = sorted(GROUP.glob("*.vhd"))
IDS = [p.name for p in IMAGES]


def codes(report: introspect.Report) -> list[str]:
    return [f.code for f in report.findings]


def message(report: introspect.Report, code: str) -> str:
    return next(f.message for f in report.findings if f.code == code)


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copyfile(GROUP / name, target)
    return target


def rewrite_footers(path: Path, *, which: tuple[str, ...] = ("start", "end"), fix: bool = True, **fields):
    """Set footer fields in the copies named by `which`, with a correct checksum when `fix`."""
    data = bytearray(path.read_bytes())
    offsets = {"start": 0, "end": len(data) - vhd.FOOTER_SIZE}
    for where in which:
        at = offsets[where]
        if data[at : at + len(vhd.FOOTER_COOKIE)] != vhd.FOOTER_COOKIE:
            continue
        rewrite(data, vhd.HardDiskFooter, at, **fields)
        if fix:
            total = vhd.checksum(bytes(data[at : at + vhd.FOOTER_SIZE]), vhd.FOOTER_CHECKSUM_OFFSET)
            rewrite(data, vhd.HardDiskFooter, at, checksum=total)
    path.write_bytes(bytes(data))


def rewrite_dynamic_header(path: Path, *, fix: bool = True, **fields) -> None:
    data = bytearray(path.read_bytes())
    at = vhd.HardDiskFooter.unpack(data).data_offset
    rewrite(data, vhd.DynamicDiskHeader, at, **fields)
    if fix:
        total = vhd.checksum(
            bytes(data[at : at + vhd.DYNAMIC_HEADER_SIZE]), vhd.DYNAMIC_HEADER_CHECKSUM_OFFSET
        )
        rewrite(data, vhd.DynamicDiskHeader, at, checksum=total)
    path.write_bytes(bytes(data))


def test_the_group_has_fixed_and_dynamic_images():
    assert {p.stem.split("-")[0] for p in IMAGES} >= {"dynamic", "fixed", "converted"}


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_what_qemu_img_reports(image):
    info = qemu_info(image)
    report = introspect.inspect(image)
    assert report.format == "vhd"
    assert report.verdict == Verdict.OK, report.findings
    assert report.findings == []
    assert report.virtual_size == info["virtual-size"]
    # qemu-img reports a cluster size (the dynamic header's block size) for every non-fixed VHD.
    assert report.details.block_size == info.get("cluster-size")
    assert (report.details.dynamic_header is None) == ("cluster-size" not in info)


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_footers_and_checksums(image):
    details = introspect.inspect(image).details
    assert details.footer.checksum_valid
    assert details.footer.cookie == "conectix"
    assert details.footer_at_end and details.footer_end_length == vhd.FOOTER_SIZE
    if image.name.startswith("fixed"):
        # A fixed VHD carries its footer only at the end of the file.
        assert details.disk_type == "fixed"
        assert not details.footer_at_start
        assert details.footers_match is None and details.footer_copy_checksum_valid is None
    else:
        assert details.disk_type == "dynamic"
        assert details.footer_at_start
        assert details.footers_match and details.footer_copy_checksum_valid
        assert details.dynamic_header.checksum_valid
        assert details.dynamic_header.cookie == "cxsparse"
        assert details.dynamic_header.offset == details.footer.data_offset
        assert details.dynamic_header.parent_locators == []
        assert details.dynamic_header.parent_uuid is None
    assert details.backing_file is None


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_size_source_follows_qemu(image):
    """force_size=on writes creator "qem2" and the CHS maximum; beyond the CHS maximum (127 GiB)
    qemu writes the maximum geometry too; otherwise the size is the geometry's."""
    details = introspect.inspect(image).details
    geometry = details.geometry
    assert details.chs_size == geometry.cylinders * geometry.heads * geometry.sectors * 512
    if "force" in image.name:
        assert details.footer.creator_application == "qem2"
    if "force" in image.name or "2040G" in image.name:
        assert (geometry.cylinders, geometry.heads, geometry.sectors) == vhd.MAX_GEOMETRY
        assert details.size_from == "current_size"
        assert qemu_info(image)["virtual-size"] == details.current_size
    else:
        assert details.footer.creator_application == "qemu"
        assert details.size_from == "chs"
        assert qemu_info(image)["virtual-size"] == details.chs_size


@pytest.mark.parametrize(
    ("small", "big"),
    [("converted.vhd", "dynamic-2040G.vhd"), ("fixed-7M.vhd", "fixed-force-1G+3M.vhd")],
)
def test_reads_are_bounded_and_independent_of_the_virtual_size(small, big):
    a, b = introspect.inspect(GROUP / small), introspect.inspect(GROUP / big)
    assert qemu_info(GROUP / big)["virtual-size"] > 100 * qemu_info(GROUP / small)["virtual-size"]
    assert a.reads == b.reads <= 2
    assert a.bytes_read <= 64 * 1024 + 512 and b.bytes_read <= 64 * 1024 + 512


def test_bad_footer_checksum_is_rejected(tmp_path):
    image = copy("fixed-7M.vhd", tmp_path)
    rewrite_footers(image, fix=False, creator_host_os=b"Mac ")
    report = introspect.inspect(image)
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["vhd.footer_checksum"]
    assert message(report, "vhd.footer_checksum").startswith(
        "the VHD footer at the end of the file has a wrong checksum, so qemu refuses the image"
    )
    assert not report.details.footer.checksum_valid
    assert report.virtual_size == qemu_info(GROUP / "fixed-7M.vhd")["virtual-size"]


def test_bad_checksum_of_the_tail_copy_only_warns(tmp_path):
    image = copy("dynamic-7M.vhd", tmp_path)
    rewrite_footers(image, which=("end",), fix=False, creator_host_os=b"Mac ")
    report = introspect.inspect(image)
    assert report.verdict == Verdict.OK
    assert codes(report) == ["vhd.footer_copy_checksum", "vhd.footer_mismatch"]
    assert "convert the image with `qemu-img convert -O vpc`" in message(report, "vhd.footer_copy_checksum")
    assert report.details.footer.checksum_valid and report.details.footer_copy_checksum_valid is False


def test_footers_that_disagree_warn(tmp_path):
    image = copy("dynamic-7M.vhd", tmp_path)
    rewrite_footers(image, which=("end",), time_stamp=0)
    report = introspect.inspect(image)
    assert report.verdict == Verdict.OK
    assert codes(report) == ["vhd.footer_mismatch"]
    assert message(report, "vhd.footer_mismatch").startswith(
        "the VHD footers at offset 0 and at the end of the file differ; qemu reads the one at offset 0"
    )
    assert report.details.footers_match is False


def test_differencing_disk_is_rejected_and_its_parent_recorded(tmp_path):
    image = copy("dynamic-7M.vhd", tmp_path)
    rewrite_footers(image, disk_type=4)
    name = "C:\\VMs\\parent.vhd"
    rewrite_dynamic_header(
        image, parent_unicode_name=name.encode("utf-16-be"), parent_unique_id=bytes(range(16))
    )
    report = introspect.inspect(image)
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["vhd.differencing"]
    assert message(report, "vhd.differencing") == (
        f"the VHD is a differencing disk whose parent is {name!r}, which is not uploaded with it: "
        "flatten the chain first (merge it in Hyper-V, or `qemu-img convert -O vpc` on the host that "
        "has the parent)"
    )
    assert report.details.backing_file == name
    assert report.details.dynamic_header.parent_uuid == "00010203-0405-0607-0809-0a0b0c0d0e0f"


def test_bad_dynamic_header_checksum_warns(tmp_path):
    image = copy("dynamic-129M+3.vhd", tmp_path)
    rewrite_dynamic_header(image, fix=False, parent_time_stamp=1)
    report = introspect.inspect(image)
    assert report.verdict == Verdict.OK
    assert codes(report) == ["vhd.dynamic_header_checksum"]
    assert not report.details.dynamic_header.checksum_valid


def test_saved_state_warns(tmp_path):
    image = copy("dynamic-7M.vhd", tmp_path)
    rewrite_footers(image, saved_state=1)
    report = introspect.inspect(image)
    assert codes(report) == ["vhd.saved_state"]
    assert report.details.footer.saved_state


def test_old_511_byte_footer_is_read(tmp_path):
    image = copy("fixed-7M.vhd", tmp_path)
    with image.open("r+b") as f:
        f.truncate(image.stat().st_size - 1)
    report = introspect.inspect(image)
    assert report.verdict == Verdict.OK
    assert codes(report) == ["vhd.old_footer"]
    assert report.details.footer_end_length == vhd.OLD_FOOTER_SIZE and report.details.footer.checksum_valid
    assert report.virtual_size == qemu_info(GROUP / "fixed-7M.vhd")["virtual-size"]


def test_current_size_creators_use_current_size(tmp_path):
    """Hyper-V ("win ") writes a reliable Current Size and a geometry that rounds down; qemu uses
    the former for it. Checked against the virtual size qemu-img recorded for the original."""
    image = copy("dynamic-7M.vhd", tmp_path)
    recorded = qemu_info(GROUP / "dynamic-7M.vhd")["virtual-size"]
    rewrite_footers(image, creator_application=b"win ", current_size=recorded - 1024)
    report = introspect.inspect(image)
    assert report.details.size_from == "current_size"
    assert report.virtual_size == recorded - 1024
    assert report.details.chs_size == recorded


def test_invalid_disk_type_is_an_error(tmp_path):
    image = copy("dynamic-7M.vhd", tmp_path)
    rewrite_footers(image, disk_type=6)
    report = introspect.inspect(image)
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["vhd.invalid"]
    assert message(report, "vhd.invalid") == (
        "footer disk type is 6, expected 2 (fixed), 3 (dynamic) or 4 (differencing): the footer is corrupt; "
        "re-export the disk from the tool that made it (at offset 0)"
    )


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (
            {"block_size": 3 * 1024 * 1024},
            "dynamic disk header block size is 3145728, expected a power of two",
        ),
        (
            {"block_size": 256},
            "dynamic disk header block size is 256, expected a power of two of at least 512",
        ),
        (
            {"max_table_entries": 0xFFFFFFFF},
            "dynamic disk header max table entries is 4294967295, expected between 4",
        ),
        (
            {"max_table_entries": 1},
            "dynamic disk header max table entries is 1, expected between 4 (to cover",
        ),
        ({"cookie": b"cxspar5e"}, "dynamic disk header cookie is b'cxspar5e', expected b'cxsparse'"),
    ],
)
def test_bad_dynamic_header_fields_are_errors(tmp_path, fields, text):
    image = copy("dynamic-7M.vhd", tmp_path)
    rewrite_dynamic_header(image, **fields)
    report = introspect.inspect(image)
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["vhd.invalid"]
    assert message(report, "vhd.invalid").startswith(text)


def test_data_offset_past_the_end_is_an_error(tmp_path):
    image = copy("dynamic-7M.vhd", tmp_path)
    rewrite_footers(image, data_offset=1 << 50)
    report = introspect.inspect(image)
    assert report.verdict == Verdict.ERROR
    assert message(report, "vhd.invalid").startswith(
        f"footer data offset is {1 << 50}, expected the offset of"
    )


def test_too_large_for_vhd_is_an_error(tmp_path):
    image = copy("dynamic-force-7M.vhd", tmp_path)
    rewrite_footers(image, current_size=(vhd.MAX_SECTORS + 1) * 512)
    report = introspect.inspect(image)
    assert report.verdict == Verdict.ERROR
    assert "(2040 GiB, the VHD maximum): use VHDX or qcow2 for disks this large" in message(
        report, "vhd.invalid"
    )


def test_truncated_block_allocation_table(tmp_path):
    image = copy("dynamic-2040G.vhd", tmp_path)
    with image.open("r+b") as f:
        f.truncate(64 * 1024)
    report = introspect.inspect(image)
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["image.truncated"]
    assert message(report, "image.truncated").startswith("the block allocation table needs bytes 1536..")
    assert "the image was cut short; upload it again" in message(report, "image.truncated")


def test_dynamic_disk_without_its_head_footer_is_an_error(tmp_path):
    image = copy("dynamic-7M.vhd", tmp_path)
    data = bytearray(image.read_bytes())
    data[: vhd.FOOTER_SIZE] = bytes(vhd.FOOTER_SIZE)
    image.write_bytes(bytes(data))
    report = introspect.inspect(image)
    assert report.verdict == Verdict.ERROR
    assert message(report, "vhd.invalid").startswith("footer at offset 0 is 'missing'")


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("creator", "size_delta"),
    [(b"win ", -1024), (b"d2v ", 512 * 1000), (b"tap\0", -512), (b"vpc ", -1024), (b"vs  ", 4096)],
)
def test_size_rule_matches_the_real_qemu_img(tmp_path, creator, size_delta):
    """The creator table decides between CHS and Current Size: run the installed qemu-img on each."""
    image = copy("dynamic-7M.vhd", tmp_path)
    current = qemu_info(GROUP / "dynamic-7M.vhd")["virtual-size"] + size_delta
    rewrite_footers(image, creator_application=creator, current_size=current)
    report = introspect.inspect(image)
    assert report.virtual_size == qemu.info(str(image), "vpc").virtual_size


def test_fixed_disk_shorter_than_its_size_is_truncated(tmp_path):
    image = copy("fixed-7M.vhd", tmp_path)
    recorded = qemu_info(GROUP / "fixed-7M.vhd")["virtual-size"]
    data = image.read_bytes()
    image.write_bytes(data[: 1024 * 1024] + data[-vhd.FOOTER_SIZE :])
    report = introspect.inspect(image)
    assert report.verdict == Verdict.ERROR
    assert message(report, "image.truncated").startswith(
        f"the fixed disk (data and footer) needs bytes 0..{recorded + vhd.FOOTER_SIZE} but the file "
        f"ends at {1024 * 1024 + vhd.FOOTER_SIZE}"
    )


# --- Fixed VHDs holding partitioned disks (fixtures/make/partitioned.sh) ------------------------
# `qemu-img convert -O vpc -o subformat=fixed` of a disk partitioned by sfdisk or sgdisk: the shape
# of every Azure and Hyper-V fixed disk. Its data is a raw disk from offset 0, so its partition
# table is content, read as a raw disk's is; sfdisk read the disk qemu presents from each one.

#: Each with the reads its header pass costs: head and tail; a GPT's backup header at the guest
#: disk's last LBA (the file's tail holds the footer), and where the primary header says it is
#: when that is elsewhere (the disk rounded up to CHS).
FIXED_PARTITIONED = {
    "gpt-fixed.vhd": 4,
    "gpt-fixed-force.vhd": 3,
    "mbr-fixed.vhd": 2,
    "mbr-fixed-force.vhd": 2,
}


def sfdisk_table(image: Path) -> dict:
    return json.loads(recorded(image, "sfdisk.json"))["partitiontable"]


@pytest.mark.parametrize(("name", "reads"), FIXED_PARTITIONED.items())
def test_a_fixed_vhd_holding_a_partitioned_disk_is_not_a_polyglot(name, reads):
    image = fixture_group("partitioned") / name
    report = introspect.inspect(image)
    assert report.format == "vhd"
    assert "image.polyglot" not in codes(report)
    assert report.verdict == Verdict.OK, report.findings
    assert report.virtual_size == qemu_info(image)["virtual-size"]
    # The table read over the disk qemu presents is the one sfdisk reads from that disk.
    sfdisk = sfdisk_table(image)
    table = report.details.partition_table
    assert table.scheme == sfdisk["label"].replace("dos", "mbr")
    assert [p.number for p in table.partitions] == [
        int(p["node"].removeprefix(sfdisk["device"])) for p in sfdisk["partitions"]
    ]
    if table.scheme == "gpt":
        starts = [(p.starting_lba, p.ending_lba - p.starting_lba + 1) for p in table.partitions]
        assert [p.partition_type_guid.upper() for p in table.partitions] == [
            p["type"] for p in sfdisk["partitions"]
        ]
    else:
        starts = [(p.starting_lba, p.size_in_lba) for p in table.partitions]
    assert starts == [(p["start"], p["size"]) for p in sfdisk["partitions"]]
    assert report.reads == reads


def test_a_fixed_vhd_rounded_up_to_chs_has_its_gpt_backup_off_the_end():
    """qemu-img rounds a plain fixed VHD up to a CHS size, so the guest's disk is longer than the
    partitioned source: sgdisk -v of that disk says the backup header is not at its end, and so do
    we; with force_size the disk keeps its size and both are clean."""
    group = fixture_group("partitioned")
    rounded, forced = (introspect.inspect(group / n) for n in ("gpt-fixed.vhd", "gpt-fixed-force.vhd"))
    assert "doesn't reside\nat the end of the disk" in recorded(group / "gpt-fixed.vhd", "sgdisk-verify.txt")
    assert "No problems found" in recorded(group / "gpt-fixed-force.vhd", "sgdisk-verify.txt")
    assert codes(rounded) == ["gpt.backup_header"]
    assert "not at the last LBA" in message(rounded, "gpt.backup_header")
    # sgdisk -e on the .vhd file would write over its footer: the advice says where to run it.
    assert "never on the .vhd file, whose footer follows the disk" in message(rounded, "gpt.backup_header")
    assert codes(forced) == []


def test_a_fixed_vhd_reports_the_firmware_its_partition_table_points_to():
    """sfdisk's MBR has an EFI System partition (type ef) and no boot code: UEFI, as for raw. The
    GPT holds an ESP and a BIOS boot partition: evidence both ways, so no hw_firmware_type."""
    group = fixture_group("partitioned")
    mbr = introspect.inspect(group / "mbr-fixed.vhd")
    assert sfdisk_table(group / "mbr-fixed.vhd")["partitions"][0]["type"] == "ef"
    assert mbr.properties["hw_firmware_type"] == "uefi"
    assert mbr.details.firmware.uefi and not mbr.details.firmware.bios
    gpt = introspect.inspect(group / "gpt-fixed.vhd")
    assert gpt.details.firmware.uefi and gpt.details.firmware.bios
    assert "hw_firmware_type" not in gpt.properties
    raw = introspect.inspect(group / "mbr.raw")
    assert raw.details.firmware == mbr.details.firmware


@pytest.mark.parametrize("name", ["gpt-dynamic.vhd", "mbr-dynamic.vhd"])
def test_a_dynamic_vhd_of_a_partitioned_disk_has_its_table_in_blocks_not_at_offset_0(name):
    report = introspect.inspect(fixture_group("partitioned") / name)
    assert report.verdict == Verdict.OK
    assert report.details.partition_table is None
    # The guest pass reads the table through the BAT. A dynamic disk is rounded up to a CHS size as
    # a plain fixed one is, so the GPT's backup header is not at the end of the guest's disk (what
    # sgdisk -v says of the fixed one); the advice is for the disk inside, never the .vhd file.
    assert "doesn't reside\nat the end of the disk" in recorded(
        fixture_group("partitioned") / "gpt-fixed.vhd", "sgdisk-verify.txt"
    )
    expected = ["gpt.backup_header"] if name.startswith("gpt") else []
    assert codes(report) == expected
    if expected:
        assert "never on the vhd file itself" in message(report, "gpt.backup_header")
    assert [v.device for v in report.guest.volumes] == [
        f"/dev/sda{p['node'][-1]}"
        for p in sfdisk_table(fixture_group("partitioned") / name.replace("-dynamic.vhd", ".raw"))[
            "partitions"
        ]
    ]


def test_the_guest_view_of_a_fixed_vhd_is_its_data_before_the_footer():
    image = fixture_group("partitioned") / "gpt-fixed-force.vhd"
    details = introspect.inspect(image).details
    with FileSource(image) as source:
        reader = Reader(source, Budget(max_reads=8))
        view = vhd.FORMAT.guest(reader, details)
        assert view.size == qemu_info(image)["virtual-size"] == image.stat().st_size - vhd.FOOTER_SIZE
        assert view.read(512, 8) == b"EFI PART"
        # The last sector the guest sees is the GPT's backup header; the footer is not the guest's.
        assert view.read(view.size - 512, 8) == b"EFI PART"
        with pytest.raises(introspect.TruncatedImage):
            view.read(view.size, 1)
        assert reader.reads == 2
    # A dynamic disk's view goes through its BAT (tests/formats/test_vhd_guest.py): the same GPT.
    dynamic_image = fixture_group("partitioned") / "gpt-dynamic.vhd"
    dynamic = introspect.inspect(dynamic_image).details
    with FileSource(dynamic_image) as source:
        assert vhd.FORMAT.guest(Reader(source), dynamic).read(512, 8) == b"EFI PART"


@pytest.mark.parametrize(
    ("image", "fields", "used"),
    [
        ("dynamic-force-7M.vhd", {"current_size": 3 << 30}, None),  # CHS maximum: no size claim
        ("dynamic-1G+3M.vhd", {"current_size": 1 << 62}, "CHS geometry"),
        ("dynamic-1G+3M.vhd", {"creator_application": b"win ", "current_size": 7 << 20}, "current size"),
        ("fixed-7M.vhd", {"current_size": 3 << 20}, "CHS geometry"),
    ],
    ids=["force-size-max-chs", "huge-current-size", "hyper-v-small-current-size", "fixed-small-current-size"],
)
def test_current_size_and_chs_that_contradict_each_other_are_a_finding(tmp_path, image, fields, used):
    """The footer states the size twice; qemu 7.2 silently picks one by creator, Hyper-V the other.
    Apart by more than CHS rounding (one cylinder), they are a rejection naming both, whichever
    qemu picks (the virtual size stays what qemu-img reports for the original's creator rule)."""
    path = copy(image, tmp_path)
    rewrite_footers(path, **fields)
    report = introspect.inspect(path)
    if used is None:
        assert "vhd.size_fields_disagree" not in codes(report)
        return
    assert report.verdict == Verdict.REJECTED
    assert "vhd.size_fields_disagree" in codes(report)
    text = message(report, "vhd.size_fields_disagree")
    assert f"current size ({fields['current_size']} bytes)" in text
    assert f"uses the {used}" in text
    assert "qemu-img convert -O vpc" in text


def test_current_size_within_one_cylinder_of_chs_is_consistent():
    """Every qemu-img-made VHD states consistent sizes (equal, or the CHS maximum with force_size)."""
    for image in IMAGES:
        assert "vhd.size_fields_disagree" not in codes(introspect.inspect(image))


@pytest.mark.parametrize(
    "name", ["converted.vhd", "partitioned/gpt-dynamic.vhd", "partitioned/mbr-dynamic.vhd"]
)
@pytest.mark.parametrize("keep", [2048, 4096, 66048, "half", "-2", "-512"])
def test_a_cut_dynamic_vhd_is_truncated(tmp_path, name, keep):
    """qemu-img's dynamic VHDs, cut at several points: the footer copy every VHD ends with is gone.
    (One byte less is a footer of the old 511-byte form, which the spec accepts: vhd.old_footer.)"""
    source = fixture_group("partitioned") / name.split("/")[1] if "/" in name else GROUP / name
    data = source.read_bytes()
    keep = len(data) // 2 if keep == "half" else len(data) + int(keep) if isinstance(keep, str) else keep
    path = tmp_path / "cut.vhd"
    path.write_bytes(data[:keep])
    report = introspect.inspect(path)
    assert report.format == "vhd"
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["image.truncated"]
    assert message(report, "image.truncated").startswith(
        "the dynamic VHD does not end with the copy of its footer that every VHD ends with"
    )


def test_blocks_past_the_footer_copy_are_truncation(tmp_path):
    """converted.vhd (qemu-img convert of 5 MiB with data in its first and fourth MiB) keeps two
    blocks; cut the second off but keep the footer copy, as a broken transfer that resumed at the
    end would: the BAT places that block past the footer."""
    data = (GROUP / "converted.vhd").read_bytes()
    path = tmp_path / "holed.vhd"
    path.write_bytes(data[: len(data) // 2] + data[-vhd.FOOTER_SIZE :])
    report = introspect.inspect(path)
    assert report.verdict == Verdict.REJECTED
    assert codes(report) == ["image.truncated"]
    text = message(report, "image.truncated")
    assert text.startswith("the VHD's block allocation table places a block at bytes ")
    assert f"past the footer copy at {len(data) // 2}" in text
    assert report.reads <= 2


def test_a_dynamic_header_cut_off_is_truncation(tmp_path):
    data = (GROUP / "dynamic-7M.vhd").read_bytes()
    path = tmp_path / "cut.vhd"
    path.write_bytes(data[:1024])
    report = introspect.inspect(path)
    assert report.verdict == Verdict.ERROR
    assert codes(report) == ["image.truncated"]
    assert message(report, "image.truncated").startswith("the dynamic disk header needs bytes 512..1536")
