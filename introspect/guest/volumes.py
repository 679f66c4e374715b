"""The guest disk's volumes: MBR partitions (primary, extended and logical), GPT partitions, LVM2
logical volumes on them, or the whole disk when there is no partition table.

Devices are named as the guest's Linux kernel names them on its first disk (and libguestfs after
it): /dev/sda1..4 for the MBR's four records (an unused record leaves its number unused), /dev/sda5
on for logical partitions in the order of their EBR chain, /dev/sdaN for the GPT's entry N, and
/dev/VG/LV for logical volumes. An extended partition is a container, not a volume. A partition
that runs past the end of the disk is cut there, with a finding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from introspect.formats.partitions import (
    EXTENDED_OS_TYPES,
    LOGICAL_BLOCK_SIZE,
    Gpt,
    Mbr,
    read_partition_table,
)
from introspect.guest.disk import Disk
from introspect.guest.fs import SIGNATURES
from introspect.guest.model import Volume
from introspect.model import Finding
from introspect.safety import GUEST_VOLUME_CUT

#: The guest's first disk, as its kernel names it.
DISK_DEVICE = "/dev/sda"
#: LVM2's label, read from each partition (and the whole disk): a PV's content is its LVs.
LVM2_MEMBER = "LVM2_member"
#: Where blkid finds that label (its type, "LVM2 001", in one of the first four sectors): the LVM
#: reader is imported only for a disk with a volume that carries one.
LVM2_LABELS = tuple((offset, magic) for offset, magic, name in SIGNATURES if name == LVM2_MEMBER)


@dataclass(slots=True)
class Volumes:
    """Every volume found, each with the `Disk` slice that reads it, the partition table (its boot
    evidence counts for the firmware) and findings (an unreadable LVM label...). A volume whose
    content is not read (a thin or striped LV, an LV whose PV is elsewhere) carries a `note` and
    an empty `Disk`."""

    found: list[tuple[Volume, Disk]] = field(default_factory=list)
    table: Mbr | Gpt | None = None
    findings: list[Finding] = field(default_factory=list)


def find_volumes(disk: Disk) -> Volumes:
    """The volumes of the guest's disk, in the order the guest's kernel numbers them."""
    table, findings = read_partition_table(disk)
    volumes = Volumes(table=table, findings=findings)
    if table is None:
        partitions = [(Volume(device=DISK_DEVICE, start=0, size=disk.size), disk)]
    else:
        partitions = list(_partitions(disk, table, volumes.findings))
    if not any(_carries_lvm2_label(part) for _, part in partitions):
        volumes.found.extend(partitions)
        return volumes
    from introspect.guest import lvm

    found = lvm.scan(partitions)
    for volume, part in partitions:
        uuid = found.members.get(volume.device)
        if uuid is not None:
            volume = volume.model_copy(update={"filesystem": LVM2_MEMBER, "uuid": uuid})
        volumes.found.append((volume, part))
    volumes.found.extend(found.volumes)
    volumes.findings.extend(found.findings)
    return volumes


def _carries_lvm2_label(disk: Disk) -> bool:
    return any(disk.read_upto(offset, len(magic), "LVM2 label") == magic for offset, magic in LVM2_LABELS)


def _partitions(disk: Disk, table: Mbr | Gpt, findings: list[Finding]) -> Iterator[tuple[Volume, Disk]]:
    if isinstance(table, Gpt):
        for entry in table.partitions:
            count = entry.ending_lba - entry.starting_lba + 1
            kind = entry.type_name or entry.partition_type_guid
            yield _partition(disk, entry.number, entry.starting_lba, count, table.sector_size, kind, findings)
        return
    for record in table.partitions:
        if record.os_type in EXTENDED_OS_TYPES and not record.logical:
            continue
        kind = f"{record.os_type:#04x}"
        yield _partition(
            disk, record.number, record.starting_lba, record.size_in_lba, LOGICAL_BLOCK_SIZE, kind, findings
        )


def _partition(
    disk: Disk, number: int, first_lba: int, count: int, sector_size: int, kind: str, findings: list[Finding]
) -> tuple[Volume, Disk]:
    device = f"{DISK_DEVICE}{number}"
    start = first_lba * sector_size
    size = max(0, count) * sector_size
    if count <= 0 or start + size > disk.size:
        shown = max(0, min(size, disk.size - start))
        findings.append(
            GUEST_VOLUME_CUT.finding(
                f"{device} ({size} bytes from byte {start}) runs past the end of the {disk.size}-byte disk "
                f"or ends before it begins; {shown} bytes of it are read: the image may be cut short, "
                "or its partition table is wrong (check it with `sfdisk --verify`)"
            )
        )
        size = shown
    part = disk.slice(start, size, device)
    return Volume(device=device, start=disk.start + start, size=part.size, partition_type=kind), part
