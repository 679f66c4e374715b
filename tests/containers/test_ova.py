"""OVA packages (fixtures/make/ova.sh: qemu-img disks, GNU tar and tarfile archives, descriptors in
the shapes ovftool, VirtualBox and OVF 0.9 write): the boot disk's Report, the OVF's properties,
every disk in `members`, reads that do not grow with the disks, and every hostile package's code
(fixtures/ova.py, HOSTILE.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import introspect
from introspect.containers import ova, ovf
from introspect.formats import vmdk
from introspect.model import Severity, Verdict
from introspect.report import Report
from introspect.safety import Policy
from introspect.sources import BytesSource, FileSource, Reader
from tests.conftest import fixture_group
from tests.tools import qemu_info

#: The command as `introspect` runs it, from this checkout (the console script may belong to another).
INTROSPECT = [sys.executable, "-c", "from introspect.cli import main; main()"]
ROOT = Path(__file__).resolve().parents[2]
HOSTILE = json.loads((fixture_group("ova") / "HOSTILE.json").read_text())


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("ova")


def inspect(group: Path, name: str, **kwargs: object) -> Report:
    return introspect.inspect(group / name, **kwargs)  # type: ignore[arg-type]


# --- Real packages ------------------------------------------------------------------------------

#: fixture -> (source disk whose qemu-img record gives the virtual size, properties the OVF states)
PACKAGES = {
    "vmware-pvscsi.ova": (
        "stream-1g.vmdk",
        {
            "os_type": "linux",
            "os_distro": "ubuntu",
            "architecture": "x86_64",
            "vmware_ostype": "ubuntu64Guest",
            "introspect_ovf_vmware_ostype": "ubuntu64Guest",
            "hw_firmware_type": "uefi",
            "vmware_adaptertype": "paraVirtual",
            "hw_disk_bus": "scsi",
            "hw_scsi_model": "vmpvscsi",
            "hw_vif_model": "vmxnet3",
            "introspect_ovf_vcpus": "2",
            "introspect_ovf_memory_mib": "2048",
            "introspect_ovf_hardware_version": "vmx-14",
            "introspect_ovf_disk_bus": "scsi",
            "introspect_ovf_nics": "1",
            "introspect_ovf_disks": "1",
        },
    ),
    "vmware-lsisas.ova": (
        "stream-1g.vmdk",
        {
            "os_distro": "rhel",
            "os_version": "8",
            # rhel8_64Guest is newer than Nova's VMware driver's list: kept verbatim, not as vmware_ostype
            "vmware_ostype": None,
            "introspect_ovf_vmware_ostype": "rhel8_64Guest",
            "hw_firmware_type": "bios",
            "vmware_adaptertype": "lsiLogicsas",
            "hw_scsi_model": "lsisas1068",
            "hw_vif_model": "e1000e",
        },
    ),
    "vbox-sata.ova": (
        "stream-ide.vmdk",
        {
            "os_type": "linux",
            "os_distro": "ubuntu",
            "architecture": "x86_64",
            "hw_firmware_type": "uefi",
            "hw_disk_bus": "sata",
            "hw_vif_model": "e1000",
            "introspect_ovf_memory_mib": "1024",
            "introspect_ovf_hardware_version": "virtualbox-2.2",
            "introspect_ovf_disk_bus": "sata",
        },
    ),
    "v09.ova": (
        "sparse.vmdk",
        {
            "os_type": "linux",
            "architecture": "x86_64",
            "vmware_ostype": "other26xLinux64Guest",
            "vmware_adaptertype": "lsiLogic",
            "hw_scsi_model": "lsilogic",
            "hw_vif_model": "pcnet",
            "introspect_ovf_memory_mib": "512",
            "introspect_ovf_hardware_version": "vmx-04",
        },
    ),
    "nvme.ova": (
        "stream-1g.vmdk",
        {
            "os_distro": "rhel",
            "os_version": "9",
            "hw_vif_model": "virtio",
            "introspect_ovf_vcpus": "4",
            "introspect_ovf_memory_mib": "8192",
            "introspect_ovf_hardware_version": "vmx-19 vmx-20",
            "introspect_ovf_disk_bus": "nvme",
            "introspect_ovf_disks": "2",
        },
    ),
}


@pytest.mark.parametrize("name", PACKAGES)
def test_the_boot_disk_is_the_report_and_the_ovf_states_the_rest(group, name):
    source, stated = PACKAGES[name]
    report = inspect(group, name)
    assert (report.format, report.container_format, report.verdict) == ("vmdk", "ova", Verdict.OK)
    assert report.virtual_size == qemu_info(group / "src" / source)["virtual-size"]
    assert report.properties["introspect_container_format"] == "ova"
    assert {k: report.properties.get(k) for k in stated} == stated
    assert report.container is not None and report.container.kind == "ova"
    assert report.size == (group / name).stat().st_size


def test_the_ovf_controller_replaces_what_ddb_adapter_type_says_and_details_keep_both(group):
    """qemu-img wrote ddb.adapterType = "lsilogic"; the OVF says PVSCSI, which the VMDK cannot say."""
    report = inspect(group, "vmware-pvscsi.ova")
    assert report.details.adapter_type == "lsilogic"
    controller = report.container.boot_disk.controller
    assert (controller.chosen_subtype, controller.bus, controller.vmware_adaptertype) == (
        "VirtualSCSI",
        "scsi",
        "paraVirtual",
    )
    assert report.properties["vmware_adaptertype"] == "paraVirtual"


@pytest.mark.parametrize("name", ["vbox-sata.ova", "nvme.ova"])
def test_a_controller_nova_has_no_adapter_word_for_leaves_none_from_the_vmdk(group, name):
    """SATA has hw_disk_bus but no vmware_adaptertype, NVMe neither: the VMDK's `ide`/`lsilogic`
    words are not left standing beside the OVF's controller."""
    report = inspect(group, name)
    assert "vmware_adaptertype" not in report.properties
    assert "hw_scsi_model" not in report.properties
    assert report.properties.get("hw_disk_bus") == ("sata" if name == "vbox-sata.ova" else None)


