"""QEMU copy-on-write version 1 (qemu block/qcow.c)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class QcowDetails(Frozen):
    format: Literal["qcow"] = "qcow"


def probe(head: Head) -> bool:
    return head.data[:8] == b"QFI\xfb\x00\x00\x00\x01"


def inspect(reader: Reader, policy: Policy) -> Inspection[QcowDetails]:
    raise NotImplementedError("qcow")


FORMAT = Format(name="qcow", qemu_name="qcow", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
