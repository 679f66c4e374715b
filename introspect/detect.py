"""Which format is this? Every probe looks at the head and tail; content decides, never the name."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel

from introspect.formats import RAW, claiming
from introspect.formats.base import Format, Head
from introspect.formats.partitions import table_in_head

#: Pairs that are one real thing, not a polyglot. Partition tables are not probed formats (a
#: hybrid ISO's MBR or GPT is a detail of the ISO), so nothing needs listing here today.
COMPATIBLE: frozenset[frozenset[str]] = frozenset()


class Detection(NamedTuple):
    """The format to parse, any other format whose signature is also present, and the partition
    table ("gpt"/"mbr") a raw reader would find in a file that is not raw."""

    format: Format[Any]
    others: tuple[Format[Any], ...]
    partition_table: str | None = None

    @property
    def polyglot(self) -> bool:
        """Before parsing: could this file be read as two things?"""
        return bool(self.others) or self.partition_table is not None

    def polyglot_names(self, details: BaseModel | None) -> list[str]:
        """After parsing: the names the file is valid as, when more than one ([] when it is one
        thing). A partition table at offset 0 of a format whose guest disk starts there (a fixed
        VHD, as its parsed footer says) is that disk's table, not a second format."""
        table = self.partition_table
        if table is not None and self.format.holds_disk_at_zero(details):
            table = None
        if not self.others and table is None:
            return []
        names = [f.name for f in (self.format, *self.others)]
        return [*names, table] if table else names

    @property
    def names(self) -> list[str]:
        names = [f.name for f in (self.format, *self.others)]
        return [*names, self.partition_table] if self.partition_table else names


def detect(head: Head) -> Detection:
    """The formats claiming the head, and for a format whose data does not always start at offset 0
    (`Format.data_at_zero` is not True: raw and ISO have theirs there, so a partition table at the
    start is their content and is not even looked for), the table a raw reader would find."""
    matches = claiming(head)
    if not matches:
        return Detection(RAW.load(), ())
    first, *rest = matches
    others = tuple(f for f in rest if frozenset({first.name, f.name}) not in COMPATIBLE)
    table = None if first.data_at_zero is True else table_in_head(head.data)
    return Detection(first, others, table)
