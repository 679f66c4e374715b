"""Partition tables: the legacy MBR (with its chain of extended boot records) and the GPT.

Spec: UEFI Specification 2.10, chapter 5 "GUID Partition Table (GPT) Disk Layout": §5.2.1 "Legacy
Master Boot Record (MBR)" (Tables 5-1 and 5-2), §5.2.3 "Protective MBR", §5.3.2 "GPT Header"
(Table 5-5, with the validation rules: signature, HeaderCRC32 computed with the field zeroed,
MyLBA, PartitionEntryArrayCRC32), §5.3.3 "GPT Partition Entry Array" (Tables 5-6 and 5-7), §5.3.1
(the backup header at the last LBA). Extended partitions and their EBR chain follow the IBM PC
convention that Linux (`block/partitions/msdos.c`) and libfdisk (`libfdisk/src/dos.c`) read.

This is not a probed format: a partition table is a detail of a `raw` disk or of a hybrid ISO, so
both call `read_partition_table`. Everything here is tolerant of tables slightly out of spec (a
GPT partition outside the usable LBAs as xorriso writes, a backup header missing after a resize):
those become findings of severity warn or info, never a rejection.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

from pydantic import Field

from introspect.decode import end_of_data, guid, utf16_c_string
from introspect.model import Finding, Firmware, Frozen, Severity
from introspect.safety import rule
from introspect.sources import Reader
from introspect.structure import LittleEndianStructure, chars, u8, u16, u32, u64, unpack_array

# --- Rules -----------------------------------------------------------------------------------

GPT_HEADER_CRC = rule("gpt.header_crc", Severity.WARN, "the primary GPT header's CRC32 does not match")
GPT_ENTRIES_CRC = rule(
    "gpt.entries_crc", Severity.WARN, "the GPT partition entry array's CRC32 does not match the header"
)
GPT_BACKUP = rule(
    "gpt.backup_header", Severity.WARN, "the backup GPT header is missing, invalid or not at the last LBA"
)
GPT_OUT_OF_SPEC = rule(
    "gpt.out_of_spec", Severity.WARN, "a GPT header field holds a value the UEFI spec does not allow"
)
GPT_OUTSIDE_USABLE = rule(
    "gpt.partition_outside_usable", Severity.INFO, "a GPT partition lies outside the header's usable LBAs"
)
GPT_HYBRID_MBR = rule(
    "gpt.hybrid_mbr", Severity.INFO, "the GPT's protective MBR also lists partitions (a hybrid MBR)"
)
MBR_EBR_CHAIN = rule(
    "mbr.ebr_chain", Severity.WARN, "the chain of extended boot records loops, breaks or is too long"
)

# --- Legacy MBR (UEFI 2.10 §5.2.1, Table 5-1) -------------------------------------------------

LOGICAL_BLOCK_SIZE = 512
MBR_SIGNATURE = 0xAA55
MBR_SIGNATURE_BYTES = MBR_SIGNATURE.to_bytes(2, "little")
PARTITION_RECORDS = 4
#: BootIndicator: 0x80 marks the bootable ("active") partition; 0x00 any other. Anything else is
#: not an MBR (Linux and libfdisk both give up on the table then: a FAT or NTFS boot sector also
#: ends in 0x55AA, but its bytes 446..509 are boot code).
BOOT_INDICATOR_ACTIVE = 0x80
BOOT_INDICATORS = frozenset({0x00, BOOT_INDICATOR_ACTIVE})
#: CHS address (Table 5-2 note): the sector is in bits 0-5 of its second byte, whose bits 6-7
#: are bits 8-9 of the cylinder.
CHS_SECTOR_BITS = 6
CHS_SECTOR_MASK = (1 << CHS_SECTOR_BITS) - 1
CHS_CYLINDER_LOW_BITS = 8

#: OSType values (§5.2.2 names 0xEE and 0xEF; the rest as libfdisk names them).
OS_TYPE_PROTECTIVE = 0xEE
OS_TYPE_EFI_SYSTEM = 0xEF
EXTENDED_OS_TYPES = frozenset({0x05, 0x0F, 0x85})
MBR_TYPE_NAMES: dict[int, str] = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Ext'd (LBA)",
    0x11: "Hidden FAT12",
    0x17: "Hidden HPFS/NTFS",
    0x1B: "Hidden W95 FAT32",
    0x1C: "Hidden W95 FAT32 (LBA)",
    0x27: "Hidden NTFS WinRE",
    0x41: "PPC PReP Boot",
    0x42: "SFS",
    0x82: "Linux swap / Solaris",
    0x83: "Linux",
    0x85: "Linux extended",
    0x8E: "Linux LVM",
    0xA5: "FreeBSD",
    0xA6: "OpenBSD",
    0xA8: "Darwin UFS",
    0xA9: "NetBSD",
    0xAF: "HFS / HFS+",
    0xDE: "Dell Utility",
    0xEA: "Linux extended boot",
    0xEE: "GPT",
    0xEF: "EFI (FAT-12/16/32)",
    0xFB: "VMware VMFS",
    0xFC: "VMware VMKCORE",
    0xFD: "Linux raid autodetect",
}
#: Logical partitions followed through the EBR chain; each costs one 512-byte read. Installers
#: make a handful; Linux's sd driver names 15 partitions per disk without extended minors.
MAX_LOGICAL_PARTITIONS = 32


class ChsAddress(LittleEndianStructure):
    """A CHS address (UEFI 2.10 Table 5-2 note)."""

    head: int = u8()
    sector_and_cylinder_high: int = u8()
    cylinder_low: int = u8()


class PartitionRecord(LittleEndianStructure):
    """One of the four MBR partition records (UEFI 2.10 Table 5-2)."""

    boot_indicator: int = u8()
    starting_chs: bytes = chars(ChsAddress.SIZE)
    os_type: int = u8()
    ending_chs: bytes = chars(ChsAddress.SIZE)
    starting_lba: int = u32()
    size_in_lba: int = u32()

    @property
    def used(self) -> bool:
        """libfdisk and Linux count a record as a partition when its size is not zero."""
        return self.size_in_lba != 0


class LegacyMbr(LittleEndianStructure):
    """The legacy MBR, or an EBR, which has the same layout (UEFI 2.10 Table 5-1)."""

    boot_code: bytes = chars(440)
    unique_mbr_disk_signature: int = u32()
    unknown: int = u16()
    partition_record: bytes = chars(PARTITION_RECORDS * PartitionRecord.SIZE)  # PartitionRecord[4]
    signature: int = u16()

    def partition_records(self) -> list[PartitionRecord]:
        return unpack_array(PartitionRecord, self.partition_record, PARTITION_RECORDS)

    @property
    def valid(self) -> bool:
        return self.signature == MBR_SIGNATURE and all(
            r.boot_indicator in BOOT_INDICATORS for r in self.partition_records()
        )


#: Where PartitionRecord[0] is in the MBR.
PARTITION_RECORDS_OFFSET = LegacyMbr.offset_of("partition_record")


# --- GPT header (UEFI 2.10 §5.3.2, Table 5-5) -------------------------------------------------

GPT_SIGNATURE = b"EFI PART"
#: The primary header is at LBA 1; the GPT says nothing of the block size, so try the two in use.
PRIMARY_HEADER_LBA = 1
SECTOR_SIZES = (512, 4096)
#: SizeOfPartitionEntry: 128 x 2^n (§5.3.2); we accept any multiple of 8 from 128 up to this cap.
MIN_PARTITION_ENTRY_SIZE = 128
MAX_PARTITION_ENTRY_SIZE = 1024
PARTITION_ENTRY_ALIGN = 8
#: NumberOfPartitionEntries: tools write 128 (the spec's 16 KiB minimum array); xorriso up to 248.
#: With the size cap, the array read stays at most 1 MiB.
MAX_PARTITION_ENTRIES = 1024


class GptHeaderFields(LittleEndianStructure):
    """The GPT header (UEFI 2.10 Table 5-5); the rest of the block is reserved. Reserved "must be
    zero", and HeaderCRC32 covers it."""

    signature: bytes = chars(8)
    revision: int = u32()
    header_size: int = u32()
    header_crc32: int = u32()
    reserved: int = u32()
    my_lba: int = u64()
    alternate_lba: int = u64()
    first_usable_lba: int = u64()
    last_usable_lba: int = u64()
    disk_guid: bytes = chars(16)
    partition_entry_lba: int = u64()
    number_of_partition_entries: int = u32()
    size_of_partition_entry: int = u32()
    partition_entry_array_crc32: int = u32()


