"""Bochs redolog images: growing disks made by `bximage`, and the undoable/volatile redologs Bochs
writes beside a base image.

Spec: the Bochs developer guide, "Harddisk Redologs" (docbook/development/harddisk-redologs.html):
a 512-byte little-endian header (the "standard header" then the "redolog specific header"), a
catalog of 32-bit extent indices, then the extents with their bitmaps. Version 1 headers lack the
`timestamp` field, so the disk size sits 4 bytes earlier. qemu's block/bochs.c (`bochs_open()`)
opens only "Growing" redologs and refuses catalogs and extent sizes beyond its limits; those
limits are named after qemu's and the image is judged as qemu would judge it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from introspect.decode import c_string
from introspect.errors import BadField, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.model import Finding, Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import Policy, rule
from introspect.sources import Reader
from introspect.structure import LittleEndianStructure, chars, u32, u64

BAD_HEADER = rule("bochs.bad_header", Severity.REJECT, "a Bochs header field holds a value qemu refuses")
NOT_GROWING = rule(
    "bochs.not_growing",
    Severity.REJECT,
    "the image is a Bochs Undoable/Volatile redolog (an overlay of a base image), which qemu cannot open",
)

CONVERT = "qemu cannot open such an image; convert it with `bximage -func=convert -imgmode=growing`"

HEADER_MAGIC = b"Bochs Virtual HD Image"
REDOLOG_TYPE = "Redolog"
GROWING_TYPE = "Growing"
UNDOABLE_TYPE = "Undoable"
VOLATILE_TYPE = "Volatile"
#: `version`: 0x00020000 today; 0x00010000 headers have no `timestamp` field.
HEADER_VERSION = 0x00020000
HEADER_V1 = 0x00010000
VERSION_SHIFT = 16
#: STANDARD_HEADER_SIZE: the whole header, standard and redolog-specific parts.
HEADER_SIZE = 512
SECTOR_SIZE = 512
#: Each catalog entry is a 32-bit extent index (0xffffffff: not allocated).
CATALOG_ENTRY_SIZE = 4
#: qemu: "Limit to 1M entries to avoid unbounded allocation" (~8 TB, the most bximage creates).
MAX_CATALOG_ENTRIES = 0x100000
#: qemu: extents of at least one sector, a power of two, at most 8 MiB.
MIN_EXTENT_SIZE = SECTOR_SIZE
MAX_EXTENT_SIZE = 0x800000


class StandardHeader(LittleEndianStructure):
    """The standard header (Harddisk Redologs, "Standard header"). Its strings are NUL-terminated
    in their fields, compared as qemu's strcmp() does."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(32)
    type: bytes = chars(16)
    subtype: bytes = chars(16)
    version: int = u32()
    header: int = u32()


class RedologHeader(LittleEndianStructure):
    """The redolog specific header of a version 2 header (Harddisk Redologs, "Redolog specific
    header"), right after the standard header; `timestamp` is a FAT date and time ("Undoable" only)."""

    OFFSET: ClassVar[int] = StandardHeader.SIZE

    catalog: int = u32()
    bitmap: int = u32()
    extent: int = u32()
    timestamp: int = u32()
    disk: int = u64()


class RedologHeaderV1(LittleEndianStructure):
    """The redolog specific header of a version 1 header: no `timestamp`, so `disk` comes 4 bytes earlier."""

    OFFSET: ClassVar[int] = StandardHeader.SIZE

    catalog: int = u32()
    bitmap: int = u32()
    extent: int = u32()
    disk: int = u64()


class BochsDetails(Frozen):
    """A Bochs redolog header, as the image states it."""

    format: Literal["bochs"] = "bochs"
    version: int = Field(description="header version: 2 (0x00020000) or 1 (0x00010000)")
    subtype: str = Field(description="Growing, Undoable or Volatile; qemu opens only Growing")
    header_size: int = Field(description="bytes before the catalog")
    catalog_entries: int = Field(description=f"extents in the catalog (qemu allows {MAX_CATALOG_ENTRIES})")
    bitmap_size: int = Field(description="bytes of the allocation bitmap before each extent")
    extent_size: int = Field(description="bytes of disk each catalog entry maps")
    disk_size: int = Field(description="the disk size in bytes, as the header states it")
    timestamp: int | None = Field(
        description="FAT date and time of the base image (version 2 Undoable redologs only)"
    )


