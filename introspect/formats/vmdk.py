"""VMware virtual disks (VMware Virtual Disk Format 5.0)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class VmdkDetails(Frozen):
    format: Literal["vmdk"] = "vmdk"


def probe(head: Head) -> bool:
    return head.data[:4] in (b"KDMV", b"COWD")


def inspect(reader: Reader, policy: Policy) -> Inspection[VmdkDetails]:
    raise NotImplementedError("vmdk")


FORMAT = Format(name="vmdk", qemu_name="vmdk", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