#: HeaderCRC32 is computed over HeaderSize bytes with itself zeroed.
HEADER_CRC32_OFFSET = GptHeaderFields.offset_of("header_crc32")
HEADER_CRC32_SIZE = 4
#: HeaderSize: at least the 92 bytes above, at most the logical block.
MIN_HEADER_SIZE = GptHeaderFields.SIZE


def header_crc32(block: bytes, header_size: int) -> int:
    """HeaderCRC32 as §5.3.2 defines it: CRC32 of HeaderSize bytes with the CRC field zeroed."""
    end = HEADER_CRC32_OFFSET + HEADER_CRC32_SIZE
    return zlib.crc32(block[:HEADER_CRC32_OFFSET] + bytes(HEADER_CRC32_SIZE) + block[end:header_size])


# --- GPT partition entry (UEFI 2.10 §5.3.3, Table 5-6) ---------------------------------------

UNUSED_ENTRY_GUID = bytes(16)
#: Attributes (Table 5-7).
REQUIRED_PARTITION_BIT = 0
NO_BLOCK_IO_PROTOCOL_BIT = 1
LEGACY_BIOS_BOOTABLE_BIT = 2
LEGACY_BIOS_BOOTABLE = 1 << LEGACY_BIOS_BOOTABLE_BIT

