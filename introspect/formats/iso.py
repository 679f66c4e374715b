"""ISO 9660 with Joliet, El Torito and UDF recognition; hybrid ISOs keep their MBR or GPT.

Specs:
- ECMA-119 4th edition (2019) "Volume and File Structure of CDROM for Information Interchange":
  §6.1.2 (2048-byte logical sectors; logical blocks of 512, 1024 or 2048 bytes), §6.2.1 (the
  System Area is sectors 0-15; the Volume Descriptor Set starts at sector 16), §8.1 (Volume
  Descriptor), §8.2 (Boot Record), §8.3 (Volume Descriptor Set Terminator), §8.4 (Primary Volume
  Descriptor, with §8.4.26.1 "Date and Time Format"), §8.5 (Supplementary Volume Descriptor),
  §7.2.3 and §7.3.3 (both-byte-order numbers).
- Joliet Specification (Microsoft, 1995) §4: a Supplementary Volume Descriptor whose escape
  sequences are `%/@`, `%/C` or `%/E` (UCS-2 levels 1-3) and whose identifiers are UTF-16BE.
- "El Torito" Bootable CD-ROM Format Specification 1.0 (Phoenix/IBM, 1995): §2.0 Boot Record
  Volume Descriptor (Fig. 7), §2.1 Validation Entry (Fig. 2), §2.2 Initial/Default Entry
  (Fig. 3), §2.3 Section Header Entry (Fig. 4), §2.4 Section Entry (Fig. 5), §2.5 Section Entry
  Extension (Fig. 6). Platform 0xEF (EFI) is from UEFI 2.10 §13.3.2.1.
- ECMA-167 3rd edition Part 2 §9: the Volume Recognition Sequence (BEA01, NSR02/NSR03, TEA01)
  that follows the ISO 9660 descriptors, in the same 2048-byte sectors.

A hybrid ISO (isohybrid, `xorriso -isohybrid-mbr`/`-isohybrid-gpt-basdat`/`-append_partition`)
also carries an MBR or a GPT in its System Area: that is one image, not a polyglot, and the table
is reported in `partition_table`. `virtual_size` is what `qemu-img info -f raw` says: the file size
(rounded up to 512-byte sectors, which an ISO's 2048-byte sectors always are).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import Field

from introspect.decode import padded_text
from introspect.errors import BadField
from introspect.formats.base import Format, Head, Inspection
from introspect.formats.partitions import PartitionTable, boot_evidence, firmware_from, read_partition_table
from introspect.formats.raw import RawGuestView, qemu_virtual_size
from introspect.model import Finding, Firmware, Frozen, Severity
from introspect.properties import firmware_properties, header_properties
from introspect.safety import TRUNCATED, Policy, rule
from introspect.sources import HEAD_SIZE, Reader
from introspect.structure import LittleEndianStructure, chars, i8, pad, u8, u16, u32

# --- Rules -----------------------------------------------------------------------------------

NO_PRIMARY = rule(
    "iso.no_primary_volume", Severity.REJECT, "the ISO 9660 descriptor set has no primary volume descriptor"
)
#: genisoimage and mkisofs pad the volume with 150 blocks of zeros by default ("-pad", 300 KiB),
#: and a disc read back often loses its last blocks: an ISO short by no more than that lost only
#: padding (iso.truncated_volume, a warning); one shorter is truncated (image.truncated).
PADDING_BLOCKS = 150
TRUNCATED_VOLUME = rule(
    "iso.truncated_volume", Severity.WARN, "the volume space size is larger than the file (truncated ISO?)"
)
DESCRIPTOR_CAP = rule(
    "iso.descriptor_cap", Severity.WARN, "no descriptor set terminator within the descriptors read"
)
BOTH_BYTE_ORDERS = rule(
    "iso.both_byte_orders", Severity.WARN, "a both-byte-order number differs between its two halves"
)
BLOCK_SIZE = rule("iso.logical_block_size", Severity.WARN, "the logical block size is not 512, 1024 or 2048")
CATALOG_INVALID = rule(
    "iso.boot_catalog_invalid",
    Severity.WARN,
    "the El Torito boot catalog is unreadable or has no validation entry",
)
CATALOG_CHECKSUM = rule(
    "iso.boot_catalog_checksum", Severity.WARN, "the El Torito validation entry's checksum is wrong"
)
CATALOG_CAP = rule(
    "iso.boot_catalog_cap", Severity.WARN, "the El Torito boot catalog runs past the entries read"
)

# --- Volume descriptors (ECMA-119 §6.1.2, §6.2.1, §8.1) --------------------------------------

SECTOR_SIZE = 2048
VOLUME_DESCRIPTOR_SET_SECTOR = 16


class VolumeDescriptor(LittleEndianStructure):
    """The Volume Descriptor header (ECMA-119 §8.1), which is also ECMA-167's Volume Structure
    Descriptor header (Structure Type, Standard Identifier, Structure Version: Part 2 §9.1)."""

    volume_descriptor_type: int = u8()
    standard_identifier: bytes = chars(5)
    volume_descriptor_version: int = u8()


STANDARD_IDENTIFIER = b"CD001"
TYPE_BOOT_RECORD = 0
TYPE_PRIMARY = 1
TYPE_SUPPLEMENTARY = 2
TYPE_PARTITION = 3
TYPE_TERMINATOR = 255
DESCRIPTOR_NAMES = {
    TYPE_BOOT_RECORD: "boot_record",
    TYPE_PRIMARY: "primary",
    TYPE_SUPPLEMENTARY: "supplementary",
    TYPE_PARTITION: "partition",
    TYPE_TERMINATOR: "terminator",
}
#: ECMA-167 Part 2 §9.2-9.3 and Part 3 §9.1: the extended area's descriptors. BOOT2 and CDW02
#: can appear inside it; an unknown identifier (or none) ends the sequence.
UDF_BEGIN = b"BEA01"
UDF_END = b"TEA01"
UDF_IDENTIFIERS = frozenset({UDF_BEGIN, b"NSR02", b"NSR03", b"BOOT2", b"CDW02", UDF_END})
#: Sectors of the recognition sequence read at most (ISO descriptors and UDF's together). Real
#: images use 3 to 8: primary, boot record, one or two supplementary, terminator, BEA/NSR/TEA.
MAX_VOLUME_DESCRIPTORS = 32

# --- Primary and Supplementary Volume Descriptor (ECMA-119 §8.4, §8.5) ------------------------

VALID_LOGICAL_BLOCK_SIZES = frozenset({512, 1024, 2048})
#: Joliet §4: escape sequences at the start of the SVD's Escape Sequences field, by UCS-2 level.
JOLIET_LEVELS = {b"%/@": 1, b"%/C": 2, b"%/E": 3}
JOLIET_ESCAPE_SIZE = 3


class VolumeDescriptorBody(LittleEndianStructure):
    """A Primary or Supplementary Volume Descriptor (ECMA-119 §8.4, §8.5); the both-byte-order
    numbers keep their big-endian halves raw, to compare with the little-endian ones. Volume Flags
    and Escape Sequences are the SVD's (unused in a PVD)."""

    volume_descriptor_type: int = u8()
    standard_identifier: bytes = chars(5)
    volume_descriptor_version: int = u8()
    volume_flags: int = u8()
    system_identifier: bytes = chars(32)
    volume_identifier: bytes = chars(32)
    unused: None = pad(8)
    volume_space_size: int = u32()
    volume_space_size_be: bytes = chars(4)
    escape_sequences: bytes = chars(32)
    volume_set_size: int = u16()
    volume_set_size_be: bytes = chars(2)
    volume_sequence_number: int = u16()
    volume_sequence_number_be: bytes = chars(2)
    logical_block_size: int = u16()
    logical_block_size_be: bytes = chars(2)
    path_table_size: bytes = chars(8)  # both byte orders
    type_l_path_table: bytes = chars(4)
    optional_type_l_path_table: bytes = chars(4)
    type_m_path_table: bytes = chars(4)
    optional_type_m_path_table: bytes = chars(4)
    root_directory_record: bytes = chars(34)
    volume_set_identifier: bytes = chars(128)
    publisher_identifier: bytes = chars(128)
    data_preparer_identifier: bytes = chars(128)
    application_identifier: bytes = chars(128)
    copyright_file_identifier: bytes = chars(37)
    abstract_file_identifier: bytes = chars(37)
    bibliographic_file_identifier: bytes = chars(37)
    volume_creation_date_and_time: bytes = chars(17)
    volume_modification_date_and_time: bytes = chars(17)
    volume_expiration_date_and_time: bytes = chars(17)
    volume_effective_date_and_time: bytes = chars(17)
    file_structure_version: int = u8()


