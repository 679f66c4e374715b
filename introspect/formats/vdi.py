"""VirtualBox Disk Image (VirtualBox VDICore.h)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class VdiDetails(Frozen):
    format: Literal["vdi"] = "vdi"


def probe(head: Head) -> bool:
    return head.data[0x40:0x44] == b"\x7f\x10\xda\xbe"


def inspect(reader: Reader, policy: Policy) -> Inspection[VdiDetails]:
    raise NotImplementedError("vdi")


FORMAT = Format(name="vdi", qemu_name="vdi", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
