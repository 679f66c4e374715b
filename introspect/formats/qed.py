"""QEMU enhanced disk (qemu docs/interop/qed_spec.txt)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class QedDetails(Frozen):
    format: Literal["qed"] = "qed"


def probe(head: Head) -> bool:
    return head.data[:4] == b"QED\x00"


def inspect(reader: Reader, policy: Policy) -> Inspection[QedDetails]:
    raise NotImplementedError("qed")


FORMAT = Format(name="qed", qemu_name="qed", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
