"""Apple disk images (the koly trailer)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class DmgDetails(Frozen):
    format: Literal["dmg"] = "dmg"


def probe(head: Head) -> bool:
    return head.tail[-512:-508] == b"koly"


def inspect(reader: Reader, policy: Policy) -> Inspection[DmgDetails]:
    raise NotImplementedError("dmg")


FORMAT = Format(name="dmg", qemu_name="dmg", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
