"""What a format module provides: a probe, a parser, its safety checks, its details model, its
properties, and (when it has one) a view of the guest's bytes.

Each module in `introspect.formats` declares its on-disk structures once (named as in the spec),
its pydantic details model, and its rules, then exports `FORMAT`, a `Format`:

- `probe(head)`: does the head (or tail) carry this format's signature? Cheap, no reads.
- `inspect(reader, policy)`: parse, through the metered reader, into the format's pydantic
  details model; raise an `ImageError` when the image cannot be parsed.
- `checks`: safety rules over the details (backing files, extents...). A format with nothing to
  check says so with `checks=None` and a reason in `no_checks_because`.
- `details`: the details model. Its `format` field is a `Literal` of the format's name: a
  Report's `details` are validated by the model of the format that field names.
- `properties(details)`: the format's own facts as catalog properties (Glance/Nova names where
  they exist, else `introspect_<name>`), most useful first; `disk_format` is added by
  `introspect.properties`, which merges this layer with the container's (and later the guest's).
  Mappings several formats share (firmware, geometry, header numbers) are helpers there.
- `guest`: how to read the guest's disk through this format, or None (see below).
- `data_at_zero`: whether the guest's disk is the file's own bytes from offset 0 (`True` for raw
  and ISO, a test of the parsed details for a format where only some images are: a fixed VHD).
  Then a partition table at the start of the file is the guest's disk, content to read (see
  `introspect.formats.raw.read_disk`), not a second format sharing the file: a polyglot is a
  partition table where the format keeps its own header (a qcow2, a dynamic VHD). Of the others,
  only a DMG can start with its disk (a UDRW image's data fork, at offset 0, holds raw sectors), but
  the blkx tables that would say so are not parsed, so a table there stays a polyglot; a flat VMDK
  extent or a ploop's data carries no signature of its own or keeps a header at 0.

Adding a format is this one module plus its entry in `introspect.formats.REGISTERED` (its place
in the probe order, the signatures its probe needs, and what it satisfies), which imports the
module only for a file that carries one of those signatures.

The guest view (`guest`, a `GuestOpener`) is the hook the guest layer (partition tables, LVM,
filesystems: `introspect.guest`) reads the disk the VM sees through. `guest(reader, details)`
returns a `GuestView`: `size` is the guest disk's size in bytes, `read(guest_offset, length)`
returns exactly `length` bytes of it. A view must guarantee:

- every byte comes through the `Reader` it was given (the guest pass's own budget), in reads
  bounded by what was asked and by its mapping tables, each table read capped as the header pass
  caps it; no unbounded walk, no cache that grows with the image;
- ranges the image does not allocate read as zeros; a range past `size`, or mapped past the end
  of the file, raises `TruncatedImage` (an `ImageError`: the image is bad, not the caller);
- it never opens another file: a backing file, a data file, a VMDK extent or a parent locator is
  not followed, and the unallocated ranges that would come from it read as zeros only when the
  format says so (otherwise the opener returns None);
- when the guest's bytes cannot be read from this image alone, the opener raises an `ImageError`
  of a `guest.*` rule that says why (`guest.encrypted`: a qcow2 with AES or LUKS encryption, a LUKS
  image; `guest.no_view`: a VMDK whose extents are other files); it returns None only when the
  format has no view yet.

`raw.FORMAT` sets the identity view as the example; formats set `guest=None` until they have one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

from pydantic import BaseModel

from introspect.model import Finding
from introspect.safety import Policy, Rule
from introspect.sources import Reader


class Head(NamedTuple):
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


class GuestView(Protocol):
    """The disk the guest sees, read through the format's mapping (see the module docstring)."""

    @property
    def size(self) -> int:
        """The guest disk's size in bytes."""

    @property
    def incomplete(self) -> str | None:
        """None when every byte the guest sees is in this image; else what holds the rest (the
        backing file a qcow2 names): those ranges read as zeros, and facts may be incomplete."""

    def read(self, guest_offset: int, length: int) -> bytes:
        """Exactly `length` bytes of the guest disk from `guest_offset`; zeros where unallocated."""


Probe = Callable[[Head], bool]
Parser = Callable[[Reader, Policy], Inspection[DetailsT]]
Check = Callable[[DetailsT, Policy], Iterable[Finding]]
PropertyMap = Callable[[DetailsT], Mapping[str, str]]
DataAtZero = Callable[[DetailsT], bool]
GuestOpener = Callable[[Reader, DetailsT], GuestView | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Format(Generic[DetailsT]):
    """One image format. `name` is the word reported as `format` (Glance's disk_format where
    Glance has one), `qemu_name` the `-f` name qemu-img knows it by (None: qemu cannot open it)."""

    name: str
    qemu_name: str | None
    probe: Probe
    inspect: Parser[DetailsT]
    checks: tuple[Check[DetailsT], ...] | None
    no_checks_because: str = ""
    details: type[DetailsT]
    properties: PropertyMap[DetailsT]
    guest: GuestOpener[DetailsT] | None = None
    data_at_zero: bool | DataAtZero[DetailsT] = False

    def holds_disk_at_zero(self, details: DetailsT | None) -> bool:
        """Is the guest's disk this file's bytes from offset 0? Always, never, or as the parsed
        details say (None: the image could not be parsed, so nothing says it is)."""
        if isinstance(self.data_at_zero, bool):
            return self.data_at_zero
        return details is not None and self.data_at_zero(details)

    def __post_init__(self) -> None:
        if self.checks is None and not self.no_checks_because:
            raise ValueError(f"format {self.name} opts out of safety checks without saying why")
        discriminator = self.details.model_fields.get("format")
        if discriminator is None or discriminator.default != self.name:
            raise ValueError(
                f"format {self.name}: {self.details.__name__} needs a field "
                f'`format: Literal["{self.name}"] = "{self.name}"` (the Report\'s details are keyed by it)'
            )


def backing_file_finding(rule: Rule, name: str, backing_format: str | None = None) -> Finding:
    """What every copy-on-write format (qcow, qcow2, qed) says of a backing file it names: the
    name is recorded, never opened, and the fix is one qemu-img command."""
    declared = f" (format {backing_format})" if backing_format else ""
    return rule.finding(
        f"the image needs the backing file {name!r}{declared}, which is not part of the "
        "upload: flatten the chain with `qemu-img convert -O qcow2` and upload the result"
    )
