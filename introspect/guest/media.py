"""An installer's media (an ISO): the distribution and version it installs, from the volume id,
.disk/info, .treeinfo or Windows' sources/idwbinfo.txt, matched against osinfo-db when installed.

- `.disk/info` (Debian's and Ubuntu's images, written by debian-cd and livecd-rootfs): one line,
  `Debian GNU/Linux 12.5.0 "Bookworm" - Official amd64 NETINST with firmware 20240210-11:27`:
  the distribution, its version, the codename in quotes, then after " - " the kind of build (one
  word or more: "Release Candidate") and the Debian architecture.
- `.treeinfo` (Fedora's, Red Hat's, CentOS', openSUSE's trees, productmd's format): an INI file;
  [release] name/version (format 1.x) or [general] family/version (0.x), the architecture in
  [tree] arch or [general] arch.
- `sources/idwbinfo.txt` (Windows Vista and later): [BUILDINFO] BuildArch (amd64, x86, arm64)
  and BuildBranch (rs5_release...): Windows NT 10.0 branches name their build.

The volume label (the filesystem's label: ISO 9660's volume identifier) is matched against
osinfo-db's media when it is installed, which is the only way to tell a Windows Server ISO from a
client one; libosinfo's short id is otherwise derived as for installed systems. Each file is read
with a bound (`MAX_FILE`), and parsed as text whatever it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from introspect.decode import KIB
from introspect.guest import osinfo
from introspect.guest.files import attempt, source
from introspect.guest.fs.base import Filesystem, read_file
from introspect.guest.model import OperatingSystem, Source
from introspect.model import Finding

if TYPE_CHECKING:
    import configparser

#: Each of these files is a few hundred bytes; nothing past this is read.
MAX_FILE = 64 * KIB
#: The longest name kept.
MAX_NAME = 256
DISK_INFO = "/.disk/info"
TREEINFO = "/.treeinfo"
IDWBINFO = "/sources/idwbinfo.txt"


@dataclass(frozen=True, slots=True)
class Installer:
    """What an installer's own file says it installs; `path` is that file."""

    os_type: str
    os_id: str | None
    version: str | None
    name: str | None
    architecture: str | None
    path: str


# --- .disk/info ---------------------------------------------------------------------------------

_DISK_INFO = re.compile(
    r'^(?P<name>.+?) (?P<version>\d+(?:\.\d+)*)(?: LTS)?(?: "(?P<codename>[^"]*)")? - (?P<rest>.*)$'
)
#: A .disk/info's distribution -> its os-release ID (Ubuntu's flavours are Ubuntu).
_DISK_INFO_IDS = (("Debian", "debian"), ("Ubuntu", "ubuntu"), ("Kubuntu", "ubuntu"), ("Xubuntu", "ubuntu"))


def parse_disk_info(data: bytes, path: str = DISK_INFO) -> Installer | None:
    """Debian's and Ubuntu's .disk/info (see the module docstring); None when it is not that line."""
    lines = data[:MAX_FILE].decode("utf-8", errors="replace").splitlines()
    line = lines[0].strip() if lines else ""
    match = _DISK_INFO.match(line)
    if match is None:
        return None
    distribution = match.group("name")
    os_id = next((os_id for prefix, os_id in _DISK_INFO_IDS if distribution.startswith(prefix)), None)
    # The build's kind comes first ("Official", "Release", "Release Candidate"), then the arch.
    words = match.group("rest").split()
    architecture = next((word for word in map(osinfo.nova_architecture, words) if word is not None), None)
    return Installer(
        os_type="linux",
        os_id=os_id,
        version=match.group("version"),
        name=line[:MAX_NAME],
        architecture=architecture,
        path=path,
    )


# --- INI files: .treeinfo and idwbinfo.txt ------------------------------------------------------


def _ini(data: bytes) -> configparser.ConfigParser | None:
    """An INI file's sections, read without interpolation; None when it is not one."""
    import configparser  # here: only installer media have INI files to read

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(data[:MAX_FILE].decode("utf-8", errors="replace"))
    except configparser.Error:
        return None
    return parser


#: A tree's family or release name -> the os-release ID of what it installs.
_TREEINFO_IDS = (
    ("Red Hat Enterprise Linux", "rhel"),
    ("CentOS", "centos"),
    ("Fedora", "fedora"),
    ("openSUSE Leap", "opensuse-leap"),
    ("openSUSE Tumbleweed", "opensuse-tumbleweed"),
    ("openSUSE", "opensuse"),
    ("Rocky Linux", "rocky"),
    ("AlmaLinux", "almalinux"),
    ("Oracle Linux", "ol"),
    ("Scientific Linux", "scientific"),
)


