"""Bochs growing/redolog images (qemu block/bochs.c)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class BochsDetails(Frozen):
    format: Literal["bochs"] = "bochs"


def probe(head: Head) -> bool:
    return head.data[:22] == b"Bochs Virtual HD Image"


def inspect(reader: Reader, policy: Policy) -> Inspection[BochsDetails]:
    raise NotImplementedError("bochs")


FORMAT = Format(name="bochs", qemu_name="bochs", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
