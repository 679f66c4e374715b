"""The guest fixtures' recordings agree with each other (fixtures/make/guest.sh, guest-libguestfs.sh).

Not introspect's tests: these check that what the real tools said about each source disk is
consistent (libguestfs' inspection names the system its os-release, hives and ELF headers say), so
that the end-to-end tests can take any of them as the expected answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded

#: readelf -h's Machine line -> libguestfs' arch word
READELF_MACHINES = {"Advanced Micro Devices X86-64": "x86_64", "AArch64": "aarch64"}
#: `file -b`'s word for a PE's machine -> libguestfs' arch word
PE_MACHINES = {"x86-64": "x86_64", "Aarch64": "aarch64"}


def sources() -> list[Path]:
    group = fixture_group("guest")
    return sorted([*group.glob("*.raw"), *group.glob("*.iso")])


def libguestfs(source: Path) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(
        (fixture_group("guest-libguestfs") / f"{source.name}.libguestfs.json").read_text()
    )
    return answer


def token(root: str) -> str:
    """libguestfs' name of a root as the recordings name it: /dev/sda2 and btrfsvol:/dev/sda2/@ ->
    sda2, /dev/debian-vg/root -> debian-vg.root."""
    device = root.removeprefix("btrfsvol:")
    if root.startswith("btrfsvol:"):
        device = "/".join(device.split("/")[:3])
    return device.removeprefix("/dev/").replace("/", ".")


def os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key] = value.strip().strip('"')
    return values


def hive_values(text: str) -> dict[str, dict[str, str]]:
    """hivexget's output as recorded: [HIVE\\KEY] headers, then "name"=value lines."""
    keys: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            current = keys.setdefault(line.strip("[]"), {})
        elif "=" in line:
            name, _, value = line.partition("=")
            current[name.strip('"')] = value
    return keys


def readelf_arch(text: str) -> str:
    machine = re.search(r"Machine:\s+(.+)", text)
    assert machine, text
    return READELF_MACHINES[machine.group(1).strip()]


