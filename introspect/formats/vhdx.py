"""Microsoft VHDX ([MS-VHDX])."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class VhdxDetails(Frozen):
    format: Literal["vhdx"] = "vhdx"


def probe(head: Head) -> bool:
    return head.data[:8] == b"vhdxfile"


def inspect(reader: Reader, policy: Policy) -> Inspection[VhdxDetails]:
    raise NotImplementedError("vhdx")


FORMAT = Format(name="vhdx", qemu_name="vhdx", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
