"""Parallels expandable image / Virtuozzo ploop, as qemu's docs/interop/parallels.txt describes it.

A 64-byte little-endian header ("Header"), then the BAT ("BAT": one 32-bit entry per cluster,
0 for an unallocated cluster, else the cluster's offset in sectors for "WithoutFreeSpace" images
and in clusters for "WithouFreSpacExt" ones), then the data area from data_off. qemu
(block/parallels.c) reports nb_sectors * 512 as the virtual size, using only the low 32 bits of
nb_sectors for "WithoutFreeSpace" images; a BAT entry pointing past the end of the file is
corruption to `qemu-img check`, and later qemu releases refuse to open such an image.

The parse reads the header and looks at the BAT entries that the head already holds (the first
16,368); the rest of the BAT is never read, so its reads do not grow with the virtual size. The
guest view reads the BAT a page at a time as lookups need it (`introspect.formats.blockmap`);
clusters past the BAT, and those it leaves at 0, read as zeros.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import ClassVar, Literal

from introspect.errors import BadField, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.formats.blockmap import BlockMappedView, Span, Table
from introspect.model import Finding, Frozen, Geometry, Severity
from introspect.properties import header_properties
from introspect.safety import Policy, rule
from introspect.sources import HEAD_SIZE, Reader
from introspect.structure import LittleEndianStructure, chars, u32, u64

BAD_HEADER = rule("parallels.bad_header", Severity.REJECT, "the Parallels header holds a value qemu refuses")
IN_USE = rule("parallels.in_use", Severity.WARN, "the Parallels image was not closed cleanly")
OUT_OF_SPEC = rule(
    "parallels.out_of_spec", Severity.WARN, "a Parallels header value the spec forbids but qemu tolerates"
)
BAD_BAT = rule("parallels.bad_bat", Severity.REJECT, "a BAT entry points outside the data area's clusters")

#: "magic": the two signatures, and the names `signature_variant` reports them by.
HEADER_MAGIC = b"WithoutFreeSpace"
HEADER_MAGIC2 = b"WithouFreSpacExt"
SIGNATURES: dict[bytes, Literal["WithoutFreeSpace", "WithouFreSpacExt"]] = {
    HEADER_MAGIC: "WithoutFreeSpace",
    HEADER_MAGIC2: "WithouFreSpacExt",
}
#: "version: Must be 2."
HEADER_VERSION = 2
#: "in_use": 0x746F6E59 while open read/write, 0x312e3276 once closed, 0 from old software.
HEADER_INUSE_MAGIC = 0x746F6E59
HEADER_CLOSED_MAGIC = 0x312E3276
IN_USE_VALUES = frozenset({0, HEADER_INUSE_MAGIC, HEADER_CLOSED_MAGIC})
#: "flags" bit 0: Empty Image.
EMPTY_IMAGE_BIT = 0
FLAG_EMPTY_IMAGE = 1 << EMPTY_IMAGE_BIT
#: "Sector: A 512-byte data chunk."
SECTOR_SIZE = 512
#: For "WithoutFreeSpace" images only the lowest 4 bytes of nb_sectors count.
NB_SECTORS_V1_MASK = 0xFFFFFFFF
#: qemu's limits in parallels_open: "Too big cluster" and "Catalog too large".
TRACKS_MAX = 0x7FFFFFFF // 513
BAT_ENTRIES_MAX = 0x7FFFFFFF // 4
#: qemu keeps the size in sectors in an int64.
NB_SECTORS_MAX = 0x7FFFFFFFFFFFFFFF // SECTOR_SIZE


class ParallelsHeader(LittleEndianStructure):
    """The header ("Header", bytes 0-63)."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(16)
    version: int = u32()
    heads: int = u32()
    cylinders: int = u32()
    tracks: int = u32()  # cluster size, in sectors
    bat_entries: int = u32()  # nb_bat_entries: disk size in clusters
    nb_sectors: int = u64()
    in_use: int = u32()
    data_off: int = u32()  # in sectors
    flags: int = u32()
    ext_off: int = u64()  # in sectors


#: "BAT is placed immediately after the image header": 32-bit little-endian entries, a flat
#: array of numbers (unpacked in bulk, not as structures: the head holds 16,368 of them).
BAT_OFFSET = ParallelsHeader.OFFSET + ParallelsHeader.SIZE
BAT_ENTRY = struct.Struct("<I")


