"""ISO 9660 with Joliet, El Torito and UDF recognition (ECMA-119, El Torito, ECMA-167)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class IsoDetails(Frozen):
    format: Literal["iso"] = "iso"


def probe(head: Head) -> bool:
    return head.data[0x8001:0x8006] in (b"CD001", b"BEA01")


def inspect(reader: Reader, policy: Policy) -> Inspection[IsoDetails]:
    raise NotImplementedError("iso")


FORMAT = Format(name="iso", qemu_name="raw", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
