"""Which format is this? Every probe looks at the head and tail; content decides, never the name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from introspect.formats import PROBED, RAW
from introspect.formats.base import Format, Head
from introspect.formats.partitions import table_in_head

#: Pairs that are one real thing, not a polyglot. Partition tables are not probed formats (a
#: hybrid ISO's MBR or GPT is a detail of the ISO), so nothing needs listing here today.
COMPATIBLE: frozenset[frozenset[str]] = frozenset()
#: Formats a partition table may share a file with: raw (it is the table's disk) and ISO (hybrid).
HOSTS_PARTITION_TABLES = frozenset({"raw", "iso"})


@dataclass(frozen=True, slots=True)
class Detection:
    """The format to parse, any other format whose signature is also present, and the partition
    table ("gpt"/"mbr") a raw reader would find in a file that is not raw."""

    format: Format[Any]
    others: tuple[Format[Any], ...]
    partition_table: str | None = None

    @property
    def polyglot(self) -> bool:
        return bool(self.others) or self.partition_table is not None

    @property
    def names(self) -> list[str]:
        names = [f.name for f in (self.format, *self.others)]
        return [*names, self.partition_table] if self.partition_table else names


def detect(head: Head) -> Detection:
    matches = [fmt for fmt in PROBED if fmt.probe(head)]
    if not matches:
        return Detection(RAW, ())
    first, *rest = matches
    others = tuple(f for f in rest if frozenset({first.name, f.name}) not in COMPATIBLE)
    table = None if first.name in HOSTS_PARTITION_TABLES else table_in_head(head.data)
    return Detection(first, others, table)