def parse_treeinfo(data: bytes, path: str = TREEINFO) -> Installer | None:
    """A .treeinfo (see the module docstring); None when it names no release."""
    ini = _ini(data)
    if ini is None:
        return None
    family = ini.get("release", "name", fallback=None) or ini.get("general", "family", fallback=None)
    version = ini.get("release", "version", fallback=None) or ini.get("general", "version", fallback=None)
    if not family:
        return None
    arch = ini.get("tree", "arch", fallback=None) or ini.get("general", "arch", fallback=None)
    name = ini.get("general", "name", fallback=None) or f"{family} {version or ''}".strip()
    os_id = next((os_id for prefix, os_id in _TREEINFO_IDS if family.startswith(prefix)), None)
    return Installer(
        os_type="linux",
        os_id=os_id,
        version=version or None,
        name=name[:MAX_NAME],
        architecture=osinfo.nova_architecture(arch),
        path=path,
    )


#: Windows NT 10.0's release branches (BuildBranch, before "_release") -> their build number, as
#: Microsoft's release information lists them.
WINDOWS_BRANCHES = {
    "th1": "10240",
    "th2": "10586",
    "rs1": "14393",
    "rs2": "15063",
    "rs3": "16299",
    "rs4": "17134",
    "rs5": "17763",
    "19h1": "18362",
    "19h2": "18363",
    "vb": "19041",
    "fe": "20348",
    "co": "22000",
    "ni": "22621",
    "ge": "26100",
}


def parse_idwbinfo(data: bytes, path: str = IDWBINFO) -> tuple[Installer, str | None] | None:
    """Windows' sources/idwbinfo.txt: the installer (version 10.0 when its branch is one of
    Windows 10's, 11's or Server's) and the build its branch names; None when it is not one."""
    ini = _ini(data)
    if ini is None or not ini.has_section("BUILDINFO"):
        return None
    branch = ini.get("BUILDINFO", "BuildBranch", fallback="") or ""
    build = WINDOWS_BRANCHES.get(branch.removesuffix("_release"))
    installer = Installer(
        os_type="windows",
        os_id="windows",
        version="10.0" if build else None,
        name=None,
        architecture=osinfo.nova_architecture(ini.get("BUILDINFO", "BuildArch", fallback=None)),
        path=path,
    )
    return installer, build


# --- the gatherer -------------------------------------------------------------------------------


def inspect_media(fs: Filesystem, device: str, notes: list[Finding]) -> OperatingSystem | None:
    """The system this installer media installs, or None when `fs` is not one."""
    where = f"{device} ({fs.name})"
    installer: Installer | None = None
    build: str | None = None
    windows = attempt(notes, f"{where} {IDWBINFO}", read_file, fs, IDWBINFO, MAX_FILE)
    if windows is not None:
        parsed = parse_idwbinfo(windows)
        if parsed is not None:
            installer, build = parsed
    for path, parse in ((DISK_INFO, parse_disk_info), (TREEINFO, parse_treeinfo)):
        if installer is not None:
            break
        data = attempt(notes, f"{where} {path}", read_file, fs, path, MAX_FILE)
        if data is not None:
            installer = parse(data, path)
    if installer is None:
        return None
    read_from = source(device, fs, installer.path)
    sources: dict[str, Source] = {"os_id": read_from}
    # A Linux installer's id is derived from its version as libguestfs derives it (osinfo-db may
    # predate the release: its generic "-unknown" entry then matches); only the media tell a
    # Windows Server ISO from a client one.
    short_id = (
        osinfo.linux_osinfo(installer.os_id, installer.version, name=installer.name)
        if installer.os_type == "linux"
        else None
    )
    if short_id is not None:
        sources["osinfo"] = read_from
    else:
        short_id = osinfo.match_media(fs.label, installer.architecture, os_id=installer.os_id)
        if short_id is not None:
            sources["osinfo"] = Source(device=device, filesystem=fs.name, path="volume label")
    distro = osinfo.os_distro(installer.os_id)
    for fact, value in (
        ("distro", distro),
        ("version", installer.version),
        ("name", installer.name),
        ("architecture", installer.architecture),
        ("build", build),
    ):
        if value is not None:
            sources[fact] = read_from
    return OperatingSystem(
        device=device,
        filesystem=fs.name,
        os_type=installer.os_type,
        os_id=installer.os_id,
        distro=distro,
        version=installer.version,
        name=installer.name,
        build=build,
        architecture=installer.architecture,
        osinfo=short_id,
        installer=True,
        sources=sources,
    )
