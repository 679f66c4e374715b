"""Apple disk images (UDIF): the data fork, the property list, and the koly trailer at the end.

Spec: Apple publishes none; the layout used here is the `UDIFResourceFile` of libdmg-hfsplus
(dmg.h) and J. Levin, "Demystifying the DMG File Format": a 512-byte big-endian trailer with the
signature "koly" in the last 512 bytes of the file, giving the data fork, the resource fork and the
XML property list (whose `blkx` entries hold the `mish` block tables) and the image's sector count.
qemu's block/dmg.c (`dmg_open()`) takes the virtual size from the trailer's SectorCount (not from
the block tables), and refuses the forks and lengths named below; the image is judged as qemu
would judge it. The trailer is all that is read: the property list is not parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from introspect.decode import MIB, uuid_be
from introspect.errors import BadField, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.model import Finding, Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import Policy, rule
from introspect.sources import Reader
from introspect.structure import BigEndianStructure, chars, pad, u32, u64

BAD_TRAILER = rule("dmg.bad_trailer", Severity.REJECT, "a koly trailer field holds a value qemu refuses")
UNKNOWN_VERSION = rule(
    "dmg.unknown_version", Severity.WARN, "the koly trailer is not UDIF version 4 with a 512-byte header"
)
SEGMENTED = rule(
    "dmg.segmented", Severity.REJECT, "the image is one segment of a multi-file (segmented) disk image"
)

CONVERT = "qemu cannot open such an image; re-create it with `hdiutil convert -format UDZO` on macOS"

KOLY_SIGNATURE = b"koly"
#: kUDIFVersion and the size of the trailer it describes.
UDIF_VERSION = 4
KOLY_SIZE = 512
SECTOR_SIZE = 512
#: fUDIFFlags bits.
FLATTENED_BIT = 0
INTERNET_ENABLED_BIT = 2
FLAG_FLATTENED = 1 << FLATTENED_BIT
FLAG_INTERNET_ENABLED = 1 << INTERNET_ENABLED_BIT
#: A checksum holds at most 32 32-bit words; its size is given in bits.
CHECKSUM_DATA_SIZE = 128
BITS_PER_BYTE = 8
#: qemu: "Attempt to set a safe upper cap on the data length" of the XML property list.
MAX_PLIST_LENGTH = 16 * MIB
#: qemu keeps total_sectors in an int64 and its byte length must fit one too.
MAX_SECTOR_COUNT = (2**63 - 1) // SECTOR_SIZE


class UDIFResourceFile(BigEndianStructure):
    """The koly trailer (libdmg-hfsplus dmg.h `UDIFResourceFile`), the last 512 bytes."""

    signature: bytes = chars(4)
    version: int = u32()
    header_size: int = u32()
    flags: int = u32()
    running_data_fork_offset: int = u64()
    data_fork_offset: int = u64()
    data_fork_length: int = u64()
    rsrc_fork_offset: int = u64()
    rsrc_fork_length: int = u64()
    segment_number: int = u32()
    segment_count: int = u32()
    segment_id: bytes = chars(16)
    data_checksum_type: int = u32()
    data_checksum_size: int = u32()
    data_checksum: bytes = chars(CHECKSUM_DATA_SIZE)
    xml_offset: int = u64()
    xml_length: int = u64()
    reserved1: None = pad(120)
    master_checksum_type: int = u32()
    master_checksum_size: int = u32()
    master_checksum: bytes = chars(CHECKSUM_DATA_SIZE)
    image_variant: int = u32()
    sector_count: int = u64()
    reserved2: None = pad(12)


class UdifChecksum(Frozen):
    """A UDIF checksum: its type, its size in bits, and its value (hex), as the trailer states it."""

    type: int
    size: int
    value: str


class DmgDetails(Frozen):
    """A UDIF koly trailer, as the image states it."""

    format: Literal["dmg"] = "dmg"
    version: int
    header_size: int
    flags: int
    flattened: bool = Field(description="kUDIFFlagsFlattened")
    internet_enabled: bool = Field(description="kUDIFFlagsInternetEnabled")
    running_data_fork_offset: int
    data_fork_offset: int
    data_fork_length: int
    rsrc_fork_offset: int
    rsrc_fork_length: int
    segment_number: int
    segment_count: int
    segment_id: str = Field(description="UUID shared by the segments of one image")
    data_checksum: UdifChecksum
    xml_offset: int
    xml_length: int
    master_checksum: UdifChecksum
    image_variant: int = Field(description="1: device image, 2: partition image")
    sector_count: int = Field(description="512-byte sectors of the disk: qemu's virtual size")


def probe(head: Head) -> bool:
    return len(head.tail) == KOLY_SIZE and head.tail.startswith(KOLY_SIGNATURE)


def inspect(reader: Reader, policy: Policy) -> Inspection[DmgDetails]:
    koly_offset = reader.size - KOLY_SIZE
    if koly_offset < 0:
        raise TruncatedImage("dmg koly trailer", offset=0, length=KOLY_SIZE, size=reader.size)
    koly = UDIFResourceFile.read(reader, "dmg koly trailer", koly_offset)
    if koly.signature != KOLY_SIGNATURE:
        raise BadField(BAD_TRAILER, "signature", koly.signature, repr(KOLY_SIGNATURE), offset=koly_offset)
    # qemu lets the data fork start at the trailer (when empty), but not the resource fork or plist.
    _check_fork("DataFork", koly.data_fork_offset, koly.data_fork_length, koly_offset, koly_offset)
    _check_fork("RsrcFork", koly.rsrc_fork_offset, koly.rsrc_fork_length, koly_offset - 1, koly_offset)
    _check_fork("XML", koly.xml_offset, koly.xml_length, koly_offset - 1, koly_offset)
    if koly.rsrc_fork_length == 0 and not 0 < koly.xml_length <= MAX_PLIST_LENGTH:
        raise BadField(
            BAD_TRAILER,
            "XMLLength",
            koly.xml_length,
            f"from 1 to {MAX_PLIST_LENGTH} bytes of property list when there is no resource fork",
            offset=koly_offset,
            advice=CONVERT,
        )
    if koly.sector_count > MAX_SECTOR_COUNT:
        raise BadField(
            BAD_TRAILER,
            "SectorCount",
            koly.sector_count,
            f"at most {MAX_SECTOR_COUNT}",
            offset=koly_offset,
            advice=CONVERT,
        )
    details = DmgDetails(
        version=koly.version,
        header_size=koly.header_size,
        flags=koly.flags,
        flattened=bool(koly.flags & FLAG_FLATTENED),
        internet_enabled=bool(koly.flags & FLAG_INTERNET_ENABLED),
        running_data_fork_offset=koly.running_data_fork_offset,
        data_fork_offset=koly.data_fork_offset,
        data_fork_length=koly.data_fork_length,
        rsrc_fork_offset=koly.rsrc_fork_offset,
        rsrc_fork_length=koly.rsrc_fork_length,
        segment_number=koly.segment_number,
        segment_count=koly.segment_count,
        segment_id=uuid_be(koly.segment_id),
        data_checksum=_checksum(koly.data_checksum_type, koly.data_checksum_size, koly.data_checksum),
        xml_offset=koly.xml_offset,
        xml_length=koly.xml_length,
        master_checksum=_checksum(koly.master_checksum_type, koly.master_checksum_size, koly.master_checksum),
        image_variant=koly.image_variant,
        sector_count=koly.sector_count,
    )
    findings = []
    if koly.version != UDIF_VERSION or koly.header_size != KOLY_SIZE:
        findings.append(
            UNKNOWN_VERSION.finding(
                f"the koly trailer says version {koly.version} with a {koly.header_size}-byte header, not UDIF "
                f"version {UDIF_VERSION} with {KOLY_SIZE} bytes: the image comes from an unknown tool, so check "
                "it with `qemu-img info -f dmg` or re-create it with `hdiutil convert -format UDZO`"
            )
        )
    return Inspection(details, koly.sector_count * SECTOR_SIZE, findings)


def _check_fork(name: str, offset: int, length: int, max_offset: int, koly_offset: int) -> None:
    """A fork starts at most at `max_offset` and ends before the trailer."""
    if offset > max_offset:
        raise BadField(
            BAD_TRAILER,
            f"{name}Offset",
            offset,
            f"at most {max_offset}, before the koly trailer",
            offset=koly_offset,
            advice=CONVERT,
        )
    if length > koly_offset - offset:
        raise BadField(
            BAD_TRAILER,
            f"{name}Offset + {name}Length",
            offset + length,
            f"at most {koly_offset}, where the koly trailer starts: bytes before the trailer are missing, "
            "so the file was cut or spliced; upload it again",
            offset=koly_offset,
        )


def _checksum(kind: int, size_bits: int, data: bytes) -> UdifChecksum:
    length = min(-(-size_bits // BITS_PER_BYTE), CHECKSUM_DATA_SIZE)
    return UdifChecksum(type=kind, size=size_bits, value=data[:length].hex())


def check_segments(details: DmgDetails, policy: Policy) -> Iterator[Finding]:
    """A segmented image keeps the rest of its disk in other files, which are never opened."""
    if details.segment_count > 1:
        yield SEGMENTED.finding(
            f"the image is segment {details.segment_number} of {details.segment_count} of a segmented disk "
            "image whose other segments are separate files that introspect never opens: join them with "
            "`hdiutil convert -format UDZO` on macOS and upload the single image"
        )


def properties(details: DmgDetails) -> dict[str, str]:
    """The koly trailer's version."""
    return header_properties(version=details.version)


FORMAT = Format(
    name="dmg",
    qemu_name="dmg",
    probe=probe,
    inspect=inspect,
    checks=(check_segments,),
    details=DmgDetails,
    properties=properties,
)