EFI_SYSTEM_PARTITION = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
BIOS_BOOT_PARTITION = "21686148-6449-6e6f-744e-656564454649"
#: The common PartitionTypeGUIDs (§5.3.3 Table 5-7's EFI System; the others as libfdisk names them).
GPT_TYPE_NAMES: dict[str, str] = {
    EFI_SYSTEM_PARTITION: "EFI System",
    BIOS_BOOT_PARTITION: "BIOS boot",
    "024dee41-33e7-11d3-9d69-0008c781f39f": "MBR partition scheme",
    "9e1a2d38-c612-4316-aa26-8b49521e5a8b": "PowerPC PReP boot",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": "Microsoft LDM metadata",
    "af9b60a0-1431-4f62-bc68-3311714a69ad": "Microsoft LDM data",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery environment",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "3b8f8425-20e0-4f3b-907f-1a25a76f98e8": "Linux server data",
    "44479540-f297-41b2-9af7-d131d5f0458a": "Linux root (x86)",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "69dad710-2ce4-4e3c-b16c-21a1d49abed3": "Linux root (ARM)",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM-64)",
    "c31c45e6-3f39-412e-80fb-4809c4980599": "Linux root (PPC64LE)",
    "5eead9a9-fe09-4a1e-a1d7-520d00531306": "Linux root (S390X)",
    "72ec70a6-cf74-40e6-bd49-4bda08e8f224": "Linux root (RISC-V-64)",
    "8484680c-9521-48c6-9c11-b0720656f69e": "Linux /usr (x86-64)",
    "b0e01050-ee5f-4390-949a-9101b17104e9": "Linux /usr (ARM-64)",
    "8da63339-0007-60c0-c436-083ac8230908": "Linux reserved",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "4d21b016-b534-45c2-a9fb-5c16e091fd2d": "Linux variable data",
    "7ec6f557-3bc5-4aca-b293-16ef5df639d1": "Linux temporary data",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "ca7d7ccb-63ed-4c53-861c-1742536059cc": "Linux LUKS",
    "48465300-0000-11aa-aa11-00306543ecac": "Apple HFS/HFS+",
    "7c3457ef-0000-11aa-aa11-00306543ecac": "Apple APFS",
    "516e7cb4-6ecf-11d6-8ff8-00022d09712b": "FreeBSD data",
    "83bd6b9d-7f41-11dc-be0b-001560b84f0f": "FreeBSD boot",
    "516e7cba-6ecf-11d6-8ff8-00022d09712b": "FreeBSD ZFS",
    "aa31e02a-400f-11db-9590-000c2911d1b8": "VMware VMFS",
}


class GptPartitionEntry(LittleEndianStructure):
    """One GPT partition entry (UEFI 2.10 Table 5-6); GUIDs as UEFI stores them (`decode.guid`)."""

    partition_type_guid: bytes = chars(16)
    unique_partition_guid: bytes = chars(16)
    starting_lba: int = u64()
    ending_lba: int = u64()
    attributes: int = u64()
    partition_name: bytes = chars(72)  # 36 UTF-16LE code units


