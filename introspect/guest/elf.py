"""The architecture an ELF executable is built for, in Nova's words, from its header alone.

Spec: the System V ABI's ELF header (`Elf32_Ehdr`/`Elf64_Ehdr`, gABI "ELF Header"): e_ident's
EI_CLASS (32 or 64 bits) and EI_DATA (byte order) decide how the rest is laid out; e_machine names
the processor; e_flags carries what the processor's supplement adds (ARM's EABI float ABI, ELF for
the Arm Architecture "e_flags"). The whole header is at most 64 bytes: `HEADER_SIZE` is all a
caller reads.

Nova's words (nova/objects/fields.py Architecture, the vocabulary's `architecture` enum) name a
processor and, where it matters, its byte order: ppc64 is big-endian and ppc64le little-endian,
mips64el the little-endian MIPS64. A header this module cannot name in Nova's words gives None,
not a guess: 32-bit ARM is `armv7l` only with the hard-float EABI (Debian's armhf, built for
ARMv7); a soft-float binary (armel, built for ARMv5TE) could be any ARM. riscv64 and loongarch64
have no Nova word yet and are still named, so that the report says what the guest is; the
properties layer writes only words the vocabulary accepts.
"""

from __future__ import annotations

from typing import ClassVar

from introspect.errors import BadField
from introspect.safety import GUEST_UNREADABLE
from introspect.structure import BigEndianStructure, LittleEndianStructure, chars, u8, u16, u32, u64

ELFMAG = b"\x7fELF"
#: e_ident[EI_CLASS]
ELFCLASS32 = 1
ELFCLASS64 = 2
#: e_ident[EI_DATA]
ELFDATA2LSB = 1
ELFDATA2MSB = 2


class ElfIdent(LittleEndianStructure):
    """e_ident (gABI "ELF Identification"), the 16 bytes every ELF file starts with."""

    OFFSET: ClassVar[int] = 0

    ei_mag: bytes = chars(4)
    ei_class: int = u8()
    ei_data: int = u8()
    ei_version: int = u8()
    ei_osabi: int = u8()
    ei_abiversion: int = u8()
    ei_pad: bytes = chars(7)


class Elf32HeaderLSB(LittleEndianStructure):
    """Elf32_Ehdr after e_ident, little-endian, up to e_flags."""

    OFFSET: ClassVar[int] = ElfIdent.SIZE

    e_type: int = u16()
    e_machine: int = u16()
    e_version: int = u32()
    e_entry: int = u32()
    e_phoff: int = u32()
    e_shoff: int = u32()
    e_flags: int = u32()


class Elf32HeaderMSB(BigEndianStructure):
    """Elf32_Ehdr after e_ident, big-endian, up to e_flags."""

    OFFSET: ClassVar[int] = ElfIdent.SIZE

    e_type: int = u16()
    e_machine: int = u16()
    e_version: int = u32()
    e_entry: int = u32()
    e_phoff: int = u32()
    e_shoff: int = u32()
    e_flags: int = u32()


class Elf64HeaderLSB(LittleEndianStructure):
    """Elf64_Ehdr after e_ident, little-endian, up to e_flags."""

    OFFSET: ClassVar[int] = ElfIdent.SIZE

    e_type: int = u16()
    e_machine: int = u16()
    e_version: int = u32()
    e_entry: int = u64()
    e_phoff: int = u64()
    e_shoff: int = u64()
    e_flags: int = u32()


class Elf64HeaderMSB(BigEndianStructure):
    """Elf64_Ehdr after e_ident, big-endian, up to e_flags."""

    OFFSET: ClassVar[int] = ElfIdent.SIZE

    e_type: int = u16()
    e_machine: int = u16()
    e_version: int = u32()
    e_entry: int = u64()
    e_phoff: int = u64()
    e_shoff: int = u64()
    e_flags: int = u32()


ElfHeader = Elf32HeaderLSB | Elf32HeaderMSB | Elf64HeaderLSB | Elf64HeaderMSB
HEADERS: dict[tuple[int, int], type[ElfHeader]] = {
    (ELFCLASS32, ELFDATA2LSB): Elf32HeaderLSB,
    (ELFCLASS32, ELFDATA2MSB): Elf32HeaderMSB,
    (ELFCLASS64, ELFDATA2LSB): Elf64HeaderLSB,
    (ELFCLASS64, ELFDATA2MSB): Elf64HeaderMSB,
}
#: Sizeof(Elf64_Ehdr): the most a caller needs to read.
HEADER_SIZE = 64

# e_machine values (gABI "e_machine", and the numbers the processor supplements registered).
EM_SPARC = 2
EM_386 = 3
EM_68K = 4
EM_MIPS = 8
EM_PARISC = 15
EM_SPARC32PLUS = 18
EM_PPC = 20
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_SH = 42
EM_SPARCV9 = 43
EM_IA_64 = 50
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258
EM_ALPHA = 0x9026