def test_qemu_img_s_default_adapter_is_not_questioned_when_the_ovf_states_the_controller(group):
    """vbox-sata.ova's disk is `qemu-img create -o adapter_type=ide` (what qemu-img writes when not
    told): alone it gets vmdk.writer_defaults ("check how the VM booted it"); the OVF says AHCI, so
    the package's findings do not ask, and the disk's own Report in `members` still says it."""
    alone = introspect.inspect(group / "src" / "stream-ide.vmdk", guest=False)
    assert [f.code for f in alone.findings] == ["vmdk.writer_defaults"]
    assert b'ddb.adapterType = "ide"' in (group / "src" / "stream-ide.vmdk").read_bytes()[:65536]
    report = inspect(group, "vbox-sata.ova")
    assert report.details.adapter_type == "ide"
    assert "vmdk.writer_defaults" not in [f.code for f in report.findings]
    assert [f.code for f in report.members[0].findings] == ["vmdk.writer_defaults"]
    assert report.properties["hw_disk_bus"] == "sata"


@pytest.mark.parametrize("name", ["vmware-pvscsi.ova", "vmware-pvscsi-pax.ova", "vmware-pvscsi-gnu.ova"])
def test_ustar_pax_and_gnu_archives_read_alike(group, name):
    report = inspect(group, name)
    plain = inspect(group, "vmware-pvscsi.ova")
    assert (report.format, report.virtual_size, report.verdict) == (
        plain.format,
        plain.virtual_size,
        Verdict.OK,
    )
    assert report.properties == plain.properties


@pytest.mark.parametrize("name", ["long-name-gnu.ova", "long-name-pax.ova"])
def test_long_names_come_from_gnu_longlink_and_pax_path(group, name):
    report = inspect(group, name)
    names = [e.name for e in report.container.entries]
    assert len(names[1]) > 100 and names[1].endswith(".vmdk")
    assert (report.format, report.verdict) == ("vmdk", Verdict.OK)


def test_every_disk_has_its_report_the_boot_disk_first(group):
    report = inspect(group, "nvme.ova")
    assert [(m.source, m.format, m.virtual_size) for m in report.members] == [
        ("vm-disk1.vmdk", "vmdk", qemu_info(group / "src" / "stream-1g.vmdk")["virtual-size"]),
        ("vm-disk2.vmdk", "vmdk", qemu_info(group / "src" / "data-disk.vmdk")["virtual-size"]),
    ]
    data = report.container.descriptor.virtual_systems[0]
    scsi = next(d for d in data.devices if d.instance_id == "4")
    # DSP0243 §9.6: alternatives, in the writer's order; the first one known wins.
    assert scsi.resource_subtypes == ["virtio", "lsilogic"]
    assert ovf.controller_of(scsi).hw_scsi_model == "virtio-scsi"


