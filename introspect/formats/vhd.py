"""Microsoft Virtual Hard Disk (VHD Image Format Specification)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class VhdDetails(Frozen):
    format: Literal["vhd"] = "vhd"


def probe(head: Head) -> bool:
    return head.data[:8] == b"conectix" or head.tail[-512:-504] == b"conectix"


def inspect(reader: Reader, policy: Policy) -> Inspection[VhdDetails]:
    raise NotImplementedError("vhd")


FORMAT = Format(name="vhd", qemu_name="vpc", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