# --- Models ----------------------------------------------------------------------------------


class Chs(Frozen):
    """A cylinder/head/sector address as an MBR partition record stores it."""

    cylinder: int
    head: int
    sector: int


class MbrPartition(Frozen):
    """One MBR partition: a primary record (numbers 1-4) or a logical one in an EBR (5 and up)."""

    number: int
    boot_indicator: int
    bootable: bool
    starting_chs: Chs
    os_type: int
    type_name: str | None
    ending_chs: Chs
    starting_lba: int
    size_in_lba: int
    logical: bool


class Mbr(Frozen):
    """A legacy MBR partition table (UEFI 2.10 §5.2.1): protective when it guards a GPT."""

    scheme: Literal["mbr"] = "mbr"
    unique_mbr_disk_signature: int
    boot_code: bool = Field(description="the 440-byte bootstrap area is not all zeros")
    protective: bool = Field(description="a record of OSType 0xEE guards a GPT (§5.2.3)")
    partitions: list[MbrPartition]


class GptPartition(Frozen):
    """One used GPT partition entry (UEFI 2.10 §5.3.3); `number` is its 1-based array index."""

    number: int
    partition_type_guid: str
    type_name: str | None
    unique_partition_guid: str
    starting_lba: int
    ending_lba: int
    attributes: int
    partition_name: str


class GptHeader(Frozen):
    """The primary GPT header (UEFI 2.10 §5.3.2), with the results of its two CRC checks."""

    revision: str
    header_size: int
    header_crc32: int
    header_crc32_valid: bool
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: str
    partition_entry_lba: int
    number_of_partition_entries: int
    size_of_partition_entry: int
    partition_entry_array_crc32: int
    partition_entry_array_crc32_valid: bool | None = Field(
        description="null when the array was not read whole (beyond the caps or the file)"
    )


class GptBackup(Frozen):
    """Where the backup header was looked for and what was found there (UEFI 2.10 §5.3.2)."""

    lba: int
    present: bool = Field(description="the signature is there")
    valid: bool = Field(description="signature, CRC, MyLBA and the entry-array CRC agree with the primary")


class Gpt(Frozen):
    """A GUID partition table, with the MBR in front of it (protective, or hybrid on an ISO)."""

    scheme: Literal["gpt"] = "gpt"
    sector_size: int
    header: GptHeader
    backup: GptBackup
    partitions: list[GptPartition]
    mbr: Mbr | None


PartitionTable = Annotated[Mbr | Gpt, Field(discriminator="scheme")]


# --- Reading ---------------------------------------------------------------------------------


def read_partition_table(reader: Reader) -> tuple[Mbr | Gpt | None, list[Finding]]:
    """The disk's GPT (tried at LBA 1 for 512- and 4096-byte blocks), else its MBR, else None.

    Costs nothing beyond the head and tail for a GPT with 512-byte blocks; a 4096-byte-block GPT
    reads its backup header (one read); an MBR reads one sector per logical partition.
    """
    findings: list[Finding] = []
    first = reader.read_upto(0, max(SECTOR_SIZES) * (PRIMARY_HEADER_LBA + 1), "partition table")
    mbr = _mbr(first)
    for sector_size in SECTOR_SIZES:
        offset = PRIMARY_HEADER_LBA * sector_size
        block = first[offset : offset + sector_size]
        if len(block) >= MIN_HEADER_SIZE and block.startswith(GPT_SIGNATURE):
            table = _gpt(reader, block, sector_size, mbr, findings)
            return table, findings
    if mbr is None:
        return None, findings
    return _with_logical_partitions(reader, mbr, findings), findings


