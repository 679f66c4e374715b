"""Raw disks: no container format. MBR/GPT partition tables, else libmagic's word for the content."""

from __future__ import annotations

from typing import Literal

from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen
from introspect.safety import Policy
from introspect.sources import Reader


class RawDetails(Frozen):
    format: Literal["raw"] = "raw"


def probe(head: Head) -> bool:
    """Raw is never probed: it is what is left when no format claims the file."""
    return False


def inspect(reader: Reader, policy: Policy) -> Inspection[RawDetails]:
    raise NotImplementedError("raw")


FORMAT = Format(name="raw", qemu_name="raw", probe=probe, inspect=inspect, checks=None,
                no_checks_because="TODO")