class ParallelsDetails(Frozen):
    """What a Parallels/ploop header states (docs/interop/parallels.txt, "Header")."""

    format: Literal["ploop"] = "ploop"
    signature_variant: Literal["WithoutFreeSpace", "WithouFreSpacExt"]
    version: int
    geometry: Geometry  # cylinders, heads, and "tracks" as sectors, as the header states them
    cluster_size: int  # tracks * 512
    bat_entries: int
    nb_sectors: int  # as qemu reads it: the low 32 bits only for "WithoutFreeSpace"
    in_use: bool
    empty: bool  # flags bit 0, "Empty Image"
    flags: int
    data_off: int  # in sectors; 0 for "WithoutFreeSpace" means right after the BAT
    ext_off: int  # in sectors; 0 when there is no Format Extension


def probe(head: Head) -> bool:
    return head.data[: len(HEADER_MAGIC)] in SIGNATURES


def inspect(reader: Reader, policy: Policy) -> Inspection[ParallelsDetails]:
    header = ParallelsHeader.read(reader, "Parallels header")
    variant = SIGNATURES.get(header.magic)
    if variant is None:
        raise BadField(BAD_HEADER, "magic", header.magic, f"{HEADER_MAGIC!r} or {HEADER_MAGIC2!r}", offset=0)
    _check_header(header)
    extended = header.magic == HEADER_MAGIC2
    nb_sectors = header.nb_sectors if extended else header.nb_sectors & NB_SECTORS_V1_MASK
    if nb_sectors > NB_SECTORS_MAX:
        raise BadField(BAD_HEADER, "nb_sectors", nb_sectors, f"at most {NB_SECTORS_MAX}", offset=0)
    bat_length = header.bat_entries * BAT_ENTRY.size
    if BAT_OFFSET + bat_length > reader.size:
        raise TruncatedImage("Parallels BAT", offset=BAT_OFFSET, length=bat_length, size=reader.size)
    _check_data(reader, header, extended)
    details = ParallelsDetails(
        signature_variant=variant,
        version=header.version,
        geometry=Geometry(cylinders=header.cylinders, heads=header.heads, sectors=header.tracks),
        cluster_size=header.tracks * SECTOR_SIZE,
        bat_entries=header.bat_entries,
        nb_sectors=nb_sectors,
        in_use=header.in_use == HEADER_INUSE_MAGIC,
        empty=bool(header.flags & FLAG_EMPTY_IMAGE),
        flags=header.flags,
        data_off=header.data_off,
        ext_off=header.ext_off,
    )
    findings = list(_findings(header, details, extended))
    return Inspection(details=details, virtual_size=nb_sectors * SECTOR_SIZE, findings=findings)


def _check_header(header: ParallelsHeader) -> None:
    """What qemu's parallels_open refuses before it reads the BAT."""
    if header.version != HEADER_VERSION:
        raise BadField(BAD_HEADER, "version", header.version, str(HEADER_VERSION), offset=0)
    if not 0 < header.tracks <= TRACKS_MAX:
        raise BadField(
            BAD_HEADER, "tracks (sectors per cluster)", header.tracks, f"1..{TRACKS_MAX}", offset=0
        )
    if header.bat_entries > BAT_ENTRIES_MAX:
        raise BadField(BAD_HEADER, "bat_entries", header.bat_entries, f"at most {BAT_ENTRIES_MAX}", offset=0)


