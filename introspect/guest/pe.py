"""A PE image's headers: the machine it is built for (in Nova's words), its subsystem (an EFI
application, a native driver, a Windows program) and its section names.

Spec: Microsoft's "PE Format" (learn.microsoft.com/windows/win32/debug/pe-format): the MS-DOS stub
whose e_lfanew (at 0x3c) points at the signature "PE\\0\\0", then the COFF File Header
(IMAGE_FILE_HEADER), the Optional Header (IMAGE_OPTIONAL_HEADER32 or 64, told apart by its Magic)
and the Section Table (IMAGE_SECTION_HEADER each). A section name longer than eight bytes is
"/N", N a decimal offset into the COFF string table, which follows the symbol table
(PointerToSymbolTable + NumberOfSymbols * 18): shim's `.vendor_cert` and `.sbatlevel` are such names.

Everything is read in at most two bounded reads: the first `MAX_HEADERS` bytes (the headers of
every real image lie there: SizeOfHeaders is 0x400 or 0x1000), and, only when a section has a
long name, `MAX_STRING_TABLE` bytes of the string table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from introspect.decode import c_string
from introspect.errors import BadField
from introspect.safety import GUEST_UNREADABLE
from introspect.structure import LittleEndianStructure, Reads, chars, pad, u8, u16, u32, unpack_array

#: The headers are read in one read of at most this many bytes (see the module docstring).
MAX_HEADERS = 4096
#: At most this many bytes of the string table, from its start: section names' offsets in real
#: images are a few hundred bytes in (the section names come first in the table).
MAX_STRING_TABLE = 1024
#: The loader refuses more than 96 sections (PE Format, "NumberOfSections": "the Windows loader
#: limits the number of sections to 96").
MAX_SECTIONS = 96
#: The COFF symbol table's record size (IMAGE_SYMBOL).
SYMBOL_SIZE = 18


class ImageDosHeader(LittleEndianStructure):
    """IMAGE_DOS_HEADER (PE Format "MS-DOS Stub"): e_magic "MZ" and, at 0x3c, e_lfanew."""

    OFFSET: ClassVar[int] = 0

    e_magic: bytes = chars(2)
    e_reserved: None = pad(58)
    e_lfanew: int = u32()


DOS_MAGIC = b"MZ"
PE_SIGNATURE = b"PE\0\0"


class ImageFileHeader(LittleEndianStructure):
    """IMAGE_FILE_HEADER (PE Format "COFF File Header"), after the signature."""

    Signature: bytes = chars(4)
    Machine: int = u16()
    NumberOfSections: int = u16()
    TimeDateStamp: int = u32()
    PointerToSymbolTable: int = u32()
    NumberOfSymbols: int = u32()
    SizeOfOptionalHeader: int = u16()
    Characteristics: int = u16()


class ImageOptionalHeaderStart(LittleEndianStructure):
    """The first 72 bytes of IMAGE_OPTIONAL_HEADER (PE Format "Optional Header Standard Fields"
    and "Windows-Specific Fields"), up to Subsystem and DllCharacteristics, which lie at the same
    offsets in PE32 and PE32+ (BaseOfData in PE32 takes the place of ImageBase's upper half)."""

    Magic: int = u16()
    MajorLinkerVersion: int = u8()
    MinorLinkerVersion: int = u8()
    SizeOfCode: int = u32()
    SizeOfInitializedData: int = u32()
    SizeOfUninitializedData: int = u32()
    AddressOfEntryPoint: int = u32()
    BaseOfCode: int = u32()
    ImageBaseOrBaseOfData: bytes = chars(8)
    SectionAlignment: int = u32()
    FileAlignment: int = u32()
    MajorOperatingSystemVersion: int = u16()
    MinorOperatingSystemVersion: int = u16()
    MajorImageVersion: int = u16()
    MinorImageVersion: int = u16()
    MajorSubsystemVersion: int = u16()
    MinorSubsystemVersion: int = u16()
    Win32VersionValue: int = u32()
    SizeOfImage: int = u32()
    SizeOfHeaders: int = u32()
    CheckSum: int = u32()
    Subsystem: int = u16()
    DllCharacteristics: int = u16()


#: Optional Header Magic: PE32 and PE32+.
PE32_MAGIC = 0x10B
PE32PLUS_MAGIC = 0x20B


class ImageSectionHeader(LittleEndianStructure):
    """IMAGE_SECTION_HEADER (PE Format "Section Table (Section Headers)")."""

    Name: bytes = chars(8)
    VirtualSize: int = u32()
    VirtualAddress: int = u32()
    SizeOfRawData: int = u32()
    PointerToRawData: int = u32()
    PointerToRelocations: int = u32()
    PointerToLinenumbers: int = u32()
    NumberOfRelocations: int = u16()
    NumberOfLinenumbers: int = u16()
    Characteristics: int = u32()


#: IMAGE_FILE_MACHINE_* (PE Format "Machine Types") -> Nova's word.
MACHINES = {
    0x8664: "x86_64",  # IMAGE_FILE_MACHINE_AMD64
    0x14C: "i686",  # IMAGE_FILE_MACHINE_I386
    0xAA64: "aarch64",  # IMAGE_FILE_MACHINE_ARM64
    0x1C4: "armv7l",  # IMAGE_FILE_MACHINE_ARMNT (Thumb-2, ARMv7)
    0x200: "ia64",  # IMAGE_FILE_MACHINE_IA64
    0x5064: "riscv64",  # IMAGE_FILE_MACHINE_RISCV64
    0x6264: "loongarch64",  # IMAGE_FILE_MACHINE_LOONGARCH64
}

#: IMAGE_SUBSYSTEM_* (PE Format "Windows Subsystem").
SUBSYSTEM_NATIVE = 1
SUBSYSTEM_WINDOWS_GUI = 2
SUBSYSTEM_WINDOWS_CUI = 3
SUBSYSTEM_EFI_APPLICATION = 10
SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER = 11
SUBSYSTEM_EFI_RUNTIME_DRIVER = 12
SUBSYSTEM_EFI_ROM = 13
EFI_SUBSYSTEMS = frozenset(
    {
        SUBSYSTEM_EFI_APPLICATION,
        SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER,
        SUBSYSTEM_EFI_RUNTIME_DRIVER,
        SUBSYSTEM_EFI_ROM,
    }
)


@dataclass(frozen=True, slots=True)
class PeImage:
    """What the headers say: `machine` (IMAGE_FILE_MACHINE_*), `architecture` (Nova's word, None
    for a machine without one), `subsystem`, and the section names (long ones resolved, or kept
    as "/N" when the string table is out of reach)."""

    machine: int
    architecture: str | None
    magic: int
    subsystem: int
    sections: tuple[str, ...]

    @property
    def efi(self) -> bool:
        """An EFI image (application, driver or option ROM)."""
        return self.subsystem in EFI_SUBSYSTEMS


def is_pe(head: bytes) -> bool:
    """Does `head` start with the MS-DOS magic every PE image has?"""
    return head[: len(DOS_MAGIC)] == DOS_MAGIC


def read_pe(file: Reads, size: int, what: str) -> PeImage:
    """The headers of the PE image `file` (of `size` bytes), read as the module docstring says.
    Raises `BadField` (guest.unreadable) when it is not a PE image or its headers do not fit
    their clamps, `TruncatedImage` when they run past the file."""
    head = file.read(0, min(size, MAX_HEADERS), f"{what}: PE headers")
    if len(head) < ImageDosHeader.SIZE or not is_pe(head):
        raise BadField(GUEST_UNREADABLE, f"{what}: e_magic", head[:2], "'MZ'")
    lfanew = ImageDosHeader.unpack(head).e_lfanew
    optional_at = lfanew + ImageFileHeader.SIZE
    if optional_at + ImageOptionalHeaderStart.SIZE > len(head):
        raise BadField(
            GUEST_UNREADABLE,
            f"{what}: e_lfanew",
            lfanew,
            f"headers within the first {len(head)} bytes",
            advice="the PE headers are not where any linker puts them",
        )
    coff = ImageFileHeader.unpack(head, lfanew)
    if coff.Signature != PE_SIGNATURE:
        raise BadField(GUEST_UNREADABLE, f"{what}: PE signature", coff.Signature, "'PE\\0\\0'")
    optional = ImageOptionalHeaderStart.unpack(head, optional_at)
    if optional.Magic not in (PE32_MAGIC, PE32PLUS_MAGIC):
        raise BadField(
            GUEST_UNREADABLE, f"{what}: optional header Magic", hex(optional.Magic), "0x10b or 0x20b"
        )
    if coff.NumberOfSections > MAX_SECTIONS:
        raise BadField(
            GUEST_UNREADABLE, f"{what}: NumberOfSections", coff.NumberOfSections, f"at most {MAX_SECTIONS}"
        )
    table_at = optional_at + coff.SizeOfOptionalHeader
    headers = (
        unpack_array(ImageSectionHeader, head, coff.NumberOfSections, table_at)
        if table_at <= len(head)
        else []
    )
    if len(headers) < coff.NumberOfSections:
        raise BadField(
            GUEST_UNREADABLE,
            f"{what}: the section table",
            f"{coff.NumberOfSections} sections at {table_at}",
            f"within the first {len(head)} bytes",
        )
    raw_names = [c_string(header.Name, "latin-1") for header in headers]
    return PeImage(
        machine=coff.Machine,
        architecture=MACHINES.get(coff.Machine),
        magic=optional.Magic,
        subsystem=optional.Subsystem,
        sections=_long_names(file, size, coff, raw_names, what),
    )


def _long_names(
    file: Reads, size: int, coff: ImageFileHeader, names: list[str], what: str
) -> tuple[str, ...]:
    """`names` with each "/N" replaced by the string table's name at N, when the table lies in the
    file and N within `MAX_STRING_TABLE` of its start (otherwise "/N" is kept)."""
    offsets = {name: int(name[1:]) for name in names if name.startswith("/") and name[1:].isdigit()}
    table = coff.PointerToSymbolTable + coff.NumberOfSymbols * SYMBOL_SIZE
    if not offsets or coff.PointerToSymbolTable == 0 or table >= size:
        return tuple(names)
    window = file.read(table, min(MAX_STRING_TABLE, size - table), f"{what}: COFF string table")
    resolved = []
    for name in names:
        at = offsets.get(name)
        if at is None or at >= len(window):
            resolved.append(name)
        else:
            resolved.append(c_string(window[at : at + MAX_STRING_TABLE], "latin-1"))
    return tuple(resolved)
