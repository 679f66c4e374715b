"""LUKS1 and LUKS2 encrypted volumes (LUKS1 On-Disk Format, LUKS2 On-Disk Format)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class LuksDetails(Frozen):
    format: Literal["luks"] = "luks"


def probe(head: Head) -> bool:
    return head.data[:6] == b"LUKS\xba\xbe"


def inspect(reader: Reader, policy: Policy) -> Inspection[LuksDetails]:
    raise NotImplementedError("luks")


FORMAT = Format(name="luks", qemu_name="luks", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
