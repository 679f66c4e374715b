"""Containers: what an image comes wrapped in, opened into members inspected as images.

`CONTAINERS` is the registry: the compression wrappers today (`introspect.containers.compressed`:
gzip, xz, zstd, bz2), OVA next. Adding a container is its module (one `Container` per kind it
opens, see `introspect.containers.base`) and its line here.

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

How OVA (a POSIX tar, `ustar` at offset 257 of the first header) will plug in, `containers/ova.py`:

- `sniff`: the ustar magic of the first header, in the head: no reads.
- `open`: walk the 512-byte tar headers through the reader, at most a fixed number of members;
  each member is `Member(name, SliceSource(ReaderSource(reader, "OVA member"), data_offset, size,
  name), complete=data_offset + size <= reader.size)`: a slice of the source, read in place
  (never extracted), metered by the same budget. Member names are recorded as capped strings
  and never opened as paths (an absolute name or one with `..` is a finding). The OVF descriptor
  (the first member, `*.ovf`, capped in size) is parsed with defusedxml `iterparse`; its
  DiskSection and References name the boot disk, which becomes `Unpacked.boot`; a disk it names
  that is missing, or a manifest (`*.mf`) digest over a member that cannot be checked in budget,
  is an `Unpacked.findings` entry.
- Each member's own Report comes later: `Unpacked.members` already lists them all; the inspector
  inspects the boot member today, and the Report will gain a `members` list of the others'.
"""

from __future__ import annotations

from introspect.containers import compressed, ova
from introspect.containers.base import (
    DEPTH,
    MAX_CONTAINER_DEPTH,
    MEMBER,
    Container,
    Member,
    ReaderSource,
    Unpacked,
)

#: Every container, sniffed in this order (their signatures cannot overlap).
CONTAINERS: tuple[Container, ...] = (
    compressed.GZIP,
    compressed.XZ,
    compressed.ZSTD,
    compressed.BZ2,
    ova.OVA,
    ova.OVF,
)
BY_NAME: dict[str, Container] = {c.name: c for c in CONTAINERS}

__all__ = [
    "BY_NAME",
    "CONTAINERS",
    "DEPTH",
    "MAX_CONTAINER_DEPTH",
    "MEMBER",
    "Container",
    "Member",
    "ReaderSource",
    "Unpacked",
    "sniff",
]


def sniff(head: bytes) -> Container | None:
    """The container whose signature starts the head, if any."""
    for container in CONTAINERS:
        if container.sniff(head):
            return container
    return None
