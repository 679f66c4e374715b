"""What a container module provides: a sniff, an opener that yields members, and what to say of a
member whose end could not be reached. See `introspect.containers` for how the inspector uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from pydantic import BaseModel

from introspect.model import Finding, Severity
from introspect.safety import Policy, rule
from introspect.sources import ByteSource, Reader

#: Containers opened inside one another at most this deep (a qcow2 in a tar in a gzip is 2).
MAX_CONTAINER_DEPTH = 4

DEPTH = rule(
    "container.depth",
    Severity.REJECT,
    f"the image is wrapped in containers nested more than {MAX_CONTAINER_DEPTH} deep",
)

MEMBER = rule(
    "container.member",
    Severity.REJECT,
    "a disk of an archive (an OVA's second disk...) other than the boot disk is rejected or unreadable",
)


class Member(NamedTuple):
    """One file inside a container, to inspect as an image of its own.

    `source` is a slice of the container's bytes (`SliceSource` over a `ReaderSource`, so every
    read is metered by the inspection's one budget) or a decompressed view held in memory.
    `complete` is False when only a head of the member could be had (a compressed stream cut at
    the output cap): its end, and what lies there, is unknown."""

    name: str
    source: ByteSource
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Unpacked:
    """What opening a container gave: its members, what is wrong with the container itself (a
    damaged stream, a decompressor this installation lacks, a manifest that does not match), and
    the index of the member the VM boots from (None: nothing to inspect, the findings say why).
    `details` is what the container says of itself (an OVA's entries and OVF descriptor: the
    Report's `container`), `properties` the container layer's own (the OVF's guest OS,
    controller, NIC...), merged over the boot member's; `replaces` names the member's
    properties the container's statement replaces even where it has no word for Nova (an OVF's
    SATA or NVMe controller replaces what a VMDK's `ddb.adapterType` says)."""

    members: tuple[Member, ...] = ()
    findings: Sequence[Finding] = ()
    boot: int | None = None
    details: BaseModel | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    replaces: frozenset[str] = frozenset()

    @property
    def boot_member(self) -> Member | None:
        return self.members[self.boot] if self.boot is not None else None


Sniff = Callable[[bytes], bool]
Opener = Callable[[Reader, Policy], Unpacked | None]
Partial = Callable[[Member, str | None], Finding]


class MemberReport(Protocol):
    """What a container's `check` reads of each member's Report. A protocol, not the Report: the
    Report's model lists containers' details, so containers sit below it and never import it."""

    @property
    def format(self) -> str | None: ...

    @property
    def virtual_size(self) -> int | None: ...

    @property
    def details(self) -> object: ...


Check = Callable[[Unpacked, Sequence[MemberReport]], list[Finding]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """One kind of container. `name` is the word reported as `container_format` (and as the
    `introspect_container_format` property).

    - `sniff(head)`: does the head start with this container's signature? Cheap, no reads.
    - `open(reader, policy)`: read the container through the metered reader into members; raise
      an `ImageError` when it is damaged (the Report gets an `error` verdict naming its rule);
      None when the file is not this container after all (a tar without an OVF descriptor is not
      an OVA): it is then inspected as an image.
    - `partial(member, needed)`: the finding for a member that is not `complete`; `needed` is the
      message of the read that went past what could be had, when a parser needed more.
    - `multi`: an archive of several disks (OVA): every member is inspected, and each one's
      Report is listed in the Report's `members`.
    - `check(unpacked, members)`: findings over the members' Reports, in `unpacked.members`
      order, once they are inspected (an OVF's stated capacities against the disks' own)."""

    name: str
    sniff: Sniff
    open: Opener
    partial: Partial
    multi: bool = False
    check: Check | None = None


class ReaderSource(ByteSource):
    """The container's bytes read through its metered `Reader`: members sliced from it
    (`SliceSource(ReaderSource(reader, "ova member"), offset, length, name)`) count against the
    inspection's one budget and show in its `bytes_read` and `reads`."""

    def __init__(self, reader: Reader, what: str) -> None:
        self._reader = reader
        self._what = what
        self.name = reader.source.name

    @property
    def size(self) -> int:
        return self._reader.size

    def pread(self, offset: int, length: int) -> bytes:
        return self._reader.read_upto(offset, length, self._what)

    def unmetered(self) -> ByteSource:
        return self._reader.source.unmetered()
