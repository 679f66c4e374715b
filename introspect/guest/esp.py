"""An EFI System Partition's loaders: \\EFI\\BOOT\\BOOT{X64,AA64,IA32...}.EFI and vendors' loaders,
each with its PE architecture, and shim.

UEFI (specification 2.10, 3.5.1.1 "Removable Media Boot Behavior") boots \\EFI\\BOOT\\BOOT<arch>.EFI
when no boot entry names a loader; distributions install theirs under \\EFI\\<vendor>\\ (grubx64.efi,
shimx64.efi), Windows its \\EFI\\Microsoft\\Boot\\bootmgfw.efi. Every *.efi file in \\EFI's
directories and their own subdirectories one level down is a loader here (bounded listings), its
architecture read from its PE header (at most two small reads: `introspect.guest.pe`).

Shim, the first stage that makes Secure Boot possible with a distribution's own keys, is known by
its name (shim*.efi) or, when it was copied to BOOT<arch>.EFI, by the `.vendor_cert` section it
carries the distribution's certificate in.
"""

from __future__ import annotations

from introspect.guest.files import attempt, open_file
from introspect.guest.fs.base import Filesystem, list_directory
from introspect.guest.model import Loader
from introspect.guest.pe import PeImage, read_pe
from introspect.model import Finding

EFI = "/EFI"
#: Directories listed under \EFI (BOOT and a few vendors), entries listed in each, and loaders
#: read in all: an ESP holds a handful of each.
MAX_VENDORS = 32
MAX_ENTRIES = 64
MAX_LOADERS = 32
#: Microsoft keeps bootmgfw.efi one level deeper, in \EFI\Microsoft\Boot.
NESTED = ("Boot",)
SHIM_PREFIX = "shim"
SHIM_SECTION = ".vendor_cert"
EFI_SUFFIX = ".efi"


def inspect_esp(fs: Filesystem, device: str, notes: list[Finding]) -> list[Loader]:
    """The EFI loaders on `fs` (none when it holds no /EFI directory)."""
    where = f"{device} ({fs.name})"
    vendors = attempt(notes, f"{where} {EFI}", list_directory, fs, EFI, MAX_VENDORS) or []
    loaders: list[Loader] = []
    for vendor in sorted(vendors):
        if vendor in (".", ".."):
            continue
        directory = f"{EFI}/{vendor}"
        entries = attempt(notes, f"{where} {directory}", list_directory, fs, directory, MAX_ENTRIES) or []
        paths = [f"{directory}/{name}" for name in sorted(entries) if name.casefold().endswith(EFI_SUFFIX)]
        for nested in sorted(entries):
            if nested.casefold() in {name.casefold() for name in NESTED}:
                inner = f"{directory}/{nested}"
                names = attempt(notes, f"{where} {inner}", list_directory, fs, inner, MAX_ENTRIES) or []
                paths += [f"{inner}/{name}" for name in sorted(names) if name.casefold().endswith(EFI_SUFFIX)]
        for path in paths:
            if len(loaders) >= MAX_LOADERS:
                return loaders
            image = attempt(notes, f"{where} {path}", _pe, fs, path)
            name = path.rsplit("/", 1)[-1]
            loaders.append(
                Loader(
                    device=device,
                    path=path,
                    architecture=image.architecture if image else None,
                    shim=is_shim(name, image),
                )
            )
    return loaders


def is_shim(name: str, image: PeImage | None) -> bool:
    """Is the loader called `name`, with these headers, shim (see the module docstring)?"""
    return name.casefold().startswith(SHIM_PREFIX) or (image is not None and SHIM_SECTION in image.sections)


def _pe(fs: Filesystem, path: str) -> PeImage | None:
    file = open_file(fs, path)
    if file is None:
        return None
    return read_pe(file, file.size, path)
