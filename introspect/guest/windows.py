"""A Windows system volume's facts: the SOFTWARE hive (version, build, product, edition), the
architecture from ntoskrnl.exe's PE header, and the virtio drivers installed.

As libguestfs' inspection (daemon/inspect_fs_windows.ml) does: a volume holding
\\Windows\\System32\\config\\SOFTWARE is a Windows system volume; its key
Microsoft\\Windows NT\\CurrentVersion says which Windows (CurrentMajorVersionNumber and
CurrentMinorVersionNumber since Windows 10, CurrentVersion "6.3" before; ProductName, EditionID,
InstallationType, CurrentBuild). The hive is read cell by cell (`introspect.guest.registry`):
a few dozen small reads of a 50-100 MiB file. The filesystems Windows lives on compare names
without case, so the paths are written as Windows writes them.
"""

from __future__ import annotations

from introspect.guest import osinfo
from introspect.guest.files import GuestFile, attempt, open_file, source
from introspect.guest.fs.base import Filesystem, Kind, resolve
from introspect.guest.model import OperatingSystem, Source
from introspect.guest.pe import read_pe
from introspect.guest.registry import Hive
from introspect.model import Finding

SOFTWARE = "/Windows/System32/config/SOFTWARE"
NTOSKRNL = "/Windows/System32/ntoskrnl.exe"
DRIVERS = "/Windows/System32/drivers"
CURRENT_VERSION = "Microsoft\\Windows NT\\CurrentVersion"
#: The virtio-win drivers whose .sys files mean the guest can use virtio devices: the block
#: (viostor) and SCSI (vioscsi) storage, the NIC (netkvm), the balloon, the serial port (vioser)
#: and virtio-fs (viofs).
VIRTIO_DRIVERS = ("viostor", "vioscsi", "netkvm", "balloon", "vioser", "viofs")
#: The CurrentVersion values read.
VALUES = (
    "CurrentMajorVersionNumber",
    "CurrentMinorVersionNumber",
    "CurrentVersion",
    "CurrentBuild",
    "CurrentBuildNumber",
    "ProductName",
    "EditionID",
    "InstallationType",
)
#: The longest text value kept (ProductName and friends are a few dozen characters).
MAX_TEXT = 256


def inspect_windows(fs: Filesystem, device: str, notes: list[Finding]) -> OperatingSystem | None:
    """The Windows system on `fs`, or None when `fs` holds none."""
    where = f"{device} ({fs.name})"
    software = attempt(notes, f"{where} {SOFTWARE}", open_file, fs, SOFTWARE)
    if software is None:
        return None
    read_from = source(device, fs, SOFTWARE)
    sources: dict[str, Source] = {"os_id": read_from, "distro": read_from}
    found = attempt(notes, f"{where} {SOFTWARE}", _current_version, software) or {}
    texts = {name: value for name, value in found.items() if isinstance(value, str)}
    numbers = {name: value for name, value in found.items() if isinstance(value, int)}
    major = numbers.get("currentmajorversionnumber")
    minor = numbers.get("currentminorversionnumber")
    if major is None or minor is None:
        numbers_of = osinfo.major_minor(texts.get("currentversion"))
        major, minor = numbers_of if numbers_of else (None, None)
    version = f"{major}.{minor}" if major is not None and minor is not None else None
    build = texts.get("currentbuild") or texts.get("currentbuildnumber")
    name = texts.get("productname")
    edition = texts.get("editionid")
    installation_type = texts.get("installationtype")
    for fact, value in (
        ("version", version),
        ("build", build),
        ("name", name),
        ("edition", edition),
        ("installation_type", installation_type),
    ):
        if value is not None:
            sources[fact] = read_from
    short_id = osinfo.windows_osinfo(major, minor, name, installation_type, build)
    if short_id is not None:
        sources["osinfo"] = read_from

    architecture = attempt(notes, f"{where} {NTOSKRNL}", _architecture, fs)
    if architecture is not None:
        sources["architecture"] = source(device, fs, NTOSKRNL)
    drivers = attempt(notes, f"{where} {DRIVERS}", _virtio_drivers, fs) or []
    if drivers:
        sources["virtio_drivers"] = source(device, fs, DRIVERS)
    return OperatingSystem(
        device=device,
        filesystem=fs.name,
        os_type="windows",
        os_id="windows",
        distro="windows",
        version=version,
        name=name,
        build=build,
        edition=edition,
        installation_type=installation_type,
        architecture=architecture,
        osinfo=short_id,
        virtio_drivers=drivers,
        sources=sources,
    )


def _current_version(software: GuestFile) -> dict[str, str | int]:
    """CurrentVersion's values among `VALUES`, by casefolded name: texts (capped) and numbers."""
    hive = Hive(software, f"the SOFTWARE hive ({software.path})")
    key = hive.open(CURRENT_VERSION)
    if key is None:
        return {}
    found: dict[str, str | int] = {}
    for name, value in hive.values(key, list(VALUES)).items():
        text = value.text()
        number = value.number()
        if text is not None:
            found[name] = text[:MAX_TEXT]
        elif number is not None:
            found[name] = number
    return found


def _architecture(fs: Filesystem) -> str | None:
    kernel = open_file(fs, NTOSKRNL)
    if kernel is None:
        return None
    return read_pe(kernel, kernel.size, NTOSKRNL).architecture


def _virtio_drivers(fs: Filesystem) -> list[str]:
    """The virtio drivers whose .sys file is in System32\\drivers: one lookup each in the one
    directory, which is resolved once."""
    directory = resolve(fs, DRIVERS)
    if directory is None or directory.kind != Kind.DIRECTORY:
        return []
    return [name for name in VIRTIO_DRIVERS if fs.lookup(directory, f"{name}.sys") is not None]
