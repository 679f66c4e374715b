"""The guest pass end to end, through `introspect.inspect`, on the disks of fixtures/make/guest.sh:
real Debian roots (mmdebstrap) and a Windows system volume, partitioned as installers partition
them, converted by qemu-img into every container, and installer ISOs.

Every expectation comes from what the tools recorded beside each source disk while building it:
the os-release file copied out of the root, `readelf -h` of /bin/sh's target, the kernels in
/boot, `file` of each EFI loader, `sfdisk --json`, `hivexget` of the hives, `.disk/info` and
`.treeinfo`; and libguestfs' own inspection of the same disks (fixtures/make/guest-libguestfs.sh).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest

import introspect
from introspect import vocabulary
from introspect.guest.model import Source
from introspect.safety import Policy
from introspect.sources import Budget
from tests.conftest import fixture_group

GROUP = "guest"
#: blkid's names of the filesystems the guest pass reads (their label and UUID too).
READ = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "ntfs", "iso9660"})
#: Glance's os_distro words.
DISTROS = frozenset(vocabulary.PROPERTIES["os_distro"]["enum"])
#: What `readelf -h` calls each machine -> Nova's word.
READELF_MACHINES = {"Advanced Micro Devices X86-64": "x86_64", "AArch64": "aarch64"}
#: What `file` calls a PE's machine -> Nova's word.
FILE_MACHINES = {"x86-64": "x86_64", "Aarch64": "aarch64", "Intel 80386": "i686"}


def images() -> list[str]:
    return sorted(
        path.name
        for path in fixture_group(GROUP).iterdir()
        if not path.name.startswith(".") and not path.name.endswith((".txt", ".json"))
    )


def source_of(name: str) -> Path:
    """The raw disk an image was converted from (an ISO is its own)."""
    group = fixture_group(GROUP)
    return group / name if name.endswith(".iso") else group / f"{name.split('.')[0]}.raw"


@cache
def recorded_roots(source: Path) -> dict[str, dict[str, str]]:
    """device -> the os-release a root holds, as copied out of it while the disk was built."""
    roots = {}
    for path in source.parent.glob(f"{source.name}.*.os-release.txt"):
        volume = path.name.removeprefix(f"{source.name}.").removesuffix(".os-release.txt")
        device = "/dev/" + volume.replace(".", "/") if "." in volume else f"/dev/{volume}"
        roots[device] = dict(
            line.split("=", 1) for line in shlex.split(path.read_text(), comments=True) if "=" in line
        )
    return roots


def recorded(source: Path, device: str, what: str) -> str:
    volume = device.removeprefix("/dev/").replace("/", ".")
    return (source.parent / f"{source.name}.{volume}.{what}.txt").read_text()


def readelf_machine(source: Path, device: str) -> str:
    machine = re.search(r"^\s*Machine:\s*(.+?)\s*$", recorded(source, device, "readelf"), re.MULTILINE)
    assert machine is not None
    return READELF_MACHINES[machine[1]]


def libguestfs(source: Path) -> dict | None:
    path = fixture_group("guest-libguestfs") / f"{source.name}.libguestfs.json"
    return json.loads(path.read_text()) if path.exists() else None


@cache
def inspected(name: str) -> introspect.Report:
    return introspect.inspect(fixture_group(GROUP) / name)


@pytest.mark.parametrize("name", images())
def test_every_image_is_ok_within_the_guest_budget(name):
    report = inspected(name)
    assert report.verdict == "ok", report.findings
    assert report.guest is not None
    assert report.guest.reads <= 512 and report.guest.bytes_read <= 4 << 20
    assert (report.guest.max_reads, report.guest.max_bytes) == (512, 4 << 20)
    # the goal: at most 2 MiB a guest
    assert report.guest.bytes_read <= 2 << 20
    assert not [f for f in report.findings if f.code in ("guest.internal_error", "guest.budget")]


@pytest.mark.parametrize("name", [n for n in images() if recorded_roots(source_of(n))])
def test_each_linux_root_is_what_its_os_release_says(name):
    source = source_of(name)
    report = inspected(name)
    roots = recorded_roots(source)
    found = {system.device: system for system in report.guest.systems}
    assert set(found) == set(roots)
    for device, release in roots.items():
        system = found[device]
        assert system.os_type == "linux"
        assert (system.os_id, system.version, system.name) == (
            release["ID"],
            release.get("VERSION_ID"),
            release.get("PRETTY_NAME"),
        )
        assert system.distro == (release["ID"] if release["ID"] in DISTROS else None)
        assert system.architecture == readelf_machine(source, device)
        assert system.kernels == [
            k.removeprefix("vmlinuz-") for k in recorded(source, device, "kernels").split()
        ]
        assert system.sources["os_id"] == Source(
            device=device, filesystem=system.filesystem, path="/etc/os-release"
        )
        assert system.sources["architecture"].path == "/bin/sh"  # a link to what sh.txt names


@pytest.mark.parametrize("name", [n for n in images() if len(recorded_roots(source_of(n))) == 1])
def test_one_root_gives_the_os_properties(name):
    source = source_of(name)
    [(device, release)] = recorded_roots(source).items()
    properties = inspected(name).properties
    assert properties["os_type"] == "linux"
    assert properties["os_version"] == release["VERSION_ID"]
    assert properties["introspect_os_id"] == release["ID"]
    assert properties["architecture"] == readelf_machine(source, device)
    if release["ID"] in DISTROS:
        assert properties["os_distro"] == release["ID"]
    dpkg = source.parent / f"{source.name}.{device.removeprefix('/dev/')}.dpkg.txt"
    if dpkg.exists():
        installed = {line.split("\t")[0] for line in dpkg.read_text().splitlines()}
        assert ("hw_qemu_guest_agent" in properties) == ("qemu-guest-agent" in installed)
        assert ("introspect_cloud_init" in properties) == ("cloud-init" in installed)
    for key, value in properties.items():
        assert vocabulary.check(key, value) is None, (key, value)


@pytest.mark.parametrize("name", [n for n in images() if recorded_roots(source_of(n))])
def test_libguestfs_agrees(name):
    """libguestfs' own inspection of the source disk (recorded once, its appliance takes a minute)."""
    answer = libguestfs(source_of(name))
    assert answer is not None, "every disk with a root has libguestfs' answer recorded"
    ours = {s.device: s for s in inspected(name).guest.systems}
    theirs = {root["root"]: root for root in answer["roots"]}
    assert set(ours) == set(theirs)
    for device, root in theirs.items():
        system = ours[device]
        assert (system.os_type, system.os_id, system.architecture, system.osinfo) == (
            root["type"],
            root["distro"],
            root["arch"],
            root["osinfo"],
        )
        assert system.version.split(".")[0] == str(root["major_version"])


