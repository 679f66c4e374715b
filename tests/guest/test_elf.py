"""ELF headers of real executables (Debian's busybox-static of every release architecture),
against what `readelf -h` and `file -b` said about them (fixtures/make/facts.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from introspect.errors import BadField
from introspect.guest import elf
from introspect.guest.elf import Elf64HeaderLSB, Elf64HeaderMSB, ElfIdent
from introspect.structure import pack
from introspect.vocabulary import check
from tests.conftest import fixture_group
from tests.tools import recorded

#: Debian's release architectures in bookworm (riscv64 is not one: trixie's first).
ARCHES = ["amd64", "i386", "arm64", "armhf", "armel", "ppc64el", "s390x", "mips64el"]
#: readelf's (Machine, Class, Data) -> Nova's word; ARM is decided by its float ABI below.
READELF_WORDS = {
    ("Advanced Micro Devices X86-64", "ELF64", "little endian"): "x86_64",
    ("Intel 80386", "ELF32", "little endian"): "i686",
    ("AArch64", "ELF64", "little endian"): "aarch64",
    ("PowerPC64", "ELF64", "little endian"): "ppc64le",
    ("IBM S/390", "ELF64", "big endian"): "s390x",
    ("MIPS R3000", "ELF64", "little endian"): "mips64el",
}


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("facts") / "elf"


def readelf(binary: Path) -> dict[str, str]:
    """`readelf -h`'s "Key: value" lines."""
    fields = {}
    for line in recorded(binary, "readelf.txt").splitlines():
        key, _, value = line.strip().partition(":")
        fields[key] = value.strip()
    return fields


def expected(binary: Path) -> str | None:
    fields = readelf(binary)
    data = fields["Data"].split(", ")[-1]
    if fields["Machine"] == "ARM":
        return "armv7l" if "hard-float ABI" in fields["Flags"] else None
    return READELF_WORDS[(fields["Machine"], fields["Class"], data)]


@pytest.mark.parametrize("arch", ARCHES)
def test_architecture_is_what_readelf_says(group: Path, arch: str) -> None:
    binary = group / f"busybox-{arch}"
    head = binary.read_bytes()[: elf.HEADER_SIZE]
    word = elf.architecture(head)
    assert word == expected(binary)
    bits = "64-bit" if readelf(binary)["Class"] == "ELF64" else "32-bit"
    assert recorded(binary, "file.txt").startswith(f"ELF {bits} ")
    if word is not None:
        assert check("architecture", word) is None


def test_soft_float_arm_is_not_named(group: Path) -> None:
    """armel is ARMv5TE soft-float: no Nova word fits it, so none is written."""
    binary = group / "busybox-armel"
    assert "soft-float ABI" in readelf(binary)["Flags"]
    assert elf.architecture(binary.read_bytes()[: elf.HEADER_SIZE]) is None


def test_a_big_endian_header_is_read_big_endian(group: Path) -> None:
    """ppc64el's header rewritten as a big-endian one (EI_DATA = ELFDATA2MSB, every field in that
    order): the same machine is ppc64, PowerPC's big-endian word."""
    data = bytearray((group / "busybox-ppc64el").read_bytes()[: elf.HEADER_SIZE])
    header = Elf64HeaderLSB.unpack(data)
    data[ElfIdent.offset_of("ei_data")] = elf.ELFDATA2MSB
    big = Elf64HeaderMSB(**{name: getattr(header, name) for name in Elf64HeaderLSB.FIELDS})
    data[Elf64HeaderMSB.OFFSET : Elf64HeaderMSB.OFFSET + Elf64HeaderMSB.SIZE] = pack(big)
    assert elf.architecture(bytes(data)) == "ppc64"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data[:20], "ELF header is '20 bytes'"),
        (lambda data: b"\x7fELG" + data[4:], "e_ident"),
        (lambda data: data[:4] + b"\x03" + data[5:], "EI_CLASS"),
        (lambda data: data[:5] + b"\x00" + data[6:], "EI_CLASS"),
        (lambda data: b"", "e_ident"),
    ],
)
def test_broken_headers_are_bad_fields(group: Path, change, message: str) -> None:
    data = (group / "busybox-amd64").read_bytes()[: elf.HEADER_SIZE]
    with pytest.raises(BadField, match=message) as raised:
        elf.architecture(change(data))
    assert raised.value.rule.code == "guest.unreadable"