def _check_data(reader: Reader, header: ParallelsHeader, extended: bool) -> None:
    """The data area, the Format Extension cluster and every cluster the BAT entries in the head
    point to must lie inside the file: qemu refuses or reports the image otherwise."""
    cluster = header.tracks * SECTOR_SIZE
    if header.data_off * SECTOR_SIZE > reader.size:
        raise TruncatedImage(
            "Parallels data area", offset=header.data_off * SECTOR_SIZE, length=0, size=reader.size
        )
    if header.ext_off and (header.ext_off * SECTOR_SIZE + cluster > reader.size):
        raise TruncatedImage(
            "Parallels Format Extension cluster",
            offset=header.ext_off * SECTOR_SIZE,
            length=cluster,
            size=reader.size,
        )
    in_head = min(header.bat_entries, (HEAD_SIZE - BAT_OFFSET) // BAT_ENTRY.size)
    if not in_head:
        return
    entries = struct.unpack_from(
        f"<{in_head}I", reader.read(BAT_OFFSET, in_head * BAT_ENTRY.size, "Parallels BAT")
    )
    top = max(entries)
    unit = header.tracks if extended else 1  # BAT entries count clusters for "WithouFreSpacExt"
    if top and (top * unit + header.tracks) * SECTOR_SIZE > reader.size:
        index = entries.index(top)
        raise TruncatedImage(
            f"cluster that BAT entry {index} points to",
            offset=top * unit * SECTOR_SIZE,
            length=cluster,
            size=reader.size,
        )


def _findings(header: ParallelsHeader, details: ParallelsDetails, extended: bool) -> Iterator[Finding]:
    if details.in_use:
        yield IN_USE.finding(
            "the image is marked in use (it was not closed cleanly, or is still open): its BAT may not "
            "match its data; check it with `qemu-img check -r all -f parallels` or `ploop check` and "
            "upload it again"
        )
    elif header.in_use not in IN_USE_VALUES:
        yield OUT_OF_SPEC.finding(
            f"in_use is {header.in_use:#x}, which the spec forbids: repair the image with "
            "`qemu-img check -r all -f parallels` before uploading it"
        )
    if extended and header.data_off == 0:
        yield OUT_OF_SPEC.finding(
            "data_off is 0, which a WithouFreSpacExt image must not have: "
            "re-create the image with `qemu-img convert -O parallels`"
        )
    if header.bat_entries * header.tracks < details.nb_sectors:
        yield OUT_OF_SPEC.finding(
            f"the BAT covers {header.bat_entries * header.tracks} sectors of a {details.nb_sectors}-sector "
            "disk: the rest reads as zeros; re-create the image with `qemu-img convert -O parallels`"
        )


def properties(details: ParallelsDetails) -> dict[str, str]:
    """The header's version and cluster size. Not its "geometry": its tracks are clusters, not a
    disk's CHS, nothing a guest would use."""
    return header_properties(version=details.version, cluster_size=details.cluster_size)


# --- The guest view ("BAT", "Data Area") ----------------------------------------------------------


class ParallelsGuestView(BlockMappedView):
    """The guest's disk through the BAT: entry N says where cluster N is, in sectors
    ("WithoutFreeSpace") or clusters ("WithouFreSpacExt"); 0 is a cluster of zeros."""

    def __init__(self, reader: Reader, details: ParallelsDetails) -> None:
        super().__init__(
            reader,
            size=details.nb_sectors * SECTOR_SIZE,
            unit=details.cluster_size,
            what="Parallels data cluster",
        )
        self.bat = Table(BAT_OFFSET, details.bat_entries, BAT_ENTRY, "Parallels BAT")
        extended = details.signature_variant == SIGNATURES[HEADER_MAGIC2]
        self.entry_unit = details.cluster_size if extended else SECTOR_SIZE
        # "If data_off is zero, the offset is calculated as the end of BAT table plus some padding
        # to ensure sector size alignment" (for "WithoutFreeSpace"; the other must not have it).
        bat_end = BAT_OFFSET + details.bat_entries * BAT_ENTRY.size
        self.data_start = details.data_off * SECTOR_SIZE or -(-bat_end // SECTOR_SIZE) * SECTOR_SIZE

    def spans(self, block: int, start: int, end: int) -> list[Span]:
        if block >= self.bat.count:
            return []  # the BAT covers less than nb_sectors: the rest reads as zeros
        (entry,) = self.bat.get(self.pages, block)
        if not entry:
            return []
        offset = entry * self.entry_unit
        # "the value must not be lower than data offset ... (cluster offset - data offset) must be
        # aligned to cluster size"; one past the end of the file is a short read (TruncatedImage).
        if offset < self.data_start or (offset - self.data_start) % self.unit:
            raise BadField(
                BAD_BAT,
                f"BAT entry {block}",
                entry,
                f"a cluster of the data area (from byte {self.data_start}, in {self.unit}-byte clusters)",
                offset=BAT_OFFSET + block * BAT_ENTRY.size,
                advice="`qemu-img check -f parallels` reports it; repair it with `-r all`, or re-export the disk",
            )
        return [Span(file_offset=offset)]


def guest_view(reader: Reader, details: ParallelsDetails) -> ParallelsGuestView:
    """The guest's disk: a Parallels image names no other file, so it holds every byte."""
    return ParallelsGuestView(reader, details)


FORMAT = Format(
    name="ploop",
    qemu_name="parallels",
    probe=probe,
    inspect=inspect,
    checks=None,
    no_checks_because="a Parallels/ploop image names no other file: no backing or data file to refer to",
    details=ParallelsDetails,
    properties=properties,
    guest=guest_view,
)