# --- Date and Time Format (ECMA-119 §8.4.26.1) ------------------------------------------------

#: The offset from GMT counts 15-minute intervals (-48..+52).
GMT_OFFSET_RANGE = range(-48, 53)
GMT_OFFSET_MINUTES = 15


class DecDatetime(LittleEndianStructure):
    """A volume date and time (ECMA-119 §8.4.26.1): ASCII digits, then the signed offset from GMT.
    All digits '0' and offset 0: not specified."""

    year: bytes = chars(4)
    month: bytes = chars(2)
    day: bytes = chars(2)
    hour: bytes = chars(2)
    minute: bytes = chars(2)
    second: bytes = chars(2)
    hundredths: bytes = chars(2)
    gmt_offset: int = i8()

    def isoformat(self) -> str | None:
        """ISO 8601 text, or None when the date is "not specified" or is not a date at all."""
        digits = (self.year, self.month, self.day, self.hour, self.minute, self.second, self.hundredths)
        if not all(d.isdigit() for d in digits) or self.gmt_offset not in GMT_OFFSET_RANGE:
            return None
        year, month, day, hour, minute, second, hundredths = (int(d) for d in digits)
        if year == 0:
            return None
        try:
            when = datetime(
                year,
                month,
                day,
                hour,
                minute,
                second,
                hundredths * 10_000,
                tzinfo=timezone(timedelta(minutes=self.gmt_offset * GMT_OFFSET_MINUTES)),
            )
        except ValueError:
            return None
        return when.isoformat()


