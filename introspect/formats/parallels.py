"""Parallels / Virtuozzo ploop (qemu docs/interop/parallels.txt)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class ParallelsDetails(Frozen):
    format: Literal["ploop"] = "ploop"


def probe(head: Head) -> bool:
    return head.data[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt")


def inspect(reader: Reader, policy: Policy) -> Inspection[ParallelsDetails]:
    raise NotImplementedError("parallels")


FORMAT = Format(name="ploop", qemu_name="parallels", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
