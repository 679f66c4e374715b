"""Containers: what an image comes wrapped in, opened into members inspected as images.

`CONTAINERS` is the registry: the compression wrappers (`introspect.containers.compressed`: gzip,
xz, zstd, bz2), OVA packages and bare OVF descriptors (`introspect.containers.ova`, the descriptor
read by `introspect.containers.ovf`). Adding a container is its module (one `Container` per kind
it opens, see `introspect.containers.base`) and its entry here, with the pattern every head its
`sniff` claims starts with: a container's module is imported only for a head that matches it (a
bare qcow2 does not import the tar walker, the OVF parser, lzma or bz2).

The inspector has one path for every container: when a container's `sniff` claims the head, it
`open`s it through the metered reader, inspects the boot member through the same function as any
image (so a container in a container is opened in turn, at most `MAX_CONTAINER_DEPTH` deep:
deeper is the finding `container.depth`), and reports the member's Report with
`container_format` set to the container's name, the `introspect_container_format` property (the
container layer of `introspect.properties`), the container's findings after the member's, and the
bytes and reads of the whole inspection. A member whose end could not be reached (a compressed
stream decompressed only as far as a head) is parsed as if its end were beyond any offset a
header holds; what needs that end (a raw disk's size, a trailing footer) is dropped, and the
container's `partial` finding says so.

OVA (`containers/ova.py`, a POSIX tar whose first header has `ustar` at offset 257):

- `sniff`: the ustar magic of the first header, in the head: no reads.
- `open`: walk the 512-byte tar headers (ustar, pax, GNU) through the reader, at most
  `MAX_ENTRIES`; a tar without an `*.ovf` is declined (`None`: inspected as a file, raw). Each
  disk the OVF's DiskSection and References name is `Member(href, SliceSource(ReaderSource(reader,
  "OVA member"), data_offset, size, href))`: a slice of the source, read in place (never
  extracted), metered by the same budget. Names are capped strings, never opened as paths. The
  descriptor is parsed with defusedxml `iterparse`; its boot disk becomes `Unpacked.boot`, its
  guest OS, controller, NIC and firmware the container layer's properties (`Unpacked.properties`,
  with `replaces` for the VMDK's own controller words), its facts the Report's `container`.
- Every disk (`Container.multi`) is inspected; each Report is listed in the Report's `members`, and
  one that is not ok is the finding `container.member`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from introspect.containers.base import (
    DEPTH,
    MAX_CONTAINER_DEPTH,
    MEMBER,
    Container,
    Member,
    ReaderSource,
    Unpacked,
)
from introspect.formats import imported


class Registered(NamedTuple):
    """A container kind: its `container_format` word, where its `Container` is (`module`'s
    `attribute`), and `signature`, what every head its `sniff` claims starts with (its module's
    own constants: tests/containers/test_containers.py checks them)."""

    name: str
    module: str
    attribute: str
    signature: re.Pattern[bytes]

    def load(self) -> Container:
        """The container itself, its module imported on first use (then a dict lookup)."""
        container: Container = getattr(imported(f"{__name__}.{self.module}"), self.attribute)
        return container

    def carried_by(self, head: bytes) -> bool:
        return self.signature.match(head) is not None


#: The first header's ustar magic, 257 bytes into a tar (OVA, and a tar holding disk.raw).
USTAR_SIGNATURE = re.compile(rb".{257}ustar", re.DOTALL)
#: An XML declaration or element (after a BOM and blanks) starts a bare OVF descriptor.
XML_START = re.compile(rb"(?:\xef\xbb\xbf)?\s*<[?!A-Za-z]")

#: Every container, sniffed in this order (their signatures cannot overlap).
CONTAINERS: tuple[Registered, ...] = (
    Registered("gzip", "compressed", "GZIP", re.compile(rb"\x1f\x8b")),
    Registered("xz", "compressed", "XZ", re.compile(rb"\xfd7zXZ\x00")),
    Registered("zstd", "compressed", "ZSTD", re.compile(rb"\x28\xb5\x2f\xfd")),
    Registered("bz2", "compressed", "BZ2", re.compile(rb"BZh")),
    Registered("ova", "ova", "OVA", USTAR_SIGNATURE),
    Registered("tar", "ova", "TAR", USTAR_SIGNATURE),
    Registered("ovf", "ova", "OVF", XML_START),
)
BY_NAME: dict[str, Registered] = {c.name: c for c in CONTAINERS}
#: Any container's signature (theirs use no flag but DOTALL): one match turns away the head of
#: nearly every image at once.
_ANY = re.compile(b"|".join(b"(?:%s)" % entry.signature.pattern for entry in CONTAINERS), re.DOTALL)

__all__ = [
    "BY_NAME",
    "CONTAINERS",
    "DEPTH",
    "MAX_CONTAINER_DEPTH",
    "MEMBER",
    "USTAR_SIGNATURE",
    "XML_START",
    "Container",
    "Member",
    "ReaderSource",
    "Registered",
    "Unpacked",
    "every_container",
    "sniff",
    "sniff_all",
]


def every_container() -> tuple[Container, ...]:
    """Every registered container, loaded (for what needs them all: every rule, tests)."""
    return tuple(entry.load() for entry in CONTAINERS)


def sniff(head: bytes) -> Container | None:
    """The container whose signature starts the head, if any."""
    return next(sniff_all(head), None)


def sniff_all(head: bytes) -> Iterator[Container]:
    """Every container whose signature starts the head, in order: one may decline the file (a tar
    is an OVA only with an OVF descriptor), and the next is asked. A container's module is
    imported only when the head matches its registered signature."""
    if _ANY.match(head) is None:
        return iter(())
    return (
        container
        for entry in CONTAINERS
        if entry.carried_by(head) and (container := entry.load()).sniff(head)
    )