# --- El Torito boot record and boot catalog ---------------------------------------------------

EL_TORITO_SYSTEM_IDENTIFIER = b"EL TORITO SPECIFICATION"


class BootRecordVolumeDescriptor(LittleEndianStructure):
    """The El Torito Boot Record Volume Descriptor (El Torito §2.0, Fig. 7)."""

    boot_record_indicator: int = u8()
    iso_9660_identifier: bytes = chars(5)
    version: int = u8()
    boot_system_identifier: bytes = chars(32)
    unused: None = pad(32)
    boot_catalog_pointer: int = u32()  # absolute sector of the Boot Catalog

    @property
    def el_torito(self) -> bool:
        return self.boot_system_identifier.rstrip(b"\0") == EL_TORITO_SYSTEM_IDENTIFIER


CATALOG_ENTRY_SIZE = 32
#: The boot catalog is read as one CD sector: 64 entries. libisofs (xorriso) writes at most 32
#: boot images, each needing at most a section header and an entry, which fits.
BOOT_CATALOG_SIZE = SECTOR_SIZE
#: The Validation Entry's 16 little-endian words sum to zero (mod 2^16): the checksum, which
#: reads the entry as numbers, not as its fields.
VALIDATION_ENTRY_WORDS = struct.Struct("<16H")
VALIDATION_HEADER_ID = 0x01
KEY_BYTES = (0x55, 0xAA)
HEADER_MORE_FOLLOW = 0x90
HEADER_FINAL = 0x91
BOOTABLE = 0x88
NOT_BOOTABLE = 0x00
#: Section Entry Extension (Fig. 6): Extension Indicator 0x44; bit 5 of byte 1 says another follows.
EXTENSION_INDICATOR = 0x44
#: Boot Media Type (Fig. 3 and 5): bits 0-3 the emulation; bit 5 (section entries) says a
#: Section Entry Extension follows.
MEDIA_TYPE_MASK = 0x0F
CONTINUATION_BIT = 5
CONTINUATION = 1 << CONTINUATION_BIT
EMULATIONS = {0: "no_emulation", 1: "floppy_1.2m", 2: "floppy_1.44m", 3: "floppy_2.88m", 4: "hard_disk"}
PLATFORM_X86 = 0x00
PLATFORM_EFI = 0xEF
PLATFORMS = {PLATFORM_X86: "x86", 0x01: "PowerPC", 0x02: "Mac", PLATFORM_EFI: "EFI"}


class ValidationEntry(LittleEndianStructure):
    """The boot catalog's Validation Entry (El Torito Fig. 2)."""

    header_id: int = u8()
    platform_id: int = u8()
    reserved: None = pad(2)
    id_string: bytes = chars(24)
    checksum_word: int = u16()
    key_55: int = u8()
    key_aa: int = u8()