@pytest.mark.parametrize("name", [n for n in images() if not n.endswith(".iso")])
def test_the_volumes_are_the_partitions_sfdisk_made(name):
    source = source_of(name)
    table = json.loads((source.parent / f"{source.name}.sfdisk.json").read_text())["partitiontable"]
    extended = {"5", "f", "85"}  # the containers of logical partitions are not volumes
    expected = [
        "/dev/sda" + p["node"].removeprefix(source.name)
        for p in table["partitions"]
        if p["type"] not in extended
    ]
    volumes = inspected(name).guest.volumes
    assert [v.device for v in volumes if v.device.startswith("/dev/sda")] == expected
    for volume in volumes:
        blkid = (
            source.parent / f"{source.name}.{volume.device.removeprefix('/dev/').replace('/', '.')}.blkid.txt"
        )
        if blkid.exists():
            said = dict(line.split("=", 1) for line in shlex.split(blkid.read_text()) if "=" in line)
            assert volume.filesystem == said.get("TYPE"), volume.device
            if volume.filesystem in READ:  # named only (swap, LVM2_member): no label or UUID read
                assert (volume.uuid, volume.label) == (said.get("UUID"), said.get("LABEL")), volume.device


@pytest.mark.parametrize(
    "name", [n for n in images() if list(source_of(n).parent.glob(f"{source_of(n).name}.*.efi-file.txt"))]
)
def test_the_esp_loaders_are_the_files_file_named(name):
    source = source_of(name)
    [listing] = source.parent.glob(f"{source.name}.*.efi-file.txt")
    expected = {}
    for line in listing.read_text().splitlines():
        path, description = line.split("\t", 1)
        machine = re.search(r"\(EFI application\) (.+?) \(", description)
        assert machine is not None, line
        expected[path.upper()] = FILE_MACHINES[machine[1]]
    guest = inspected(name).guest
    found = {loader.path.upper(): loader.architecture for loader in guest.loaders}
    assert found == {path: arch for path, arch in expected.items() if path.endswith(".EFI")}
    shims = sorted(loader.path.rsplit("/", 1)[-1].lower() for loader in guest.loaders if loader.shim)
    assert shims and all(name.startswith(("shim", "boot")) for name in shims)
    assert inspected(name).properties["introspect_secure_boot_capable"] == "yes"


