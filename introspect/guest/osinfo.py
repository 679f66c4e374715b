"""The names a guest's system goes by: Glance's os_distro word, libosinfo's short id (as
virt-inspector reports it), Nova's architecture word for a distribution's own arch names, and,
when the host has osinfo-db installed, the installer media whose volume id a label matches.

- `os_distro(os_id)`: an os-release ID (or a release file's distribution) -> the os_distro word of
  Glance's list (the vocabulary's `os_distro` enum, its aliases taken at their word). An ID Glance
  has no word for (alpine, almalinux, sles: SUSE's server, not `sled`, its desktop) gives None,
  and the system keeps its os_id. ID_LIKE never decides: a derivative booted as its parent would
  get the parent's drivers and, on VMware, its guest id.
- `linux_osinfo` / `windows_osinfo`: libguestfs' rules (lib/inspect-osinfo.c, with its distro
  names from daemon/inspect_fs_unix.ml): debian12, ubuntu22.04, centos7.0, fedora39, rhel9.3,
  sles15sp5, opensuse15.5, alpinelinux3.19, archlinux, win10, win2k19... Where libguestfs' name
  is not an osinfo-db short id, the osinfo-db one is used (CentOS Stream is centos-stream9, Oracle
  Linux ol9.3, openSUSE Tumbleweed opensusetumbleweed).
- `match_media(label, arch)`: osinfo-db's <media> entries (os/*/*.xml, read with defusedxml
  once per process) whose <volume-id> regular expression matches the label. osinfo-db is
  optional: without it (or when the match is ambiguous) there is no answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from introspect.vocabulary import PROPERTIES

# --- Glance's os_distro ------------------------------------------------------------------------

_OS_DISTRO = PROPERTIES["os_distro"]
#: os-release IDs that name a Glance word without being spelled as one.
_OS_RELEASE_IDS = {
    "opensuse": "opensuse",
    "opensuse-leap": "opensuse",
    "opensuse-tumbleweed": "opensuse",
    "opensuse-microos": "opensuse",
    "opensuse-slowroll": "opensuse",
}


def os_distro(os_id: str | None) -> str | None:
    """Glance's os_distro word for an os-release ID (see the module docstring)."""
    if not os_id:
        return None
    if os_id in _OS_DISTRO["enum"]:
        return os_id
    if os_id in _OS_RELEASE_IDS:
        return _OS_RELEASE_IDS[os_id]
    alias: str | None = _OS_DISTRO.get("aliases", {}).get(os_id)
    return alias


# --- versions ----------------------------------------------------------------------------------

_MAJOR_MINOR = re.compile(r"(\d+)(?:\.(\d+))?")


def major_minor(version: str | None) -> tuple[int, int] | None:
    """The first "major[.minor]" numbers of a version string, as libguestfs reads VERSION_ID and
    release files ("9.3" -> (9, 3), "12" -> (12, 0), "3.19.1" -> (3, 19)); None without one."""
    if not version:
        return None
    found = _MAJOR_MINOR.search(version)
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2) or 0)


# --- libosinfo short ids -----------------------------------------------------------------------

#: os-release IDs -> libguestfs' distro names (daemon/inspect_fs_unix.ml distro_of_os_release_id,
#: and its names in inspect_types.ml), for the IDs whose names differ.
_LIBGUESTFS_DISTRO = {
    "alpine": "alpinelinux",
    "arch": "archlinux",
    "kali": "kalilinux",
    "sled": "sles",
    "void": "voidlinux",
}
#: Distributions whose short id is the name and the major version alone (fedora39, rocky9...),
#: from this major on.
_MAJOR_ONLY = {"fedora": 0, "mageia": 0, "rocky": 8, "almalinux": 8, "circle": 8, "debian": 4}
#: Rolling distributions: the short id is the name.
_ROLLING = frozenset({"archlinux", "gentoo", "voidlinux"})