def table_in_head(head: bytes) -> str | None:
    """ "gpt" or "mbr" when a file's first blocks hold a partition table a raw reader would use:
    a GPT header whose CRC32 checks out, or a valid MBR with a partition. Partition tables are
    not probed formats, so this is how a qcow2 or VMDK that is also a GPT disk is caught."""
    # Linux (block/partitions/efi.c) and libblkid use a GPT only behind a valid MBR signature (the
    # protective MBR): a GPT header alone further in is some other format's data (a dynamic VHD
    # whose first block holds a partitioned disk puts the guest's GPT header at byte 4096).
    has_mbr = head.startswith(MBR_SIGNATURE_BYTES, LegacyMbr.offset_of("signature"))
    for sector_size in SECTOR_SIZES:
        offset = PRIMARY_HEADER_LBA * sector_size
        if not has_mbr or not head.startswith(GPT_SIGNATURE, offset):
            continue
        block = head[offset : offset + sector_size]
        if len(block) >= MIN_HEADER_SIZE:
            fields = GptHeaderFields.unpack(block)
            if MIN_HEADER_SIZE <= fields.header_size <= sector_size and (
                header_crc32(block, fields.header_size) == fields.header_crc32
            ):
                return "gpt"
    if not head.startswith(MBR_SIGNATURE_BYTES, LegacyMbr.offset_of("signature")):
        return None
    return "mbr" if _mbr(head[:LOGICAL_BLOCK_SIZE]) is not None else None


def _mbr(sector: bytes) -> Mbr | None:
    if len(sector) < LegacyMbr.SIZE:
        return None
    legacy = LegacyMbr.unpack(sector)
    records = legacy.partition_records()
    if not legacy.valid or not any(r.used for r in records):
        return None
    return Mbr(
        unique_mbr_disk_signature=legacy.unique_mbr_disk_signature,
        boot_code=legacy.boot_code != bytes(len(legacy.boot_code)),
        protective=any(r.os_type == OS_TYPE_PROTECTIVE and r.used for r in records),
        partitions=[
            _mbr_partition(number, record, base_lba=0, logical=False)
            for number, record in enumerate(records, start=1)
            if record.used
        ],
    )


def _chs(raw: bytes) -> Chs:
    chs = ChsAddress.unpack(raw)
    cylinder_high = chs.sector_and_cylinder_high >> CHS_SECTOR_BITS
    return Chs(
        cylinder=(cylinder_high << CHS_CYLINDER_LOW_BITS) | chs.cylinder_low,
        head=chs.head,
        sector=chs.sector_and_cylinder_high & CHS_SECTOR_MASK,
    )


def _mbr_partition(number: int, record: PartitionRecord, *, base_lba: int, logical: bool) -> MbrPartition:
    return MbrPartition(
        number=number,
        boot_indicator=record.boot_indicator,
        bootable=record.boot_indicator == BOOT_INDICATOR_ACTIVE,
        starting_chs=_chs(record.starting_chs),
        os_type=record.os_type,
        type_name=MBR_TYPE_NAMES.get(record.os_type),
        ending_chs=_chs(record.ending_chs),
        starting_lba=base_lba + record.starting_lba,
        size_in_lba=record.size_in_lba,
        logical=logical,
    )


def _with_logical_partitions(reader: Reader, mbr: Mbr, findings: list[Finding]) -> Mbr:
    extended = next((p for p in mbr.partitions if p.os_type in EXTENDED_OS_TYPES), None)
    if extended is None:
        return mbr
    logical = list(_logical_partitions(reader, extended.starting_lba, findings))
    return mbr.model_copy(update={"partitions": [*mbr.partitions, *logical]})


def _logical_partitions(reader: Reader, extended_lba: int, findings: list[Finding]) -> Iterator[MbrPartition]:
    """Walk the EBR chain: each EBR's first record is a logical partition (relative to the EBR),
    its second points to the next EBR (relative to the extended partition)."""
    ebr_lba = extended_lba
    seen: set[int] = set()
    number = PARTITION_RECORDS + 1
    for _ in range(MAX_LOGICAL_PARTITIONS):
        seen.add(ebr_lba)
        sector = reader.read_upto(ebr_lba * LOGICAL_BLOCK_SIZE, LOGICAL_BLOCK_SIZE, "extended boot record")
        ebr = LegacyMbr.unpack(sector) if len(sector) == LOGICAL_BLOCK_SIZE else None
        if ebr is None or not ebr.valid:
            findings.append(
                MBR_EBR_CHAIN.finding(
                    f"the extended boot record at LBA {ebr_lba} is missing or invalid, so the logical "
                    "partitions from there on are not listed: check the table with `sfdisk --verify`"
                )
            )
            return
        entry, link, *_ = ebr.partition_records()
        if entry.used:
            yield _mbr_partition(number, entry, base_lba=ebr_lba, logical=True)
            number += 1
        if not link.used or link.os_type not in EXTENDED_OS_TYPES:
            return
        ebr_lba = extended_lba + link.starting_lba
        if ebr_lba in seen:
            findings.append(
                MBR_EBR_CHAIN.finding(
                    f"the chain of extended boot records loops back to LBA {ebr_lba}: repartition the "
                    "extended partition with `sfdisk` or `fdisk`"
                )
            )
            return
    findings.append(
        MBR_EBR_CHAIN.finding(
            f"the extended partition chains more than {MAX_LOGICAL_PARTITIONS} logical partitions, only "
            "those are listed: a real installer never makes this many, so check where the image came from"
        )
    )


