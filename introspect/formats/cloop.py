"""Compressed loopback images (qemu block/cloop.c)."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class CloopDetails(Frozen):
    format: Literal["cloop"] = "cloop"


def probe(head: Head) -> bool:
    return head.data.startswith(b"#!/bin/sh\n#V2.0 Format\n")


def inspect(reader: Reader, policy: Policy) -> Inspection[CloopDetails]:
    raise NotImplementedError("cloop")


FORMAT = Format(name="cloop", qemu_name="cloop", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