def test_a_rejected_second_disk_rejects_the_package(group):
    report = inspect(group, "backed-member.ova")
    assert report.verdict == Verdict.REJECTED
    assert [f.code for f in report.findings] == ["container.member"]
    assert report.findings[0].message.startswith("the disk 'vm-disk2.qcow2' of this ova is rejected (")
    assert "qcow2.backing_file" in report.findings[0].message
    assert report.members[1].format == "qcow2"


def _extent_files(descriptor: Path) -> list[str]:
    """The extent file names in the descriptor qemu-img wrote (`RW 2097152 FLAT "name" 0`)."""
    return [line.split('"')[1] for line in descriptor.read_text().splitlines() if line.startswith("RW ")]


@pytest.mark.parametrize(
    ("name", "code"),
    [("flat-extent.ova", "ova.extent_member"), ("flat-extent-missing.ova", "ova.extent_missing")],
)
def test_a_descriptor_disk_whose_extents_the_package_holds_or_lacks_is_named(group, name, code):
    """qemu-img's monolithicFlat descriptor as the disk: its data is the extent file it names."""
    (extent,) = _extent_files(group / "src" / "flat" / "vm-disk1.vmdk")
    listed = subprocess.run(["tar", "-tf", str(group / name)], check=True, capture_output=True, text=True)
    assert (extent in listed.stdout.split()) == (code == "ova.extent_member")
    report = inspect(group, name)
    assert report.verdict == Verdict.REJECTED
    (found,) = [f for f in report.findings if f.code.startswith("ova.extent")]
    assert found.code == code
    assert repr(extent) in found.message and "subformat=streamOptimized" in found.message
    assert "vmdk.descriptor_flat" in [f.code for f in report.findings]


def test_a_collection_lists_its_systems_and_states_properties_of_none(group):
    report = inspect(group, "collection.ova")
    descriptor = report.container.descriptor
    assert descriptor.collection
    assert [s.id for s in descriptor.virtual_systems] == ["web", "db"]
    assert [s.operating_system.vmw_os_type for s in descriptor.virtual_systems] == [
        "debian12_64Guest",
        "rhel8_64Guest",
    ]
    assert not {"os_type", "os_distro", "vmware_ostype", "hw_vif_model"} & report.properties.keys()
    assert report.properties["introspect_ovf_virtual_systems"] == "2"
    assert len(report.members) == 2


def test_ovf_details_record_the_package(group):
    report = inspect(group, "vmware-pvscsi.ova")
    details = report.container
    assert [e.name for e in details.entries] == [
        "vmware-pvscsi.ovf",
        "vmware-pvscsi.mf",
        "vmware-pvscsi.cert",
        "vm-disk1.vmdk",
    ]
    assert details.certificate == "vmware-pvscsi.cert"
    assert details.manifest.verified is None
    assert [line.algorithm for line in details.manifest.entries] == ["SHA256", "SHA256"]
    disk = details.descriptor.disks[0]
    assert (disk.capacity_stated, disk.capacity_units, disk.capacity) == ("1", "byte * 2^30", 1 << 30)


def test_the_ovf_0_9_sections_are_read_by_xsi_type(group):
    descriptor = inspect(group, "v09.ova").container.descriptor
    assert descriptor.ovf_version == "0.9"
    assert descriptor.disks[0].disk_id == "vmdisk1"
    assert descriptor.virtual_systems[0].operating_system.cim_id == 101


def test_virtualbox_machine_gives_os_type_and_firmware(group):
    system = inspect(group, "vbox-sata.ova").container.descriptor.virtual_systems[0]
    assert (system.vbox_os_type, system.vbox_firmware) == ("Ubuntu_64", "EFI")
    assert system.operating_system.vbox_os_type == "Ubuntu_64"
    assert [d.element for d in system.devices][-2:] == ["StorageItem", "EthernetPortItem"]