@pytest.fixture(scope="module", params=sources(), ids=lambda p: p.name)
def source(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_every_source_was_inspected_by_libguestfs(source):
    """An answer for every source: its roots, or (roots null) libguestfs' error refusing it."""
    answer = libguestfs(source)
    assert answer["image"] == source.name
    assert answer["format"] == "raw"
    assert answer["libguestfs"]
    assert (answer["roots"] is None) == ("error" in answer)


def roots_of(source: Path) -> list[dict[str, Any]]:
    roots: list[dict[str, Any]] = libguestfs(source)["roots"] or []
    return roots


def test_libguestfs_finds_a_root_where_an_os_release_was_recorded(source):
    """Each Linux root libguestfs names has its os-release recorded, and libguestfs names each one
    the build recorded: the same distribution, architecture and version. For Debian, libguestfs
    takes the minor version and the product name from /etc/debian_version (os-release has no
    minor), so its 12.15 is debian_version's."""
    roots = {token(root["root"]): root for root in roots_of(source) if root["type"] == "linux"}
    recorded_roots = {
        p.name.removeprefix(f"{source.name}.").removesuffix(".os-release.txt")
        for p in source.parent.glob(f"{source.name}.*.os-release.txt")
    }
    assert set(roots) == recorded_roots
    for name, root in roots.items():
        release = os_release(recorded(source, f"{name}.os-release.txt"))
        assert root["distro"] == release["ID"]
        assert root["major_version"] == int(release["VERSION_ID"].split(".")[0])
        debian_version = recorded(source, f"{name}.debian_version.txt").strip()
        assert root["product_name"] == debian_version
        assert root["minor_version"] == int(debian_version.split(".")[1])
        assert root["arch"] == readelf_arch(recorded(source, f"{name}.readelf.txt"))
        assert root["osinfo"] == f"{release['ID']}{release['VERSION_ID']}"
        assert root["hostname"] == recorded(source, f"{name}.hostname.txt").strip()


def test_a_root_s_fstab_names_filesystems_blkid_found(source):
    """Every UUID= in a recorded fstab is the UUID blkid read from one of the disk's volumes."""
    uuids = {
        line.partition("=")[2]
        for blkid in source.parent.glob(f"{source.name}.*.blkid.txt")
        for line in blkid.read_text().splitlines()
        if line.startswith("UUID=")
    }
    for fstab in source.parent.glob(f"{source.name}.*.fstab.txt"):
        for line in fstab.read_text().splitlines():
            if line.startswith("UUID="):
                assert line.split()[0].removeprefix("UUID=").lower() in {u.lower() for u in uuids}, line


def test_libguestfs_mountpoints_follow_the_fstab(source):
    """libguestfs mounts what the fstab names by UUID= or device path; it (1.48) drops the
    PARTUUID= entries Debian's cloud images use, and falls back to the root alone."""
    for root in roots_of(source):
        if root["type"] != "linux":
            continue
        fstab = recorded(source, f"{token(root['root'])}.fstab.txt")
        entries = [line.split() for line in fstab.splitlines() if line and not line.startswith("#")]
        mounted = {mp for spec, mp, *_ in entries if mp != "none" and not spec.startswith("PARTUUID=")}
        assert set(root["mountpoints"]) == (mounted or {"/"})


def test_windows_answers_are_the_hive_values():
    source = fixture_group("guest") / "windows.raw"
    (root,) = libguestfs(source)["roots"]
    hives = hive_values(recorded(source, "sda2.hivexget.txt"))
    current = hives["SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"]
    assert root["type"] == "windows"
    assert root["product_name"] == current["ProductName"].strip('"')
    assert root["product_variant"] == current["InstallationType"].strip('"')
    assert root["major_version"] == int(current["CurrentMajorVersionNumber"].removeprefix("dword:"), 16)
    assert root["minor_version"] == int(current["CurrentMinorVersionNumber"].removeprefix("dword:"), 16)
    assert root["osinfo"] == "win2k19"
    assert root["hostname"] == hives["SYSTEM\\ControlSet001\\Services\\Tcpip\\Parameters"]["Hostname"].strip(
        '"'
    )
    assert root["windows_current_control_set"] == "ControlSet001"
    assert root["drive_mappings"] == {"C": root["root"]}
    pe = dict(line.split("\t") for line in recorded(source, "sda2.pe-file.txt").splitlines())
    assert "PE32+ executable" in pe["/Windows/System32/cmd.exe"]
    assert root["arch"] == PE_MACHINES[pe["/Windows/System32/cmd.exe"].split(")", 1)[1].split(",")[0].strip()]


def test_sources_without_an_installed_system():
    """No root on the blank disk, nor on the installer ISOs: libguestfs no longer inspects install
    media (since 1.38), and refuses the isohybrid one outright (its sgdisk finds the hybrid MBR and
    GPT overlapping)."""
    group = fixture_group("guest")
    assert libguestfs(group / "blank.raw")["roots"] == []
    for name in ("debian-12.5.0-amd64-netinst.iso", "fedora-39-x86_64-dvd.iso"):
        assert not roots_of(group / name), name
    assert "Debian 12.5.0 amd64 n" in recorded(group / "debian-12.5.0-amd64-netinst.iso", "isoinfo.txt")
    assert "family = Fedora" in recorded(group / "fedora-39-x86_64-dvd.iso", "treeinfo.txt")


def test_two_roots_on_the_dual_boot_disk():
    roots = roots_of(fixture_group("guest") / "dual-boot.raw")
    assert sorted((r["distro"], r["major_version"]) for r in roots) == [("debian", 12), ("debian", 13)]


def test_esp_loaders_are_pe_files_of_the_root_s_architecture(source):
    """Each ESP holds EFI applications (`file -b`) for the architecture of the disk's root."""
    roots = roots_of(source)
    for listing in source.parent.glob(f"{source.name}.*.efi-file.txt"):
        loaders = dict(line.split("\t") for line in listing.read_text().splitlines())
        assert loaders, listing
        machines = {text.split("(EFI application) ")[1].split()[0] for text in loaders.values()}
        assert {PE_MACHINES[m] for m in machines} == {r["arch"] for r in roots} or not roots, listing


def test_every_container_holds_its_source_s_disk(source):
    """qemu-img's virtual size of each container is at least its source's size (a plain VHD is
    rounded up to a CHS geometry)."""
    size = source.stat().st_size
    stem = source.name.removesuffix(".raw")
    for sidecar in source.parent.glob(f"{stem}.*.qemu-img.json"):
        image = sidecar.with_name(sidecar.name.removesuffix(".qemu-img.json"))
        if image == source or source.suffix == ".iso":
            continue
        assert qemu_info(image)["virtual-size"] >= size, image.name


def test_lvm_report_names_the_logical_volumes():
    source = fixture_group("guest") / "debian-lvm.raw"
    lvm = json.loads(recorded(source, "lvm.json"))
    assert {lv["lv_name"] for lv in lvm["lvs"]["report"][0]["lv"]} == {"root", "swap_1"}
    assert "TYPE=swap" in recorded(source, "debian-vg.swap_1.blkid.txt")
    assert "TYPE=ext4" in recorded(source, "debian-vg.root.blkid.txt")
