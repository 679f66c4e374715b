"""The guest disk's volumes: MBR partitions (primary, extended and logical), GPT partitions, LVM2
logical volumes on them, or the whole disk when there is no partition table."""

from __future__ import annotations

from dataclasses import dataclass, field

from introspect.formats.partitions import Gpt, Mbr
from introspect.guest.disk import Disk
from introspect.guest.model import Volume
from introspect.model import Finding


@dataclass(slots=True)
class Volumes:
    """Every volume found, each with the `Disk` slice that reads it, the partition table (its boot
    evidence counts for the firmware) and findings (an unreadable LVM label...)."""

    found: list[tuple[Volume, Disk]] = field(default_factory=list)
    table: Mbr | Gpt | None = None
    findings: list[Finding] = field(default_factory=list)


def find_volumes(disk: Disk) -> Volumes:
    """The volumes of the guest's disk, in the order the guest's kernel numbers them."""
    raise NotImplementedError