# --- Reads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("small", "large"),
    [
        ("stream-1g.ova", "stream-1t.ova"),
        ("raw-1g-gnu.ova", "raw-1t-gnu.ova"),
        ("raw-1g-gnu.ova", "raw-1t-pax.ova"),
    ],
)
def test_reads_do_not_grow_with_the_disk(group, small, large):
    a, b = inspect(group, small), inspect(group, large)
    assert b.virtual_size == 1 << 40 and a.virtual_size == 1 << 30
    # One bound whatever the disk's size: the walk, the descriptor, the disk's head and tail, and
    # (for a VMDK whose grain tables fit MAX_TABLES_READ, a 1 GiB one here) one read of its tables
    # to see that no grain lies past the end.
    for report in (a, b):
        assert report.reads <= 6 and report.bytes_read <= 3 * 64 * 1024 + vmdk.MAX_TABLES_READ
    assert b.bytes_read <= 3 * 64 * 1024
    assert b.verdict == Verdict.OK


def test_the_walk_reads_headers_not_disks(group):
    """The walk, the descriptor and the disk's own head and tail: nothing of the disk's data more."""
    with FileSource(group / "vbox-sata.ova") as source:
        reader = Reader(source)
        reader.head()
        entries, findings = ova.walk(reader)
    assert findings == []
    assert [e.name for e in entries] == ["vbox-sata.ovf", "vbox-disk001.vmdk", "vbox-sata.mf"]
    # The manifest's header lies past the 1 MiB disk: one 512-byte read, then the end block.
    assert (reader.reads, reader.bytes_read) == (3, 64 * 1024 + 2 * 512)


@pytest.mark.parametrize(
    ("name", "algorithm"),
    [("vmware-pvscsi.ova", "SHA256"), ("vmware-lsisas.ova", "SHA1"), ("vbox-sata.ova", "SHA512")],
)
def test_verifying_the_manifest_reads_every_listed_file_once(group, name, algorithm):
    report = inspect(group, name, policy=Policy(verify_manifest=True))
    assert report.verdict == Verdict.OK
    manifest = report.container.manifest
    assert manifest.verified is True
    assert {line.algorithm for line in manifest.entries} == {algorithm}
    listed = sum(
        e.size for e in report.container.entries if e.name in {line.name for line in manifest.entries}
    )
    assert report.bytes_read >= listed


def test_a_manifest_mismatch_is_found_only_when_asked(group):
    assert inspect(group, "manifest-mismatch.ova").verdict == Verdict.OK
    report = inspect(group, "manifest-mismatch.ova", policy=Policy(verify_manifest=True))
    assert report.verdict == Verdict.REJECTED
    assert [f.code for f in report.findings] == ["ova.manifest_mismatch"]
    assert report.findings[0].message.startswith("the SHA256 digest of 'vm-disk1.vmdk' is ")
    assert report.findings[0].message.endswith(
        "the manifest says "
        + "0" * 64
        + ": the file was changed or damaged after export; download the OVA again"
    )
    assert report.container.manifest.verified is False