class SectionEntry(LittleEndianStructure):
    """A Section Entry (El Torito Fig. 5), whose first 12 bytes are also the Initial/Default
    Entry (Fig. 3)."""

    boot_indicator: int = u8()
    boot_media_type: int = u8()
    load_segment: int = u16()
    system_type: int = u8()
    unused: None = pad(1)
    sector_count: int = u16()
    load_rba: int = u32()
    selection_criteria_type: int = u8()
    vendor_unique_selection_criteria: bytes = chars(19)


class SectionHeaderEntry(LittleEndianStructure):
    """A Section Header Entry (El Torito Fig. 4)."""

    header_indicator: int = u8()
    platform_id: int = u8()
    number_of_section_entries: int = u16()
    id_string: bytes = chars(28)


# --- Models ----------------------------------------------------------------------------------


class BootEntry(Frozen):
    """One El Torito boot image: the Initial/Default Entry or a Section Entry."""

    platform_id: int
    platform: str | None
    bootable: bool
    media_type: int
    emulation: str | None
    load_segment: int
    system_type: int
    sector_count: int = Field(description="virtual 512-byte sectors loaded at boot")
    load_rba: int


class ElTorito(Frozen):
    """The El Torito boot catalog: where it is, whether its validation entry holds, its entries."""

    boot_catalog_sector: int
    id_string: str | None
    checksum_valid: bool
    entries: list[BootEntry]


class IsoDetails(Frozen):
    """An ISO 9660 image: its primary volume, Joliet, El Torito, UDF, and a hybrid's partitions."""

    format: Literal["iso"] = "iso"
    descriptors: list[str] = Field(description="the ISO 9660 volume descriptor types, in order")
    system_id: str | None = None
    volume_id: str | None = None
    volume_set_id: str | None = None
    publisher_id: str | None = None
    data_preparer_id: str | None = None
    application_id: str | None = None
    creation_date: str | None = None
    modification_date: str | None = None
    expiration_date: str | None = None
    effective_date: str | None = None
    volume_space_size: int | None = Field(None, description="logical blocks")
    block_size: int | None = Field(None, description="ECMA-119 Logical Block Size, in bytes")
    volume_size: int | None = Field(None, description="volume space size times block size, in bytes")
    joliet_level: int | None = None
    joliet_volume_id: str | None = None
    el_torito: ElTorito | None = None
    udf: list[str] = Field(default_factory=list, description="ECMA-167 recognition sequence identifiers")
    partition_table: PartitionTable | None = None
    firmware: Firmware | None = None


# --- Parsing ---------------------------------------------------------------------------------


def probe(head: Head) -> bool:
    """The first volume descriptor at sector 16: an ISO 9660 one, or UDF's BEA01."""
    offset = VOLUME_DESCRIPTOR_SET_SECTOR * SECTOR_SIZE
    if len(head.data) < offset + VolumeDescriptor.SIZE:
        return False
    return VolumeDescriptor.unpack(head.data, offset).standard_identifier in (STANDARD_IDENTIFIER, UDF_BEGIN)


def inspect(reader: Reader, policy: Policy) -> Inspection[IsoDetails]:
    findings: list[Finding] = []
    # The first descriptor must be whole, or nothing below means anything.
    reader.read(VOLUME_DESCRIPTOR_SET_SECTOR * SECTOR_SIZE, SECTOR_SIZE, "first volume descriptor")
    volumes = _walk(reader)
    if not volumes.ended:
        findings.append(
            DESCRIPTOR_CAP.finding(
                f"the volume recognition sequence goes on past {MAX_VOLUME_DESCRIPTORS} sectors without "
                "ending, and only those were read: rebuild the ISO with xorriso or genisoimage"
            )
        )
    if volumes.primary is None and not volumes.udf:
        raise BadField(
            NO_PRIMARY,
            "volume descriptor set",
            volumes.descriptors,
            "a primary volume descriptor (type 1)",
            offset=VOLUME_DESCRIPTOR_SET_SECTOR * SECTOR_SIZE,
            advice="no system can mount this ISO; rebuild it with xorriso or genisoimage",
        )
    primary = _primary(volumes.primary, reader.size, findings) if volumes.primary else {}
    catalog = volumes.boot_record.boot_catalog_pointer if volumes.boot_record else None
    el_torito = _el_torito(reader, catalog, findings) if catalog is not None else None
    table, table_findings = read_partition_table(reader)
    findings.extend(table_findings)
    details = IsoDetails(
        descriptors=volumes.descriptors,
        **primary,
        **_joliet(volumes.joliet),
        el_torito=el_torito,
        udf=volumes.udf,
        partition_table=table,
        firmware=_firmware(el_torito, table),
    )
    return Inspection(details=details, virtual_size=qemu_virtual_size(reader.size), findings=findings)