def linux_osinfo(os_id: str | None, version: str | None, *, name: str | None = None) -> str | None:
    """libosinfo's short id of a Linux system with os-release `os_id` (or the ID its release file
    stands for) at `version`; `name` (PRETTY_NAME or NAME) tells CentOS Stream from CentOS Linux.
    None when nothing can be said."""
    if not os_id:
        return None
    distro = _LIBGUESTFS_DISTRO.get(os_id, os_id)
    if distro.startswith("opensuse"):
        if distro == "opensuse-tumbleweed":
            return "opensusetumbleweed"
        distro = "opensuse"
    if distro in _ROLLING:
        return distro
    numbers = major_minor(version)
    if numbers is None:
        # Debian's testing has no VERSION_ID, and "trixie/sid" in its names: osinfo-db's debiantesting.
        return "debiantesting" if distro == "debian" and name and "/sid" in name else None
    major, minor = numbers
    if distro == "centos":
        if (name and "stream" in name.lower()) or major >= 9:  # CentOS Linux ended at 8
            return f"centos-stream{major}"
        if major >= 8:
            return f"centos{major}"
        if major == 7:
            return "centos7.0"
        return f"centos{major}.{minor}"
    if distro in _MAJOR_ONLY:
        return f"{distro}{major}" if major >= _MAJOR_ONLY[distro] else None
    if distro == "sles":
        return f"sles{major}" if minor == 0 else f"sles{major}sp{minor}"
    if distro == "ubuntu":
        return f"ubuntu{major}.{minor:02d}"
    if distro == "altlinux":
        return f"alt{major}.{minor}" if major >= 8 else f"altlinux{major}.{minor}"
    if major > 0 or minor > 0:
        return f"{distro}{major}.{minor}"
    return None


#: Windows NT 10.0 server releases, told apart by the year in their product name, else (the
#: semi-annual channel's "Windows Server Datacenter") by the first build of each.
_SERVER_10 = (("2025", 26100, "win2k25"), ("2022", 20348, "win2k22"), ("2019", 17763, "win2k19"))
#: The first build of Windows 11 (which still calls itself 10.0 and "Windows 10" in ProductName).
WINDOWS_11_BUILD = 22000
_WINDOWS_6 = {
    0: ("win2k8", "winvista"),
    1: ("win2k8r2", "win7"),
    2: ("win2k12", "win8"),
    3: ("win2k12r2", "win8.1"),
}


def windows_osinfo(
    major: int | None,
    minor: int | None,
    product_name: str | None,
    installation_type: str | None,
    build: str | None,
) -> str | None:
    """libosinfo's short id of a Windows system from its CurrentVersion values: the NT version,
    ProductName, InstallationType (Server or Client) and the build number (libguestfs reads the
    year in a server's name only, and calls every server without one win2k16)."""
    if major is None or minor is None:
        return None
    product = product_name or ""
    server = "Server" in (installation_type or "")
    if major == 5:
        if minor == 1 or (minor == 2 and "XP" in product):
            return "winxp"
        if minor == 2:
            return "win2k3r2" if "R2" in product else "win2k3"
    if major == 6 and minor in _WINDOWS_6:
        server_id, client_id = _WINDOWS_6[minor]
        return server_id if server else client_id
    if major == 10 and minor == 0:
        if server:
            by_name = next((short for year, _, short in _SERVER_10 if year in product), None)
            if by_name is not None:
                return by_name
            number = int(build) if build is not None and build.isdigit() else 0
            return next((short for _, first, short in _SERVER_10 if number >= first), "win2k16")
        if build is None or not build.isdigit():
            return None
        return "win11" if int(build) >= WINDOWS_11_BUILD else "win10"
    return None


# --- architecture words ------------------------------------------------------------------------

_ARCHITECTURE = PROPERTIES["architecture"]
#: Distributions' and Windows' own names for an architecture -> Nova's word.
_ARCH_NAMES = {
    "arm64": "aarch64",
    "armhf": "armv7l",
    "armhfp": "armv7l",
    "ppc64el": "ppc64le",
    "x86": "i686",
    "ARM64": "aarch64",
    "riscv64": "riscv64",
}