def test_firmware_is_what_the_partition_types_and_loaders_point_to():
    """Debian's cloud layout has a BIOS boot partition (ef02) and an ESP (ef00): hybrid, and no
    hw_firmware_type; its BIOS-only sibling is bios, the arm64 one (ESP only) uefi."""
    uefi = json.loads((source_of("debian-uefi.raw").parent / "debian-uefi.raw.sfdisk.json").read_text())
    types = {p["type"].upper() for p in uefi["partitiontable"]["partitions"]}
    assert {"21686148-6449-6E6F-744E-656564454649", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"} <= types
    for name in ("debian-uefi.raw", "debian-uefi.qcow2", "debian-uefi.stream.vmdk"):
        assert inspected(name).guest.firmware == "hybrid"
        assert "hw_firmware_type" not in inspected(name).properties
    assert inspected("debian-arm64.qcow2").properties["hw_firmware_type"] == "uefi"
    assert inspected("debian-bios.qcow2").properties["hw_firmware_type"] == "bios"


def test_a_windows_system_volume():
    source = source_of("windows.raw")
    hive = recorded(source, "/dev/sda2", "hivexget")
    values: dict[str, str] = {}
    for key, text, number in re.findall(r'^"(\w+)"=(?:"(.*)"|dword:([0-9a-f]{8}))$', hive, re.MULTILINE):
        values.setdefault(key, str(int(number, 16)) if number else text)  # SOFTWARE's come first
    pe = recorded(source, "/dev/sda2", "pe-file")
    for name in ("windows.raw", "windows.qcow2", "windows.vhdx"):
        [system] = inspected(name).guest.systems
        assert (system.os_type, system.os_id, system.device, system.filesystem) == (
            "windows",
            "windows",
            "/dev/sda2",
            "ntfs",
        )
        assert (
            system.version == f"{values['CurrentMajorVersionNumber']}.{values['CurrentMinorVersionNumber']}"
        )
        assert (system.build, system.name, system.edition) == (
            values["CurrentBuild"],
            values["ProductName"],
            values["EditionID"],
        )
        assert system.architecture == "x86_64" and "x86-64" in pe
        assert system.osinfo == "win2k19"  # libosinfo's id of Windows Server 2019 (build 17763)
        assert sorted(system.virtio_drivers) == sorted(
            re.findall(r"^\[SYSTEM\\ControlSet001\\Services\\(\w+)\]$", hive, re.MULTILINE)
        )
        properties = inspected(name).properties
        assert (properties["os_type"], properties["os_distro"], properties["os_version"]) == (
            "windows",
            "windows",
            "10.0",
        )
        assert properties["introspect_os_build"] == values["CurrentBuild"]


def test_installer_isos_say_what_they_install():
    group = fixture_group(GROUP)
    info = (group / "debian-12.5.0-amd64-netinst.iso.disk-info.txt").read_text()
    [debian] = inspected("debian-12.5.0-amd64-netinst.iso").guest.systems
    assert debian.installer and debian.name == info.strip()
    assert (debian.os_id, debian.version, debian.architecture) == (
        "debian",
        re.search(r" (\d+\.\d+\.\d+) ", info)[1],
        "x86_64",
    )
    treeinfo = (group / "fedora-39-x86_64-dvd.iso.treeinfo.txt").read_text()
    [fedora] = inspected("fedora-39-x86_64-dvd.iso").guest.systems
    version = re.search(r"^\[release\][^[]*?^version = (\S+)$", treeinfo, re.MULTILINE | re.DOTALL)[1]
    arch = re.search(r"^arch = (\S+)$", treeinfo, re.MULTILINE)[1]
    assert (fedora.installer, fedora.os_id, fedora.version, fedora.architecture) == (
        True,
        "fedora",
        version,
        arch,
    )
    assert fedora.osinfo == f"fedora{version}"


def test_two_roots_write_no_os_property():
    report = inspected("dual-boot.qcow2")
    assert len(report.guest.systems) == len(recorded_roots(source_of("dual-boot.qcow2"))) == 2
    assert [f.code for f in report.findings] == ["guest.multiple_roots"]
    assert not {"os_type", "os_distro", "os_version", "architecture"} & set(report.properties)


def test_a_disk_without_a_system_has_volumes_and_no_os():
    for name in ("blank.raw", "blank.qcow2", "blank.vhd"):
        report = inspected(name)
        assert report.guest.systems == [] and report.guest.volumes
        assert not {"os_type", "os_distro"} & set(report.properties)


def test_a_small_guest_budget_stops_with_a_finding_and_keeps_the_header_facts():
    path = fixture_group(GROUP) / "debian-uefi.qcow2"
    report = introspect.inspect(path, guest_budget=Budget(max_reads=8, max_bytes=1 << 20))
    assert report.verdict == "ok" and report.format == "qcow2"
    assert [f.code for f in report.findings] == ["guest.budget"]
    assert report.guest.reads <= 8 and report.guest.systems == []
    assert report.virtual_size == inspected("debian-uefi.qcow2").virtual_size


def test_no_guest_reads_headers_only():
    report = introspect.inspect(fixture_group(GROUP) / "debian-uefi.qcow2", guest=False)
    assert report.guest is None and "os_type" not in report.properties
    assert "guest" not in report.model_dump(mode="json")


def test_a_vmware_cloud_policy_leaves_os_distro_out():
    """Nova's VMware driver hands os_distro to vSphere as the guest id: such a cloud turns it off."""
    path = fixture_group(GROUP) / "debian-bios.stream.vmdk"
    report = introspect.inspect(path, policy=Policy(guest_os_distro=False))
    assert "os_distro" not in report.properties
    assert report.properties["os_type"] == "linux" and report.properties["introspect_os_id"] == "debian"
    assert inspected("debian-bios.stream.vmdk").properties["os_distro"] == "debian"


def test_an_ovas_boot_disk_is_read_in_place_and_its_files_outrank_the_descriptor():
    """vCenter's descriptor declares debian10_64Guest; the disk's own os-release says 12."""
    source = source_of("debian-uefi.ova")
    descriptor = (source.parent / "debian-uefi.ova.ovf.txt").read_text()
    assert 'vmw:osType="debian10_64Guest"' in descriptor
    report = inspected("debian-uefi.ova")
    assert (report.container_format, report.format) == ("ova", "vmdk")
    [(device, release)] = recorded_roots(source).items()
    assert report.properties["os_version"] == release["VERSION_ID"] == "12"
    assert report.properties["vmware_ostype"] == "debian10_64Guest"  # what the exporter declared stays
    assert [s.device for s in report.guest.systems] == [device]
    assert report.members[0].guest == report.guest


def test_an_overlay_is_read_alone_and_says_its_backing_file_holds_the_rest(tmp_path):
    """qemu-img's overlay of a real Debian, inspected under a policy that lets backing files be:
    the base is never opened, so the overlay's guest is its own (empty) clusters, and a finding says
    where the rest is."""
    base = fixture_group(GROUP) / "debian-uefi.qcow2"
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay)], check=True
    )
    assert introspect.inspect(overlay).guest is None  # rejected (qcow2.backing_file): not read further
    report = introspect.inspect(overlay, policy=Policy(severity={"qcow2.backing_file": "warn"}))
    codes = [f.code for f in report.findings]
    assert codes == ["qcow2.backing_file", "guest.backing_missing"]
    assert str(base) in report.findings[1].message
    assert report.guest.systems == [] and "os_type" not in report.properties