def _gpt(reader: Reader, block: bytes, sector_size: int, mbr: Mbr | None, findings: list[Finding]) -> Gpt:
    fields = GptHeaderFields.unpack(block)
    crc_size = min(max(fields.header_size, MIN_HEADER_SIZE), sector_size)
    if crc_size != fields.header_size:
        findings.append(
            GPT_OUT_OF_SPEC.finding(
                f"the GPT HeaderSize is {fields.header_size}, outside {MIN_HEADER_SIZE}..{sector_size}: "
                "rewrite the table with `sgdisk` (e.g. `sgdisk -e`)"
            )
        )
    header_crc_valid = header_crc32(block, crc_size) == fields.header_crc32
    if not header_crc_valid:
        findings.append(
            GPT_HEADER_CRC.finding(
                "the primary GPT header's CRC32 does not match: firmware will fall back to the backup "
                "header; repair the table with `sgdisk -v` and `sgdisk -e`"
            )
        )
    if fields.my_lba != PRIMARY_HEADER_LBA:
        findings.append(
            GPT_OUT_OF_SPEC.finding(
                f"the primary GPT header says it is at LBA {fields.my_lba}, not {PRIMARY_HEADER_LBA}: "
                "rewrite the table with `sgdisk`"
            )
        )
    array, array_crc_valid = _entry_array(reader, fields, sector_size, findings)
    partitions = list(_gpt_partitions(array, fields, findings))
    findings.extend(_hybrid(mbr))
    return Gpt(
        sector_size=sector_size,
        header=GptHeader(
            revision=f"{fields.revision >> 16}.{fields.revision & 0xFFFF}",
            header_size=fields.header_size,
            header_crc32=fields.header_crc32,
            header_crc32_valid=header_crc_valid,
            my_lba=fields.my_lba,
            alternate_lba=fields.alternate_lba,
            first_usable_lba=fields.first_usable_lba,
            last_usable_lba=fields.last_usable_lba,
            disk_guid=guid(fields.disk_guid),
            partition_entry_lba=fields.partition_entry_lba,
            number_of_partition_entries=fields.number_of_partition_entries,
            size_of_partition_entry=fields.size_of_partition_entry,
            partition_entry_array_crc32=fields.partition_entry_array_crc32,
            partition_entry_array_crc32_valid=array_crc_valid,
        ),
        backup=_backup(reader, fields, sector_size, findings),
        partitions=partitions,
        mbr=mbr,
    )


def _hybrid(mbr: Mbr | None) -> Iterator[Finding]:
    """A hybrid MBR: beside the 0xEE record that guards the GPT, the MBR lists partitions of its own
    (gdisk's `sgdisk -h`, Boot Camp, hybrid ISOs). BIOS and old systems read those, UEFI the GPT."""
    if mbr is None or not mbr.protective:
        return
    others = [p for p in mbr.partitions if p.os_type != OS_TYPE_PROTECTIVE and not p.logical]
    if others:
        listed = ", ".join(f"{p.number} (type {p.os_type:#04x})" for p in others)
        yield GPT_HYBRID_MBR.finding(
            f"the GPT disk has a hybrid MBR: MBR partition(s) {listed} sit beside the 0xEE record, so BIOS "
            "boot code and MBR-only systems see those partitions while UEFI sees the GPT: normal for hybrid "
            "ISOs and Boot Camp disks; keep both tables in step when partitions change (gdisk's recovery menu "
            "rebuilds a hybrid or a plain protective MBR)"
        )