def nova_architecture(name: str | None) -> str | None:
    """Nova's word for an architecture as a distribution or Windows names it (amd64, i386,
    arm64, armhf, ppc64el, x86...); None for a name without one."""
    if not name:
        return None
    if name in _ARCHITECTURE["enum"]:
        return name
    if name in _ARCH_NAMES:
        return _ARCH_NAMES[name]
    word: str | None = _ARCHITECTURE.get("aliases", {}).get(name) or _ARCHITECTURE.get("aliases", {}).get(
        name.lower()
    )
    return word


# --- osinfo-db's installer media ---------------------------------------------------------------

#: Where Debian's osinfo-db package installs the database.
OSINFO_DB = Path("/usr/share/osinfo")
#: At most this many OS files are read (osinfo-db 2022 has 800), and each at most this big.
MAX_OS_FILES = 4096
MAX_OS_FILE = 1 << 20
#: Volume id expressions kept compiled (osinfo-db 2022 has about 2000).
MAX_PATTERNS = 4096
#: A label is an ISO 9660 volume identifier (32 characters) or a Joliet/UDF one (at most 128).
MAX_LABEL = 128


@dataclass(frozen=True, slots=True)
class Media:
    """One <media> of osinfo-db: the OS's short id, the media's architecture, its volume id (a
    regular expression, compiled when a label of that architecture is first matched)."""

    short_id: str
    arch: str | None
    volume_id: str


@lru_cache(maxsize=MAX_PATTERNS)
def _pattern(volume_id: str) -> re.Pattern[str] | None:
    try:
        return re.compile(volume_id)
    except re.error:
        return None


#: The osinfo-db directory of each os-release ID's vendor: a match reads that vendor's files only
#: (parsing all 800 of osinfo-db 2022 costs a second; one vendor's, a few milliseconds).
VENDORS = {
    "windows": "microsoft.com",
    "debian": "debian.org",
    "ubuntu": "ubuntu.com",
    "fedora": "fedoraproject.org",
    "centos": "centos.org",
    "rhel": "redhat.com",
    "rocky": "rockylinux.org",
    "almalinux": "almalinux.org",
    "opensuse-leap": "opensuse.org",
    "opensuse-tumbleweed": "opensuse.org",
    "sles": "suse.com",
    "alpine": "alpinelinux.org",
    "arch": "archlinux.org",
    "ol": "oracle.com",
}


@cache
def osinfo_media(root: Path = OSINFO_DB, vendor: str | None = None) -> tuple[Media, ...]:
    """Every <media> with a <volume-id> in the osinfo-db at `root` (none when it is absent), of
    one vendor's directory when `vendor` is given."""
    from defusedxml import ElementTree

    found: list[Media] = []
    files = sorted((root / "os").glob(f"{vendor or '*'}/*.xml"))[:MAX_OS_FILES]
    for path in files:
        if path.stat().st_size > MAX_OS_FILE:
            continue
        try:
            tree = ElementTree.parse(path)
        except ElementTree.ParseError:
            continue
        for entry in tree.getroot().iter("os"):
            short_id = entry.findtext("short-id")
            if not short_id:
                continue
            for media in entry.iter("media"):
                pattern = media.findtext("iso/volume-id")
                if pattern:
                    found.append(Media(short_id, media.get("arch"), pattern))
    return tuple(found)


def match_media(
    label: str | None, arch: str | None = None, root: Path = OSINFO_DB, *, os_id: str | None = None
) -> str | None:
    """The short id of the one OS whose installer media have a volume id matching `label` (as
    libosinfo matches: a search, case-sensitive), of architecture `arch` when given, among the OSes
    of `os_id`'s vendor when it has one; None when osinfo-db is absent, nothing matches, or several
    OSes do."""
    if not label or len(label) > MAX_LABEL:
        return None
    ids = set()
    for media in osinfo_media(root, VENDORS.get(os_id or "")):
        if arch is not None and media.arch not in (None, arch):
            continue
        pattern = _pattern(media.volume_id)
        if pattern is not None and pattern.search(label):
            ids.add(media.short_id)
    return ids.pop() if len(ids) == 1 else None
