"""Which format is this? Every probe looks at the head and tail; content decides, never the name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from introspect.formats import PROBED, RAW
from introspect.formats.base import Format, Head

#: Pairs that are one real thing, not a polyglot. Partition tables are not probed formats (a
#: hybrid ISO's MBR or GPT is a detail of the ISO), so nothing needs listing here today.
COMPATIBLE: frozenset[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Detection:
    """The format to parse, and any other format whose signature is also present."""

    format: Format[Any]
    others: tuple[Format[Any], ...]

    @property
    def polyglot(self) -> bool:
        return bool(self.others)


def detect(head: Head) -> Detection:
    matches = [fmt for fmt in PROBED if fmt.probe(head)]
    if not matches:
        return Detection(RAW, ())
    first, *rest = matches
    others = tuple(f for f in rest if frozenset({first.name, f.name}) not in COMPATIBLE)
    return Detection(first, others)