def _entry_array(
    reader: Reader, fields: GptHeaderFields, sector_size: int, findings: list[Finding]
) -> tuple[bytes, bool | None]:
    """The partition entry array, clamped to the caps; and whether its CRC32 matches (None: not
    checked because the array was not read whole)."""
    size = fields.size_of_partition_entry
    if size < MIN_PARTITION_ENTRY_SIZE or size > MAX_PARTITION_ENTRY_SIZE or size % PARTITION_ENTRY_ALIGN:
        findings.append(
            GPT_OUT_OF_SPEC.finding(
                f"the GPT SizeOfPartitionEntry is {size}, not a multiple of {PARTITION_ENTRY_ALIGN} in "
                f"{MIN_PARTITION_ENTRY_SIZE}..{MAX_PARTITION_ENTRY_SIZE}, so no partition is listed: "
                "rewrite the table with `sgdisk`"
            )
        )
        return b"", None
    count = fields.number_of_partition_entries
    if count > MAX_PARTITION_ENTRIES:
        findings.append(
            GPT_OUT_OF_SPEC.finding(
                f"the GPT declares {count} partition entries, more than the {MAX_PARTITION_ENTRIES} read, "
                "so its CRC is not checked: rewrite the table with `sgdisk`"
            )
        )
        count = MAX_PARTITION_ENTRIES
    offset = fields.partition_entry_lba * sector_size
    array = reader.read_upto(offset, count * size, "GPT partition entry array")
    if len(array) < count * size:
        findings.append(
            GPT_OUT_OF_SPEC.finding(
                f"the GPT partition entry array at LBA {fields.partition_entry_lba} runs past the end of "
                "the file, so only the entries before the end are listed: the image was cut short"
            )
        )
        return array, None
    if count != fields.number_of_partition_entries:
        return array, None
    valid = zlib.crc32(array) == fields.partition_entry_array_crc32
    if not valid:
        findings.append(
            GPT_ENTRIES_CRC.finding(
                "the GPT partition entry array's CRC32 does not match the header: firmware will use the "
                "backup array; repair the table with `sgdisk -v` and `sgdisk -e`"
            )
        )
    return array, valid


