"""What a format module provides: a probe, a parser and its safety checks.

Each module in `introspect.formats` declares its on-disk structures once (a frozen dataclass and
one precompiled `struct.Struct`, named as in the spec), then exports `FORMAT`, a `Format`:

- `probe(head)`: does the head (or tail) carry this format's signature? Cheap, no reads.
- `inspect(reader, policy)`: parse, through the metered reader, into the format's pydantic
  details model; raise an `ImageError` when the image cannot be parsed.
- `checks`: safety rules over the details (backing files, extents...). A format with nothing to
  check says so with `checks=None` and a reason in `no_checks_because`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel

from introspect.model import Finding
from introspect.safety import Policy
from introspect.sources import Reader


@dataclass(frozen=True, slots=True)
class Head:
    """What every probe sees: the first bytes, the last bytes and the size of the file."""

    data: bytes
    tail: bytes
    size: int


DetailsT = TypeVar("DetailsT", bound=BaseModel)


@dataclass(slots=True)
class Inspection(Generic[DetailsT]):
    """A parser's answer: typed details, the virtual size as qemu-img reports it, and any
    structural findings (bad checksums, odd values) that did not stop the parse."""

    details: DetailsT
    virtual_size: int | None
    findings: list[Finding] = field(default_factory=list)


Probe = Callable[[Head], bool]
Parser = Callable[[Reader, Policy], Inspection[DetailsT]]
Check = Callable[[DetailsT, Policy], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class Format(Generic[DetailsT]):
    """One image format. `name` is the word reported as `format` (Glance's disk_format where
    Glance has one), `qemu_name` the `-f` name qemu-img knows it by (None: qemu cannot open it)."""

    name: str
    qemu_name: str | None
    probe: Probe
    inspect: Parser[DetailsT]
    checks: tuple[Check[DetailsT], ...] | None
    no_checks_because: str = ""

    def __post_init__(self) -> None:
        if self.checks is None and not self.no_checks_because:
            raise ValueError(f"format {self.name} opts out of safety checks without saying why")