@pytest.mark.parametrize(("flag", "code"), [((), 0), (("--verify-manifest",), 1)])
def test_the_cli_verifies_on_request(group, flag, code):
    result = subprocess.run(
        [*INTROSPECT, "inspect", "--json", *flag, str(group / "manifest-mismatch.ova")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == code, result.stderr
    assert json.loads(result.stdout)["container"]["manifest"]["verified"] == (None if code == 0 else False)


# --- Hostile packages ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", HOSTILE, ids=[c["file"] for c in HOSTILE])
def test_each_hostile_package_gets_its_code(group, case):
    policy = Policy(verify_manifest=case["verify"])
    report = inspect(group, case["file"], policy=policy)
    assert report.verdict == Verdict(case["verdict"]), report.findings
    assert [f.code for f in report.findings] == case["codes"], report.findings
    assert not any(f.code == "introspect.internal_error" for f in report.findings)
    assert Report.model_validate_json(report.model_dump_json()) == report


def test_the_ovf_not_first_is_a_warning_with_what_to_do(group):
    (finding,) = inspect(group, "ovf-not-first.ova").findings
    assert finding.severity == Severity.WARN
    assert finding.message == (
        "the OVF descriptor 'vm.ovf' is not the first file of the archive (DSP0243 §5.3 puts it first, "
        "'vm-disk1.vmdk' is): a streaming import must read past the disks first"
    )


def test_hostile_messages_say_what_and_what_to_do(group):
    messages = {
        name: inspect(group, name).findings[0].message
        for name in (
            "symlink.ova",
            "bad-checksum.ova",
            "negative-size.ova",
            "xxe.ova",
            "truncated.ova",
            "many-entries.ova",
        )
    }
    assert messages["symlink.ova"].startswith(
        "the archive entry 'vm-disk1.vmdk' is a symbolic link to '/etc/shadow': an OVA holds regular files only"
    )
    assert messages["bad-checksum.ova"].startswith("the tar header's chksum is ")
    assert (
        "expected " in messages["bad-checksum.ova"]
        and "(the sum of the header's bytes)" in messages["bad-checksum.ova"]
    )
    assert messages["negative-size.ova"].startswith(
        "the tar header's size is 'ffffffffffffffffffffffff', expected not negative"
    )
    assert messages["xxe.ova"].startswith(
        "the OVF descriptor declares a DTD (DTDForbidden(name='Envelope', system_id=None, public_id=None)): "
        "OVF needs none"
    )
    assert messages["truncated.ova"] == (
        "the archive entry 'vm-disk1.vmdk' needs bytes 6656..203264 but the archive ends at 102400: the OVA "
        "was cut short; upload it again (at offset 6656)"
    )
    assert messages["many-entries.ova"].startswith("the archive holds more than 64 entries")


def test_a_pax_record_longer_than_its_header_is_refused():
    data = b"9999 path=disk.vmdk\n"
    with pytest.raises(introspect.ImageError) as raised:
        ova._pax_records(data, 0)
    assert raised.value.rule.code == "ova.tar_header"
    assert str(raised.value).startswith(
        "a pax record's length is 9999, expected at most the 20 bytes left in its header"
    )


def test_a_tar_without_a_descriptor_is_not_an_ova(tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    archive = tmp_path / "plain.tar"
    subprocess.run(["tar", "--format=ustar", "-cf", str(archive), "-C", str(tmp_path), disk.name], check=True)
    report = introspect.inspect(archive)
    assert (report.format, report.container_format) == ("raw", "bare")
    assert "container" not in json.loads(report.model_dump_json())


# --- The bare descriptor, and the Report's shape -------------------------------------------------


def test_a_bare_descriptor_is_container_ovf(group):
    report = inspect(group, "bare.ovf")
    assert (report.format, report.container_format, report.verdict) == (None, "ovf", Verdict.ERROR)
    assert [f.code for f in report.findings] == ["ovf.descriptor_only"]
    assert report.container.kind == "ovf"
    assert report.container.boot_disk.file_href == "vm-disk1.vmdk"
    assert report.reads == 1


def test_a_bare_images_json_has_no_container_or_members(tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    data = json.loads(introspect.inspect(disk).model_dump_json())
    assert "container" not in data and "members" not in data
    assert Report.model_validate(data) == introspect.inspect(disk)


def test_an_ova_report_round_trips_through_json(group):
    report = inspect(group, "nvme.ova")
    data = json.loads(report.model_dump_json())
    assert len(data["members"]) == 2 and data["container"]["kind"] == "ova"
    assert Report.model_validate_json(report.model_dump_json()) == report


def test_the_schema_keeps_the_report_at_the_top():
    schema = Report.model_json_schema()
    assert schema["title"] == "Report"
    assert {"container", "members", "format", "details"} <= schema["properties"].keys()
    assert schema["properties"]["members"]["items"] == {"$ref": "#/$defs/Report"}
    assert "Report" in schema["$defs"]


# --- OVF parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "multiplier"),
    [
        (None, 1),
        ("byte", 1),
        ("byte * 2^30", 1 << 30),
        ("byte * 10^9", 10**9),
        ("MegaBytes", 1 << 20),
        ("hertz * 10^6", None),
    ],
)
def test_allocation_units(units, multiplier):
    assert ovf.unit_multiplier(units) == multiplier


@pytest.mark.parametrize(
    ("os_type", "expected"),
    [
        ("ubuntu64Guest", ("linux", "ubuntu", None, "x86_64")),
        ("debian10_64Guest", ("linux", "debian", "10", "x86_64")),
        ("rhel7Guest", ("linux", "rhel", "7", "i686")),
        ("windows2019srv_64Guest", ("windows", "windows", None, "x86_64")),
        ("other4xLinux64Guest", ("linux", None, None, "x86_64")),
        ("otherGuest", (None, None, None, None)),
    ],
)
def test_vmware_os_types(os_type, expected):
    found = ovf.from_vmw(os_type)
    assert (found.os_type, found.os_distro, found.os_version, found.architecture) == expected


def test_the_descriptor_is_capped_before_it_is_parsed():
    with pytest.raises(introspect.ImageError) as raised:
        ovf.parse_ovf(b" " * (ovf.MAX_OVF_SIZE + 1))
    assert raised.value.rule.code == "ova.ovf_size"


def test_an_xml_file_that_is_not_an_envelope_is_invalid():
    with pytest.raises(introspect.ImageError) as raised:
        ovf.parse_ovf(b"<?xml version='1.0'?><html/>")
    assert raised.value.rule.code == "ova.ovf_invalid"
    assert str(raised.value).startswith("the descriptor's root element is 'html', not an OVF Envelope")


def test_a_bytes_source_ova_is_read_in_place(group):
    data = (group / "vmware-pvscsi.ova").read_bytes()
    report = introspect.inspect(BytesSource(data, "in-memory.ova"))
    assert (report.format, report.container_format, report.verdict) == ("vmdk", "ova", Verdict.OK)


@pytest.mark.parametrize(
    ("resource_type", "subtypes", "expected"),
    [
        (6, ["LsiLogicSas"], ("scsi", "lsiLogicsas", "scsi", "lsisas1068")),
        (6, ["VirtualSCSI"], ("scsi", "paraVirtual", "scsi", "vmpvscsi")),
        (6, ["buslogic"], ("scsi", "busLogic", "scsi", None)),  # QEMU has no BusLogic: see vmdk.ADAPTERS
        (5, ["PIIX4"], ("ide", "ide", "ide", None)),
        (5, [], ("ide", "ide", "ide", None)),
        (20, ["vmware.sata.ahci"], ("sata", None, "sata", None)),
        (20, ["NVMe"], ("nvme", None, None, None)),
        (6, ["virtio", "lsilogic"], ("scsi", None, "scsi", "virtio-scsi")),
        (6, ["unknown-hba"], None),
    ],
)
def test_controllers_in_novas_words(resource_type, subtypes, expected):
    found = ovf.controller_of(
        ovf.OvfDevice(element="Item", resource_type=resource_type, resource_subtypes=subtypes)
    )
    assert (
        (found.bus, found.vmware_adaptertype, found.hw_disk_bus, found.hw_scsi_model) if found else None
    ) == expected


# --- A tar holding disk.raw (Compute Engine's import), GNU sparse entries -------------------------


@pytest.mark.parametrize(
    ("name", "outer", "size"),
    [
        ("gce-sparse.tar.gz", "gzip", 2 << 30),
        ("gce-sparse.tar", "tar", 2 << 30),
        ("gce-plain.tar.gz", "gzip", 64 << 20),
    ],
)
def test_a_tar_holding_disk_raw_is_a_container(group, name, outer, size):
    report = inspect(group, name)
    assert (report.format, report.container_format, report.virtual_size) == ("raw", outer, size)
    assert report.container.kind == "tar"
    assert [e.name for e in report.container.entries] == ["disk.raw"]


def test_a_sparse_disk_raw_reads_through_its_map(group):
    """`tar -S` (GNU sparse): the GPT sgdisk wrote at the start and the end of a 2 GiB disk is read
    through the map, and the EFI System Partition it names is UEFI evidence."""
    report = inspect(group, "gce-sparse.tar.gz")
    (entry,) = report.container.entries
    assert (entry.kind, entry.type_flag, entry.real_size) == ("sparse", "S", 2 << 30)
    assert entry.sparse_regions >= 2 and entry.size < 1 << 20
    assert report.verdict == Verdict.OK and report.findings == []
    assert report.properties["hw_firmware_type"] == "uefi"
    assert report.reads == 1


def test_a_sparse_source_reads_zeros_between_regions():
    data = BytesSource(b"AAAABBBB")
    sparse = ova.SparseSource(data, [(2, 4), (10, 4)], 16, "sparse")
    assert sparse.pread(0, 16) == b"\0\0AAAA\0\0\0\0BBBB\0\0"
    assert sparse.pread(4, 8) == b"AA\0\0\0\0BB"
    assert sparse.size == 16


def test_a_compressed_head_only_walks_as_far_as_it_holds(group):
    """The plain (non-sparse) disk runs past the 4 MiB decompressed head: the walk stops there,
    the size is the tar header's, and what needs the disk's end is unknown (compressed.partial;
    the GPT's backup header, at the end, is not seen)."""
    report = inspect(group, "gce-plain.tar.gz")
    # The guest pass reads the GPT's partitions as far as the head holds them, and says so.
    assert [f.code for f in report.findings] == ["gpt.backup_header", "guest.partial", "compressed.partial"]
    assert report.verdict == Verdict.OK


def test_a_tar_with_more_than_disk_raw_is_not_a_container(group):
    report = inspect(group, "two-files.tar")
    assert (report.format, report.container_format) == ("raw", "bare")
    assert [f.code for f in report.findings] == ["raw.not_a_disk_image"]


def test_sparse_regions_out_of_order_are_refused():
    header = bytearray(ova.BLOCK)
    entries = b"%011o\0%011o\0" % (4096, 512) + b"%011o\0%011o\0" % (0, 512)
    start = ova.GnuSparseHeader.offset_of("sparse")
    header[start : start + len(entries)] = entries
    real = ova.GnuSparseHeader.offset_of("realsize")
    header[real : real + 12] = b"%011o\0" % 8192
    with pytest.raises(introspect.ImageError) as raised:
        ova._sparse_map(Reader(BytesSource(bytes(header))), bytes(header), 0)
    assert raised.value.rule.code == "ova.tar_header"
    assert str(raised.value).startswith("a GNU sparse region is (0, 512), expected in order, apart")


# --- The declared container_format -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "declared", "mismatch"),
    [
        ("vmware-pvscsi.ova", "ova", None),
        ("vmware-pvscsi.ova", "ovf", None),
        (
            "vmware-pvscsi.ova",
            "bare",
            "declared as container_format=bare but the content is ova holding vmdk: set container_format=ova, "
            "or upload what was declared",
        ),
        ("gce-sparse.tar.gz", "compressed", None),
        (
            "gce-sparse.tar",
            "bare",
            "declared as container_format=bare but the content is tar holding raw: upload the disk image itself, "
            "or upload what was declared",
        ),
        ("vmware-pvscsi.ova", "docker", None),
    ],
)
def test_the_declared_container_format_is_checked_against_the_content(group, name, declared, mismatch):
    report = introspect.inspect(group / name, expect_container=declared)
    codes = [f for f in report.findings if f.code == "image.container_mismatch"]
    assert [f.message for f in codes] == ([mismatch] if mismatch else [])
    assert report.verdict == (Verdict.REJECTED if mismatch else Verdict.OK)


def test_a_bare_image_declared_ova_is_a_mismatch(tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    report = introspect.inspect(disk, expect_container="ova")
    assert [f.message for f in report.findings] == [
        "declared as container_format=ova but the content is bare holding qcow2: set container_format=bare, "
        "or upload what was declared"
    ]
    assert report.verdict == Verdict.REJECTED
    assert introspect.inspect(disk, expect_container="bare").findings == []


def test_a_capacity_the_disk_does_not_have_is_a_warning(group):
    (finding,) = inspect(group, "capacity-lie.ova").findings
    assert (finding.code, finding.severity) == ("ova.capacity", Severity.WARN)
    assert finding.message.startswith(
        f"the OVF descriptor gives 'vm-disk1.vmdk' a capacity of {2 << 30} bytes, the disk itself {1 << 30}: "
        "an importer that sizes the disk from the descriptor (ovftool, vCenter) would make it too large"
    )


@pytest.mark.parametrize("encoding", [b"zUTF-8", b"UTF-7"])
def test_a_descriptor_in_an_encoding_the_parser_cannot_read_is_invalid(group, encoding):
    """Found by `make fuzz`: the XML declaration's encoding reached Python's codec lookup (an
    unknown name) or expat (UTF-7: "multi-byte encodings are not supported")."""
    real = (group / "bare.ovf").read_bytes()
    data = real.replace(b'encoding="UTF-8"', b'encoding="' + encoding + b'"', 1)
    assert data != real
    with pytest.raises(introspect.ImageError) as raised:
        ovf.parse_ovf(data)
    assert raised.value.rule.code == "ova.ovf_invalid"
    assert str(raised.value).startswith("the OVF descriptor's encoding cannot be read (")
    report = introspect.inspect(BytesSource(data, "odd.ovf"))
    assert [f.code for f in report.findings] == ["ova.ovf_invalid"]
