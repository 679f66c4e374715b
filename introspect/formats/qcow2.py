"""QEMU copy-on-write v2 and v3 (qemu docs/interop/qcow2.txt)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class Qcow2Details(Frozen):
    format: Literal["qcow2"] = "qcow2"


def probe(head: Head) -> bool:
    return head.data[:4] == b"QFI\xfb" and head.data[4:8] != b"\x00\x00\x00\x01"


def inspect(reader: Reader, policy: Policy) -> Inspection[Qcow2Details]:
    raise NotImplementedError("qcow2")


FORMAT = Format(name="qcow2", qemu_name="qcow2", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