def _gpt_partitions(array: bytes, fields: GptHeaderFields, findings: list[Finding]) -> Iterator[GptPartition]:
    size = fields.size_of_partition_entry
    outside: list[int] = []
    # Tools fill the array from its start: the entries after the last nonzero byte are all unused
    # (most of the 128), and are not walked at all.
    used = -(-end_of_data(array) // size) if size else 0
    for index in range(min(len(array) // size, used) if size else 0):
        if array.startswith(UNUSED_ENTRY_GUID, index * size):
            continue  # a gap between used entries: skipped before unpacking
        entry = GptPartitionEntry.unpack(array, index * size)
        type_guid = guid(entry.partition_type_guid)
        number = index + 1
        if not fields.first_usable_lba <= entry.starting_lba <= entry.ending_lba <= fields.last_usable_lba:
            outside.append(number)
        yield GptPartition(
            number=number,
            partition_type_guid=type_guid,
            type_name=GPT_TYPE_NAMES.get(type_guid),
            unique_partition_guid=guid(entry.unique_partition_guid),
            starting_lba=entry.starting_lba,
            ending_lba=entry.ending_lba,
            attributes=entry.attributes,
            partition_name=utf16_c_string(entry.partition_name, "little"),
        )
    if outside:
        numbers = ", ".join(map(str, outside))
        findings.append(
            GPT_OUTSIDE_USABLE.finding(
                f"GPT partition(s) {numbers} lie outside the usable LBAs {fields.first_usable_lba}.."
                f"{fields.last_usable_lba} the header declares (as xorriso's -isohybrid-gpt-basdat writes), "
                "or end before they start: partitioning tools may refuse to edit this table"
            )
        )


def _backup(reader: Reader, primary: GptHeaderFields, sector_size: int, findings: list[Finding]) -> GptBackup:
    """Look at the last LBA (where §5.3.1 puts the backup header) and, if the primary points
    elsewhere inside the file (a disk grown after partitioning), there too: at most two reads."""
    last_lba = reader.size // sector_size - 1
    candidates = [last_lba]
    if primary.alternate_lba != last_lba and PRIMARY_HEADER_LBA < primary.alternate_lba < last_lba:
        candidates.append(primary.alternate_lba)
    backup = GptBackup(lba=last_lba, present=False, valid=False)
    for lba in candidates:
        block = reader.read_upto(lba * sector_size, sector_size, "backup GPT header")
        backup = _backup_at(lba, block, primary, sector_size)
        if backup.valid:
            break
    if not backup.valid and primary.alternate_lba > last_lba:
        # The primary header says where the disk ends: past the end of the file, so it was cut.
        missing = (primary.alternate_lba - last_lba) * sector_size
        findings.append(
            GPT_BACKUP.finding(
                f"the backup GPT header is missing: the primary header puts it at LBA {primary.alternate_lba}, "
                f"past the end of the file (last LBA {last_lba}), so {missing} bytes of the disk are missing: "
                "download it again; if it was shrunk on purpose, rebuild the backup with `sgdisk -e`"
            )
        )
    elif not backup.valid:
        state = "invalid" if backup.present else "missing"
        findings.append(
            GPT_BACKUP.finding(
                f"the backup GPT header at LBA {backup.lba} is {state}: the image may be cut short; "
                "if it is complete, rebuild the backup with `sgdisk -e`"
            )
        )
    elif backup.lba != last_lba:
        findings.append(
            GPT_BACKUP.finding(
                f"the backup GPT header is at LBA {backup.lba}, not at the last LBA {last_lba}: the disk was "
                "grown after partitioning; move it with `sgdisk -e` (cloud-init's growpart also does)"
            )
        )
    return backup


def _backup_at(lba: int, block: bytes, primary: GptHeaderFields, sector_size: int) -> GptBackup:
    if len(block) < MIN_HEADER_SIZE or not block.startswith(GPT_SIGNATURE):
        return GptBackup(lba=lba, present=False, valid=False)
    fields = GptHeaderFields.unpack(block)
    crc_size = min(max(fields.header_size, MIN_HEADER_SIZE), sector_size)
    valid = (
        header_crc32(block, crc_size) == fields.header_crc32
        and fields.my_lba == lba
        and fields.alternate_lba == PRIMARY_HEADER_LBA
        and fields.disk_guid == primary.disk_guid
        and fields.partition_entry_array_crc32 == primary.partition_entry_array_crc32
    )
    return GptBackup(lba=lba, present=True, valid=valid)


# --- Firmware --------------------------------------------------------------------------------


def boot_evidence(table: Mbr | Gpt | None) -> tuple[list[str], list[str]]:
    """What the table says about firmware: (BIOS evidence, UEFI evidence), each a list of reasons.

    GPT: an EFI System Partition means UEFI; a BIOS boot partition (GRUB's core image) or the
    Legacy BIOS Bootable attribute means BIOS. MBR without GPT: an active partition with boot code
    in the MBR means BIOS, an 0xEF partition UEFI.
    """
    bios: list[str] = []
    uefi: list[str] = []
    if isinstance(table, Gpt):
        for part in table.partitions:
            label = f"GPT partition {part.number} ({part.partition_name!r})"
            if part.partition_type_guid == EFI_SYSTEM_PARTITION:
                uefi.append(f"{label} is an EFI System Partition ({EFI_SYSTEM_PARTITION})")
            elif part.partition_type_guid == BIOS_BOOT_PARTITION:
                bios.append(f"{label} is a BIOS boot partition ({BIOS_BOOT_PARTITION})")
            if part.attributes & LEGACY_BIOS_BOOTABLE:
                bios.append(f"{label} has the Legacy BIOS Bootable attribute")
    elif isinstance(table, Mbr):
        for record in table.partitions:
            if record.bootable and table.boot_code:
                bios.append(f"MBR partition {record.number} is active and the MBR holds boot code")
            if record.os_type == OS_TYPE_EFI_SYSTEM:
                uefi.append(f"MBR partition {record.number} has type 0xef (EFI System)")
    return bios, uefi


def firmware_from(bios: Sequence[str], uefi: Sequence[str]) -> Firmware | None:
    """A Firmware model when there is any evidence at all; None says the image states nothing."""
    if not bios and not uefi:
        return None
    return Firmware(bios=bool(bios), uefi=bool(uefi), evidence=[*bios, *uefi])
