"""PE headers of real EFI executables (Debian's signed shim, GRUB and systemd-boot for x86_64,
aarch64 and i386), against what `llvm-readobj --file-headers --sections` and `file -b` said about
them (fixtures/make/facts.sh)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from introspect.errors import BadField, ImageError
from introspect.guest import pe
from introspect.guest.esp import is_shim
from introspect.guest.pe import ImageDosHeader, ImageFileHeader, ImageOptionalHeaderStart, read_pe
from introspect.sources import Budget, BytesSource, FileSource, Reader
from introspect.vocabulary import check
from tests.conftest import fixture_group
from tests.tools import recorded, rewrite

FILES = [
    "shimx64.efi", "shimaa64.efi", "shimia32.efi", "grubx64.efi", "grubaa64.efi", "grubia32.efi",
    "systemd-bootx64.efi", "systemd-bootaa64.efi",
]  # fmt: skip
#: `file -b`'s machine words -> Nova's.
FILE_WORDS = {"x86-64": "x86_64", "Aarch64": "aarch64", "Intel 80386": "i686"}


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("facts") / "pe"


def readobj(path: Path) -> dict[str, object]:
    """What llvm-readobj said: the machine, section count, optional header magic, subsystem and
    section names (long ones resolved through the string table)."""
    text = recorded(path, "readobj.txt")
    number = lambda pattern: int(re.search(pattern, text).group(1), 0)  # noqa: E731
    return {
        "machine": number(r"Machine: \S+ \((0x[0-9A-F]+)\)"),
        "sections": number(r"SectionCount: (\d+)"),
        "magic": number(r"Magic: (0x[0-9A-F]+)"),
        "subsystem": number(r"Subsystem: \S+ \((0x[0-9A-F]+)\)"),
        "names": tuple(re.findall(r"Name: (\S+) \(", text)),
    }


def read(path: Path) -> tuple[pe.PeImage, Reader]:
    reader = Reader(FileSource(path), Budget(max_reads=2, max_bytes=pe.MAX_HEADERS + pe.MAX_STRING_TABLE))
    return read_pe(reader, reader.size, path.name), reader


@pytest.mark.parametrize("name", FILES)
def test_headers_are_what_llvm_readobj_says(group: Path, name: str) -> None:
    image, reader = read(group / name)
    said = readobj(group / name)
    assert image.machine == said["machine"]
    assert image.magic == said["magic"]
    assert image.subsystem == said["subsystem"] == pe.SUBSYSTEM_EFI_APPLICATION
    assert image.efi
    assert len(image.sections) == said["sections"]
    assert image.sections == said["names"]
    assert reader.reads <= 2


@pytest.mark.parametrize("name", FILES)
def test_architecture_is_what_file_says(group: Path, name: str) -> None:
    description = recorded(group / name, "file.txt")
    assert "(EFI application)" in description
    words = {word for machine, word in FILE_WORDS.items() if f") {machine} (" in description}
    image, _ = read(group / name)
    assert {image.architecture} == words
    assert check("architecture", image.architecture) is None


@pytest.mark.parametrize("name", FILES)
def test_shim_is_known_by_its_vendor_cert_section(group: Path, name: str) -> None:
    """Shim carries the distribution's certificate in .vendor_cert (a long name, resolved through
    the COFF string table); copied to BOOTX64.EFI, it is still shim. GRUB and systemd-boot are not."""
    image, _ = read(group / name)
    is_shim_file = name.startswith("shim")
    assert (".vendor_cert" in readobj(group / name)["names"]) == is_shim_file
    assert is_shim("BOOTX64.EFI", image) == is_shim_file
    assert is_shim(name, image) == is_shim_file


def hostile(group: Path, change) -> bytes:
    data = bytearray((group / "shimx64.efi").read_bytes()[: 2 * pe.MAX_HEADERS])
    change(data)
    return bytes(data)


def lfanew(data: bytes) -> int:
    return ImageDosHeader.unpack(data).e_lfanew


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: rewrite(d, ImageDosHeader, e_lfanew=0xFFFFFFF0), "e_lfanew is 4294967280"),
        (lambda d: rewrite(d, ImageDosHeader, e_magic=b"ZM"), "e_magic"),
        (lambda d: rewrite(d, ImageFileHeader, lfanew(d), Signature=b"PE\0\1"), "PE signature"),
        (
            lambda d: rewrite(d, ImageFileHeader, lfanew(d), NumberOfSections=0xFFFF),
            "NumberOfSections is 65535",
        ),
        (
            lambda d: rewrite(d, ImageFileHeader, lfanew(d), NumberOfSections=pe.MAX_SECTIONS),
            "the section table",
        ),
        (lambda d: rewrite(d, ImageFileHeader, lfanew(d), SizeOfOptionalHeader=0xFFFF), "the section table"),
        (
            lambda d: rewrite(d, ImageOptionalHeaderStart, lfanew(d) + ImageFileHeader.SIZE, Magic=0x107),
            "Magic",
        ),
    ],
)
def test_broken_headers_are_bad_fields(group: Path, change, message: str) -> None:
    data = hostile(group, change)
    reader = Reader(BytesSource(data, "hostile.efi"))
    with pytest.raises(BadField, match=message) as raised:
        read_pe(reader, reader.size, "hostile.efi")
    assert raised.value.rule.code == "guest.unreadable"


def test_a_cut_file_is_an_image_error(group: Path) -> None:
    for size in (0, 2, 100, 300):
        data = (group / "shimx64.efi").read_bytes()[:size]
        reader = Reader(BytesSource(data, "cut.efi"))
        with pytest.raises(ImageError):
            read_pe(reader, reader.size, "cut.efi")


def test_a_string_table_out_of_reach_keeps_the_short_names(group: Path) -> None:
    """The headers alone (the symbol table's offset past the end): long names stay "/N"."""
    data = (group / "shimx64.efi").read_bytes()[: pe.MAX_HEADERS]
    reader = Reader(BytesSource(data, "headers.efi"))
    image = read_pe(reader, reader.size, "headers.efi")
    assert ".text" in image.sections
    assert any(name.startswith("/") for name in image.sections)
    assert not is_shim("BOOTX64.EFI", image)
