"""The guest pass: one walk over the guest's disk, from its volumes to the facts on them.

`inspect_guest(view)` reads the disk a format's guest view presents (through the guest pass's own
metered Reader, which the caller built with the guest budget): the partition table and the LVM
volumes on it, each volume's filesystem, and on each filesystem the facts of an installed Linux or
Windows, an installer's media, or an EFI System Partition's loaders. What could not be read is a
`guest.*` finding and the walk goes on with the next volume; only the budget stops it (every
later read would be refused too). What was found is kept: a partial answer, said to be partial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from introspect import vocabulary
from introspect.errors import BudgetExceeded, BytesNotKept, ImageError
from introspect.formats.base import GuestView
from introspect.formats.partitions import boot_evidence
from introspect.guest import fs as filesystems
from introspect.guest.disk import Disk
from introspect.guest.fs.base import Filesystem
from introspect.guest.model import GuestDetails, Loader, OperatingSystem, Volume
from introspect.guest.volumes import Volumes, find_volumes
from introspect.model import Finding
from introspect.safety import (
    DEFAULT_POLICY,
    GUEST_BACKING_MISSING,
    GUEST_BUDGET,
    GUEST_MULTIPLE_ROOTS,
    GUEST_PARTIAL,
    GUEST_UNREADABLE,
    GUEST_UNSUPPORTED_FS,
    Policy,
)
from introspect.sources import Reader

T = TypeVar("T")

#: What blkid names and the guest pass rightly leaves alone: no facts live there.
NOTHING_TO_READ = frozenset({"swap", "LVM2_member", "crypto_LUKS", "BitLocker"})

#: blkid's names of the filesystems `introspect.guest.fs` reads (ext is named ext2, ext3 or ext4).
READ_HERE = frozenset({entry.name for entry in filesystems.REGISTERED} | {"ext2", "ext3", "ext4"})

SystemFinder = Callable[[Filesystem, str, list[Finding]], OperatingSystem | None]


def system_finders() -> tuple[SystemFinder, ...]:
    """Tried on every filesystem, in this order; the first that answers names the system on it.
    Imported when a volume first holds a filesystem (a blank disk needs none of them)."""
    from introspect.guest.linux import inspect_linux
    from introspect.guest.media import inspect_media
    from introspect.guest.windows import inspect_windows

    return (inspect_linux, inspect_windows, inspect_media)


@dataclass(slots=True)
class GuestInspection:
    """The guest pass's answer: the details (the Report's `guest`) and the findings."""

    details: GuestDetails
    findings: list[Finding] = field(default_factory=list)


class _Stop(Exception):
    """The budget is spent: nothing more can be read."""


def inspect_guest(view: GuestView, reader: Reader) -> GuestInspection:
    """The guest's volumes, systems and loaders, read through `view`; `reader` is the metered
    Reader under the view (its counts and budget are reported)."""
    findings: list[Finding] = []
    if view.incomplete:
        findings.append(
            GUEST_BACKING_MISSING.finding(
                f"{view.incomplete} holds part of the guest's disk and is not read (introspect opens nothing "
                "the image names): ranges it would fill read as zeros, so guest facts may be incomplete"
            )
        )
    volumes: list[Volume] = []
    systems: list[OperatingSystem] = []
    loaders: list[Loader] = []
    found = Volumes()
    disk = Disk.of(view, "/dev/sda")
    try:
        found = _guarded(lambda: find_volumes(disk), "the partition table", findings) or Volumes(
            found=[(Volume(device="/dev/sda", start=0, size=disk.size), disk)]
        )
        findings.extend(found.findings)
        for volume, volume_disk in found.found:
            volumes.append(
                _read_volume(volume, volume_disk, systems=systems, loaders=loaders, findings=findings)
            )
    except _Stop:
        volumes.extend(v for v, _ in found.found[len(volumes) :])
    firmware, evidence = _firmware(found, loaders)
    if len(systems) > 1:
        findings.append(
            GUEST_MULTIPLE_ROOTS.finding(
                f"{len(systems)} operating systems ({', '.join(_describe(s) for s in systems)}): no OS property "
                "is written; set os_type, os_distro and os_version for the one this image boots"
            )
        )
    findings = [_as_guest_finding(finding) for finding in findings]
    details = GuestDetails(
        volumes=volumes,
        systems=systems,
        loaders=loaders,
        firmware=firmware,
        firmware_evidence=evidence,
        bytes_read=reader.bytes_read,
        reads=reader.reads,
        max_bytes=reader.budget.max_bytes,
        max_reads=reader.budget.max_reads,
    )
    return GuestInspection(details, findings)


def _read_volume(
    volume: Volume,
    disk: Disk,
    *,
    systems: list[OperatingSystem],
    loaders: list[Loader],
    findings: list[Finding],
) -> Volume:
    """One volume: its filesystem named, its system or loaders read. Returns the volume with what
    its filesystem says of itself (blkid's TYPE, LABEL, UUID)."""
    if volume.note is not None or volume.filesystem in NOTHING_TO_READ:
        return volume
    where = f"{volume.device}"
    said = len(findings)
    fs = _guarded(lambda: filesystems.open_filesystem(disk), f"the filesystem on {where}", findings)
    if fs is None:
        # When the filesystem's own reader failed it said why: the signature only names the volume.
        failed = len(findings) > said
        named = _guarded(lambda: filesystems.identify(disk), f"the signature on {where}", findings)
        if not failed and named in READ_HERE:
            findings.append(
                GUEST_UNREADABLE.finding(
                    f"{where} carries the signature of {named}, but its superblock fails the checks introspect "
                    "makes before reading one: facts on it are not reported"
                )
            )
        elif not failed and named is not None and named not in NOTHING_TO_READ:
            findings.append(
                GUEST_UNSUPPORTED_FS.finding(
                    f"{where} holds {named}, which introspect does not read: facts on it are not reported"
                )
            )
        return volume.model_copy(update={"filesystem": named}) if named else volume
    volume = volume.model_copy(update={"filesystem": fs.name, "label": fs.label, "uuid": fs.uuid})
    notes: list[Finding] = []
    device = volume.device
    for finder in system_finders():
        system = _guarded(partial(finder, fs, device, notes), f"{fs.name} on {where}", findings)
        if system is not None:
            systems.append(system)
            break
    if fs.name == "vfat":  # an ESP is FAT (UEFI 2.10 §13.3); loaders on any FAT volume count
        from introspect.guest.esp import inspect_esp

        loaders.extend(
            _guarded(lambda: inspect_esp(fs, volume.device, notes), f"the ESP on {where}", findings) or []
        )
    findings.extend(notes)
    return volume


def _guarded(read: Callable[[], T], what: str, findings: list[Finding]) -> T | None:
    """`read()`, with the image's faults turned into guest findings: a guest fact alone never
    rejects an image. The budget stops the whole pass (`_Stop`)."""
    try:
        return read()
    except BudgetExceeded as error:
        findings.append(
            GUEST_BUDGET.finding(
                f"the guest pass stopped at its budget while reading {what} ({error.message}); facts from "
                "there on are not reported: raise the guest budget to read further"
            )
        )
        raise _Stop from error
    except BytesNotKept as error:
        # Said once: every later volume past what was kept would say it again.
        if not any(finding.code == GUEST_PARTIAL.code for finding in findings):
            findings.append(GUEST_PARTIAL.finding(f"{what}: {error}"))
        return None
    except ImageError as error:
        rule = error.rule if error.rule.code.startswith("guest.") else GUEST_UNREADABLE
        findings.append(rule.finding(f"{what}: {error}"))
        return None


#: Codes the guest pass reports as they are: its own, and the partition table's (all info or warn).
OWN_CODES = ("guest.", "gpt.", "mbr.")


def _as_guest_finding(finding: Finding) -> Finding:
    """What a volume's or a file's reader raised, as a guest finding: a structure of the guest cut
    short or out of bounds (image.truncated, a format's own rule) is the guest's unreadable part,
    never a rejection of the image (a guest fact alone never rejects)."""
    if finding.code.startswith(OWN_CODES):
        return finding
    return GUEST_UNREADABLE.finding(finding.message)


def _firmware(found: Volumes, loaders: list[Loader]) -> tuple[str | None, list[str]]:
    """uefi, bios or hybrid, from the partition table's boot evidence and the ESP's loaders."""
    bios, uefi = boot_evidence(found.table)
    for device in dict.fromkeys(loader.device for loader in loaders):
        paths = [loader.path for loader in loaders if loader.device == device]
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        uefi.append(f"{device} holds EFI loaders ({shown})")
    if bios and uefi:
        return "hybrid", [*bios, *uefi]
    if uefi:
        return "uefi", uefi
    if bios:
        return "bios", bios
    return None, []


def _describe(system: OperatingSystem) -> str:
    name = system.name or system.os_id or system.os_type
    return f"{name} on {system.device}"


def properties(details: GuestDetails, policy: Policy = DEFAULT_POLICY) -> dict[str, str]:
    """The guest layer's properties: an operating system's only when there is exactly one (a
    dual-boot image states no single answer), each value only when the image states it and
    Glance's vocabulary has a word for it; firmware only when the evidence points one way.
    `policy.guest_os_distro` false leaves os_distro out (a VMware cloud: see `Policy`)."""
    values: dict[str, str] = {}
    if details.firmware in ("uefi", "bios"):
        values["hw_firmware_type"] = details.firmware
    if len(details.systems) == 1:
        system = details.systems[0]
        values["os_type"] = system.os_type
        if system.distro is not None and policy.guest_os_distro:
            values["os_distro"] = system.distro
        if system.version is not None and vocabulary.check("os_version", system.version) is None:
            values["os_version"] = system.version
        if system.architecture is not None:
            values["architecture"] = system.architecture
        if system.qemu_guest_agent:
            values["hw_qemu_guest_agent"] = "yes"
        if system.os_id is not None and vocabulary.check("introspect_os_id", system.os_id) is None:
            values["introspect_os_id"] = system.os_id
        if system.osinfo is not None:
            values["introspect_osinfo"] = system.osinfo
        if system.build is not None and vocabulary.check("introspect_os_build", system.build) is None:
            values["introspect_os_build"] = system.build
        if system.cloud_init:
            values["introspect_cloud_init"] = "yes"
    if any(loader.shim for loader in details.loaders):
        values["introspect_secure_boot_capable"] = "yes"
    return values