#: ARM e_flags: the EABI version in the top byte, and EF_ARM_ABI_FLOAT_HARD (bit 10, EABI 5).
EF_ARM_EABIMASK = 0xFF000000
EF_ARM_EABI_VER5 = 0x05000000
EF_ARM_ABI_FLOAT_HARD_BIT = 10
EF_ARM_ABI_FLOAT_HARD = 1 << EF_ARM_ABI_FLOAT_HARD_BIT

#: (e_machine, EI_CLASS, EI_DATA) -> the word; None in a key matches either value.
_WORDS: dict[tuple[int, int | None, int | None], str] = {
    (EM_X86_64, None, ELFDATA2LSB): "x86_64",
    (EM_386, ELFCLASS32, ELFDATA2LSB): "i686",
    (EM_AARCH64, ELFCLASS64, ELFDATA2LSB): "aarch64",
    (EM_PPC64, ELFCLASS64, ELFDATA2LSB): "ppc64le",
    (EM_PPC64, ELFCLASS64, ELFDATA2MSB): "ppc64",
    (EM_PPC, ELFCLASS32, ELFDATA2MSB): "ppc",
    (EM_PPC, ELFCLASS32, ELFDATA2LSB): "ppcle",
    (EM_S390, ELFCLASS64, ELFDATA2MSB): "s390x",
    (EM_S390, ELFCLASS32, ELFDATA2MSB): "s390",
    (EM_MIPS, ELFCLASS64, ELFDATA2LSB): "mips64el",
    (EM_MIPS, ELFCLASS64, ELFDATA2MSB): "mips64",
    (EM_MIPS, ELFCLASS32, ELFDATA2LSB): "mipsel",
    (EM_MIPS, ELFCLASS32, ELFDATA2MSB): "mips",
    (EM_RISCV, ELFCLASS64, ELFDATA2LSB): "riscv64",
    (EM_LOONGARCH, ELFCLASS64, ELFDATA2LSB): "loongarch64",
    (EM_SPARCV9, ELFCLASS64, ELFDATA2MSB): "sparc64",
    (EM_SPARC, ELFCLASS32, ELFDATA2MSB): "sparc",
    (EM_SPARC32PLUS, ELFCLASS32, ELFDATA2MSB): "sparc",
    (EM_IA_64, ELFCLASS64, ELFDATA2LSB): "ia64",
    (EM_PARISC, ELFCLASS64, ELFDATA2MSB): "parisc64",
    (EM_PARISC, ELFCLASS32, ELFDATA2MSB): "parisc",
    (EM_68K, ELFCLASS32, ELFDATA2MSB): "m68k",
    (EM_SH, ELFCLASS32, ELFDATA2LSB): "sh4",
    (EM_SH, ELFCLASS32, ELFDATA2MSB): "sh4eb",
    (EM_ALPHA, ELFCLASS64, ELFDATA2LSB): "alpha",
}


def is_elf(data: bytes) -> bool:
    """Does `data` start with the ELF magic?"""
    return data[: len(ELFMAG)] == ELFMAG


def architecture(data: bytes) -> str | None:
    """The architecture of the ELF file whose first bytes (at least its header) are `data`, in
    Nova's words; None when the header names a processor without a word here (see the module
    docstring). Raises `BadField` (guest.unreadable) when `data` is not a whole ELF header."""
    if len(data) < ElfIdent.SIZE or not is_elf(data):
        raise BadField(GUEST_UNREADABLE, "e_ident", data[: len(ELFMAG)], "the ELF magic 7f 45 4c 46")
    ident = ElfIdent.unpack(data)
    kind = HEADERS.get((ident.ei_class, ident.ei_data))
    if kind is None:
        raise BadField(
            GUEST_UNREADABLE, "e_ident[EI_CLASS, EI_DATA]", (ident.ei_class, ident.ei_data), "1 or 2 each"
        )
    if len(data) < kind.OFFSET + kind.SIZE:
        raise BadField(
            GUEST_UNREADABLE, "ELF header", f"{len(data)} bytes", f"{kind.OFFSET + kind.SIZE} bytes"
        )
    header = kind.unpack(data)
    if header.e_machine == EM_ARM:
        return _arm(ident, header.e_flags)
    for key in (
        (header.e_machine, ident.ei_class, ident.ei_data),
        (header.e_machine, None, ident.ei_data),
    ):
        if key in _WORDS:
            return _WORDS[key]
    return None


def _arm(ident: ElfIdent, flags: int) -> str | None:
    """32-bit ARM: armv7l for the EABI 5 hard-float ABI (little-endian); nothing else is named."""
    if ident.ei_class != ELFCLASS32 or ident.ei_data != ELFDATA2LSB:
        return None
    if flags & EF_ARM_EABIMASK == EF_ARM_EABI_VER5 and flags & EF_ARM_ABI_FLOAT_HARD:
        return "armv7l"
    return None