def probe(head: Head) -> bool:
    # The magic is a C string in a 32-byte field: it must end where the text does.
    return head.data[: len(HEADER_MAGIC) + 1] == HEADER_MAGIC + b"\0"


def inspect(reader: Reader, policy: Policy) -> Inspection[BochsDetails]:
    data = reader.read(0, HEADER_SIZE, "bochs header")
    standard = StandardHeader.unpack(data)
    if c_string(standard.type, "ascii") != REDOLOG_TYPE:
        raise BadField(
            BAD_HEADER, "type", c_string(standard.type, "ascii"), repr(REDOLOG_TYPE), advice=CONVERT
        )
    if standard.version not in (HEADER_VERSION, HEADER_V1):
        raise BadField(
            BAD_HEADER,
            "version",
            hex(standard.version),
            f"{HEADER_VERSION:#x} or {HEADER_V1:#x}",
            advice=CONVERT,
        )
    redolog: RedologHeader | RedologHeaderV1
    if standard.version == HEADER_V1:
        redolog, timestamp = RedologHeaderV1.unpack(data), None
    else:
        redolog = RedologHeader.unpack(data)
        timestamp = redolog.timestamp
    if redolog.catalog > MAX_CATALOG_ENTRIES:
        raise BadField(
            BAD_HEADER, "catalog", redolog.catalog, f"at most {MAX_CATALOG_ENTRIES} entries", advice=CONVERT
        )
    extent = redolog.extent
    if not (MIN_EXTENT_SIZE <= extent <= MAX_EXTENT_SIZE and extent & (extent - 1) == 0):
        raise BadField(
            BAD_HEADER,
            "extent",
            extent,
            f"a power of two from {MIN_EXTENT_SIZE} to {MAX_EXTENT_SIZE}",
            advice=CONVERT,
        )
    total_sectors = redolog.disk // SECTOR_SIZE
    sectors_per_extent = extent // SECTOR_SIZE
    needed = -(-total_sectors // sectors_per_extent)
    if redolog.catalog < needed:
        raise BadField(
            BAD_HEADER,
            "catalog",
            redolog.catalog,
            f"at least {needed} entries to map a disk of {redolog.disk} bytes",
            advice=CONVERT,
        )
    catalog_length = redolog.catalog * CATALOG_ENTRY_SIZE
    if standard.header + catalog_length > reader.size:
        raise TruncatedImage("bochs catalog", offset=standard.header, length=catalog_length, size=reader.size)
    subtype = c_string(standard.subtype, "ascii")
    details = BochsDetails(
        version=standard.version >> VERSION_SHIFT,
        subtype=subtype,
        header_size=standard.header,
        catalog_entries=redolog.catalog,
        bitmap_size=redolog.bitmap,
        extent_size=extent,
        disk_size=redolog.disk,
        timestamp=timestamp if subtype == UNDOABLE_TYPE else None,
    )
    return Inspection(details, total_sectors * SECTOR_SIZE)


def check_subtype(details: BochsDetails, policy: Policy) -> Iterator[Finding]:
    """Undoable and Volatile redologs hold only the changes to a base image they do not name."""
    if details.subtype != GROWING_TYPE:
        yield NOT_GROWING.finding(
            f"the image is a Bochs {details.subtype!r} redolog, which holds only changes to a base image "
            "and which qemu refuses to open: commit it into its base with `bximage -func=commit` and "
            "upload the base image instead"
        )


def properties(details: BochsDetails) -> dict[str, str]:
    """The header's version: nothing else a catalog needs (qemu reads the disk size as virtual size)."""
    return header_properties(version=details.version)


FORMAT = Format(
    name="bochs",
    qemu_name="bochs",
    probe=probe,
    inspect=inspect,
    checks=(check_subtype,),
    details=BochsDetails,
    properties=properties,
)