@dataclass(slots=True)
class _VolumeSet:
    """What the walk over the recognition sequence found: the descriptors that matter here."""

    descriptors: list[str] = field(default_factory=list)
    udf: list[str] = field(default_factory=list)
    primary: VolumeDescriptorBody | None = None
    joliet: VolumeDescriptorBody | None = None
    boot_record: BootRecordVolumeDescriptor | None = None
    ended: bool = False


def _walk(reader: Reader) -> _VolumeSet:
    """The ISO 9660 descriptors up to the terminator, then UDF's up to TEA01 or an unknown one."""
    found = _VolumeSet()
    terminated = False
    visited = 0
    for data in _recognition_sequence(reader):
        visited += 1
        descriptor = VolumeDescriptor.unpack(data)
        kind, identifier = descriptor.volume_descriptor_type, descriptor.standard_identifier
        if identifier == STANDARD_IDENTIFIER and not terminated and not found.udf:
            found.descriptors.append(DESCRIPTOR_NAMES.get(kind, f"type_{kind}"))
            terminated = kind == TYPE_TERMINATOR
            if kind == TYPE_PRIMARY and found.primary is None:
                found.primary = VolumeDescriptorBody.unpack(data)
            elif kind == TYPE_SUPPLEMENTARY and found.joliet is None:
                svd = VolumeDescriptorBody.unpack(data)
                found.joliet = svd if svd.escape_sequences[:JOLIET_ESCAPE_SIZE] in JOLIET_LEVELS else None
            elif kind == TYPE_BOOT_RECORD and found.boot_record is None:
                record = BootRecordVolumeDescriptor.unpack(data)
                found.boot_record = record if record.el_torito else None
        elif identifier in UDF_IDENTIFIERS:
            found.udf.append(identifier.decode("ascii"))
            if identifier == UDF_END:
                found.ended = True
                return found
        else:
            found.ended = True
            return found
    # Out of sectors: the file ended (the sequence with it), or the cap was reached.
    found.ended = visited < MAX_VOLUME_DESCRIPTORS
    return found


def _recognition_sequence(reader: Reader) -> Iterator[bytes]:
    """The sectors from 16 on, at most MAX_VOLUME_DESCRIPTORS: those in the head are free, the
    rest cost one read, made only if the sequence goes on that far."""
    first = VOLUME_DESCRIPTOR_SET_SECTOR
    in_head = max(0, min(reader.size, HEAD_SIZE) // SECTOR_SIZE - first)
    in_head = min(in_head, MAX_VOLUME_DESCRIPTORS)
    chunks = ((first, in_head), (first + in_head, MAX_VOLUME_DESCRIPTORS - in_head))
    for start, count in chunks:
        if count <= 0:
            continue
        data = reader.read_upto(start * SECTOR_SIZE, count * SECTOR_SIZE, "volume descriptors")
        for index in range(len(data) // SECTOR_SIZE):
            yield data[index * SECTOR_SIZE : (index + 1) * SECTOR_SIZE]
        if len(data) < count * SECTOR_SIZE:
            return


def _text(raw: bytes) -> str | None:
    """An a- or d-character identifier: ASCII padded with spaces (or NULs, as some tools write)."""
    return padded_text(raw, "ascii", " \0") or None


def _both(le: int, be: bytes, name: str, findings: list[Finding]) -> int:
    """A both-byte-order number (ECMA-119 §7.2.3, §7.3.3): Linux and libisofs read the
    little-endian half; a different big-endian half is a finding, not a guess."""
    if int.from_bytes(be, "big") != le:
        findings.append(
            BOTH_BYTE_ORDERS.finding(
                f"the primary volume descriptor's {name} is {le} little-endian but {int.from_bytes(be, 'big')} "
                "big-endian: readers may disagree on the volume; rebuild the ISO with xorriso or genisoimage"
            )
        )
    return le


def _primary(pvd: VolumeDescriptorBody, file_size: int, findings: list[Finding]) -> dict[str, Any]:
    space = _both(pvd.volume_space_size, pvd.volume_space_size_be, "volume space size", findings)
    block = _both(pvd.logical_block_size, pvd.logical_block_size_be, "logical block size", findings)
    volume_size: int | None = space * block
    if block not in VALID_LOGICAL_BLOCK_SIZES:
        findings.append(
            BLOCK_SIZE.finding(
                f"the logical block size is {block}, not 512, 1024 or 2048 (ECMA-119 §6.1.2), so the volume "
                "size is unknown: rebuild the ISO with xorriso or genisoimage"
            )
        )
        volume_size = None
    elif space * block - file_size > PADDING_BLOCKS * SECTOR_SIZE:
        findings.append(
            TRUNCATED.finding(
                f"the primary volume descriptor says the volume is {space * block} bytes but the file has "
                f"{file_size}: more is missing than the {PADDING_BLOCKS} blocks of padding that mastering "
                "tools add at the end, so files of the ISO are gone: download it again and check its checksum"
            )
        )
    elif space * block > file_size:
        findings.append(
            TRUNCATED_VOLUME.finding(
                f"the primary volume descriptor says the volume is {space * block} bytes but the file has "
                f"{file_size}: the ISO was probably cut short; download it again and check its checksum"
            )
        )
    return {
        "system_id": _text(pvd.system_identifier),
        "volume_id": _text(pvd.volume_identifier),
        "volume_set_id": _text(pvd.volume_set_identifier),
        "publisher_id": _text(pvd.publisher_identifier),
        "data_preparer_id": _text(pvd.data_preparer_identifier),
        "application_id": _text(pvd.application_identifier),
        "creation_date": DecDatetime.unpack(pvd.volume_creation_date_and_time).isoformat(),
        "modification_date": DecDatetime.unpack(pvd.volume_modification_date_and_time).isoformat(),
        "expiration_date": DecDatetime.unpack(pvd.volume_expiration_date_and_time).isoformat(),
        "effective_date": DecDatetime.unpack(pvd.volume_effective_date_and_time).isoformat(),
        "volume_space_size": space,
        "block_size": block,
        "volume_size": volume_size,
    }


def _joliet(svd: VolumeDescriptorBody | None) -> dict[str, Any]:
    """The first Joliet SVD's UCS-2 level and volume identifier (UTF-16BE)."""
    if svd is None:
        return {}
    volume_id = padded_text(svd.volume_identifier, "utf-16-be", " \0")
    return {
        "joliet_level": JOLIET_LEVELS[svd.escape_sequences[:JOLIET_ESCAPE_SIZE]],
        "joliet_volume_id": volume_id or None,
    }


def _el_torito(reader: Reader, catalog_sector: int, findings: list[Finding]) -> ElTorito:
    catalog = reader.read_upto(catalog_sector * SECTOR_SIZE, BOOT_CATALOG_SIZE, "El Torito boot catalog")
    if len(catalog) < CATALOG_ENTRY_SIZE * 2:
        findings.append(
            CATALOG_INVALID.finding(
                f"the El Torito boot catalog at sector {catalog_sector} lies past the end of the file, so "
                "nothing can boot from this ISO: download it again"
            )
        )
        return ElTorito(boot_catalog_sector=catalog_sector, id_string=None, checksum_valid=False, entries=[])
    validation = ValidationEntry.unpack(catalog)
    if validation.header_id != VALIDATION_HEADER_ID or (validation.key_55, validation.key_aa) != KEY_BYTES:
        findings.append(
            CATALOG_INVALID.finding(
                f"the El Torito boot catalog at sector {catalog_sector} does not start with a validation "
                "entry (header 01, key 55 AA), so nothing can boot from this ISO: rebuild it with xorriso"
            )
        )
        return ElTorito(boot_catalog_sector=catalog_sector, id_string=None, checksum_valid=False, entries=[])
    checksum_valid = sum(VALIDATION_ENTRY_WORDS.unpack_from(catalog)) & 0xFFFF == 0
    if not checksum_valid:
        findings.append(
            CATALOG_CHECKSUM.finding(
                "the El Torito validation entry's checksum is wrong: BIOS firmware may refuse to boot this "
                "ISO; rebuild it with xorriso or genisoimage"
            )
        )
    return ElTorito(
        boot_catalog_sector=catalog_sector,
        id_string=_text(validation.id_string),
        checksum_valid=checksum_valid,
        entries=list(_boot_entries(catalog, validation.platform_id, findings)),
    )


def _boot_entries(catalog: bytes, default_platform: int, findings: list[Finding]) -> Iterator[BootEntry]:
    """The Initial/Default Entry, then each section's entries; bounded by the catalog read."""
    yield _boot_entry(SectionEntry.unpack(catalog, CATALOG_ENTRY_SIZE), default_platform)
    slots = (
        catalog[offset : offset + CATALOG_ENTRY_SIZE]
        for offset in range(2 * CATALOG_ENTRY_SIZE, len(catalog) - CATALOG_ENTRY_SIZE + 1, CATALOG_ENTRY_SIZE)
    )
    for slot in slots:
        if slot[0] not in (HEADER_MORE_FOLLOW, HEADER_FINAL):
            return
        header = SectionHeaderEntry.unpack(slot)
        listed = 0
        while listed < header.number_of_section_entries:
            entry_slot = next(slots, None)
            if entry_slot is None or entry_slot[0] not in (BOOTABLE, NOT_BOOTABLE):
                break
            entry = SectionEntry.unpack(entry_slot)
            yield _boot_entry(entry, header.platform_id)
            listed += 1
            extended = entry.boot_media_type & CONTINUATION
            while extended:
                extension = next(slots, None)
                if extension is None or extension[0] != EXTENSION_INDICATOR:
                    break
                extended = extension[1] & CONTINUATION
        if listed < header.number_of_section_entries:
            findings.append(
                CATALOG_CAP.finding(
                    f"an El Torito section declares {header.number_of_section_entries} entries but the boot "
                    f"catalog's first {BOOT_CATALOG_SIZE} bytes hold {listed}: only those are listed"
                )
            )
            return
        if header.header_indicator == HEADER_FINAL:
            return


def _boot_entry(entry: SectionEntry, platform_id: int) -> BootEntry:
    media_type = entry.boot_media_type & MEDIA_TYPE_MASK
    return BootEntry(
        platform_id=platform_id,
        platform=PLATFORMS.get(platform_id),
        bootable=entry.boot_indicator == BOOTABLE,
        media_type=media_type,
        emulation=EMULATIONS.get(media_type),
        load_segment=entry.load_segment,
        system_type=entry.system_type,
        sector_count=entry.sector_count,
        load_rba=entry.load_rba,
    )


def _firmware(el_torito: ElTorito | None, table: PartitionTable | None) -> Firmware | None:
    """El Torito's bootable entries (platform 0: BIOS, 0xEF: UEFI), plus a hybrid's partitions."""
    bios, uefi = boot_evidence(table)
    for number, entry in enumerate(el_torito.entries if el_torito else [], start=1):
        if not entry.bootable:
            continue
        what = f"El Torito entry {number} (platform {entry.platform_id:#04x}, load RBA {entry.load_rba})"
        if entry.platform_id == PLATFORM_X86:
            bios.append(f"{what} is a bootable x86 BIOS image")
        elif entry.platform_id == PLATFORM_EFI:
            uefi.append(f"{what} is a bootable EFI image")
    return firmware_from(bios, uefi)


def properties(details: IsoDetails) -> dict[str, str]:
    """Firmware from El Torito and a hybrid's partition table, and the logical block size."""
    return {**firmware_properties(details.firmware), **header_properties(block_size=details.block_size)}


def guest_view(reader: Reader, details: IsoDetails) -> RawGuestView:
    """An ISO is read byte by byte as a raw disk is: its own guest view (its ISO 9660 filesystem,
    and a hybrid ISO's partitions, are the guest layer's to read)."""
    return RawGuestView(reader)


FORMAT = Format(
    name="iso",
    qemu_name="raw",
    probe=probe,
    inspect=inspect,
    checks=None,
    no_checks_because="an ISO names no other file and has no options to allow or refuse; its "
    "structural findings come from the parse",
    details=IsoDetails,
    properties=properties,
    guest=guest_view,
    data_at_zero=True,
)
