"""A Linux root filesystem's facts: os-release (and older release files), the architecture from
the ELF header of a system binary, the installed kernels, qemu-guest-agent and cloud-init.

Which files decide, and in which order, follows libguestfs' inspection (daemon/inspect_fs_unix.ml):
os-release(5) first (/etc/os-release, else /usr/lib/os-release), then /etc/lsb-release and the
distributions' own release files (Oracle's, CentOS', Red Hat's, Fedora's, /etc/debian_version,
Arch's, Gentoo's, SuSE's, Alpine's). A filesystem is a root when one of them is there and
something only a Linux root has is too (/etc/fstab, /sbin/init, /usr/lib/systemd, /bin/sh).

Every file is read with a bound: release files at most `MAX_RELEASE_FILE` bytes, an ELF header
`elf.HEADER_SIZE` bytes, directories at most a few hundred names. A fact that cannot be read
becomes a note and the others are still gathered (`files.attempt`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from introspect.decode import KIB
from introspect.guest import elf, osinfo
from introspect.guest.files import attempt, open_file, source
from introspect.guest.fs.base import Filesystem, exists, list_directory, read_file
from introspect.guest.model import OperatingSystem, Source
from introspect.model import Finding

#: os-release(5) files and the other release files are a few hundred bytes; nothing past this
#: is read.
MAX_RELEASE_FILE = 64 * KIB
#: os-release keys kept from one file, and the longest value kept (PRETTY_NAME is a line).
MAX_KEYS = 256
MAX_VALUE = 1024
#: The longest product name reported (PRETTY_NAME, a release file's first line).
MAX_NAME = 256
#: Names listed in /boot and /lib/modules, and kernels reported.
MAX_BOOT_ENTRIES = 256
MAX_MODULE_DIRECTORIES = 64
MAX_KERNELS = 32

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
#: Only a Linux root holds one of these.
LINUX_MARKERS = ("/etc/fstab", "/sbin/init", "/usr/lib/systemd", "/bin/sh")
#: The binaries whose ELF header names the architecture, in order (merged-/usr systems reach
#: /bin/sh through the /bin -> usr/bin link, and /bin/sh itself is often a link to dash).
ARCHITECTURE_BINARIES = (
    "/bin/sh",
    "/usr/bin/sh",
    "/sbin/init",
    "/usr/lib/systemd/systemd",
    "/bin/busybox",
    "/bin/ls",
)
KERNEL_PREFIXES = ("vmlinuz-", "vmlinux-")
QEMU_GUEST_AGENT = (
    "/usr/bin/qemu-ga",
    "/usr/sbin/qemu-ga",
    "/usr/lib/systemd/system/qemu-guest-agent.service",
    "/lib/systemd/system/qemu-guest-agent.service",
)
CLOUD_INIT = ("/usr/bin/cloud-init", "/etc/cloud/cloud.cfg")

# --- os-release(5) ------------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Inside double quotes, a backslash escapes only these (the shell's rule, which os-release follows).
_DOUBLE_QUOTED_ESCAPES = frozenset('$"\\`')


def parse_os_release(data: bytes) -> dict[str, str]:
    """The KEY=value assignments of an os-release file: comments and blank lines skipped, values
    unquoted as the shell would (single quotes literal; double quotes with backslash escapes of
    $ " \\ `; a bare backslash escapes the next character). At most `MAX_KEYS` keys, each value
    at most `MAX_VALUE` characters; a malformed line is skipped, as systemd does."""
    values: dict[str, str] = {}
    for line in data[:MAX_RELEASE_FILE].decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        if not _KEY.fullmatch(key):
            continue
        value = _unquote(raw)
        if value is None:
            continue
        if key not in values and len(values) >= MAX_KEYS:
            break
        values[key] = value[:MAX_VALUE]
    return values


def _unquote(raw: str) -> str | None:
    """One shell word (see `parse_os_release`); None when a quote is left open."""
    out: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(raw):
        char = raw[index]
        index += 1
        if quote == "'":
            if char == "'":
                quote = None
            else:
                out.append(char)
        elif quote == '"':
            if char == '"':
                quote = None
            elif char == "\\" and index < len(raw) and raw[index] in _DOUBLE_QUOTED_ESCAPES:
                out.append(raw[index])
                index += 1
            else:
                out.append(char)
        elif char in "'\"":
            quote = char
        elif char == "\\" and index < len(raw):
            out.append(raw[index])
            index += 1
        elif char.isspace() or char == "#":
            break
        else:
            out.append(char)
    return None if quote else "".join(out)


# --- the other release files --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Release:
    """What a release file says: the os-release ID it stands for (None for a Red Hat-based system
    its file does not name), the version, the product name, and the file."""

    os_id: str | None
    version: str | None
    name: str | None
    path: str


def _release_version(match: re.Match[str]) -> str:
    return match.group(1) if match.group(2) is None else f"{match.group(1)}.{match.group(2)}"


#: "... release M.N", and the old "... release M (Codename Update N)".
_RELEASE = r".*?release (\d+)(?:\.(\d+))?"
_UPDATE = r".*?release (\d+)[^.\d].*?Update (\d+)"
#: Each first line's distribution (inspect_fs_unix.ml's regular expressions, in its order).
_REDHAT_LIKE: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(prefix + pattern), os_id)
    for prefix, os_id in (
        ("Oracle Linux", "ol"),
        ("Rocky Linux", "rocky"),
        ("AlmaLinux", "almalinux"),
        ("Fedora", "fedora"),
        ("Red Hat", "rhel"),
        ("CentOS", "centos"),
        ("Scientific Linux", "scientific"),
        ("CloudLinux", "cloudlinux"),
        ("Mageia", "mageia"),
    )
    for pattern in (_UPDATE, _RELEASE)
)
_SLES = re.compile(r"^SUSE (?:Linux|LINUX) Enterprise ")
_OPENSUSE = re.compile(r"^(?:openSUSE|SuSE Linux|SUSE LINUX) ")
_SUSE_VERSION = re.compile(r"^VERSION = (\d+(?:\.\d+)?)")
_SUSE_PATCHLEVEL = re.compile(r"^PATCHLEVEL = (\d+)")
_LEADING_NUMBER = re.compile(r"^(\d+)(?:\.(\d+))?")
#: lsb-release DISTRIB_IDs libguestfs trusts -> the os-release ID of the same system.
_LSB_IDS = {
    "Ubuntu": "ubuntu",
    "LinuxMint": "linuxmint",
    "Mageia": "mageia",
    "CoreOS": "coreos",
    "MandrivaLinux": "mandriva",
    "ManjaroLinux": "manjaro",
}


def _lines(data: bytes) -> list[str]:
    return data[:MAX_RELEASE_FILE].decode("utf-8", errors="replace").splitlines()


def _first_line(data: bytes) -> str | None:
    lines = _lines(data)
    first = lines[0].strip() if lines else ""
    return first[:MAX_NAME] or None


def parse_lsb_release(data: bytes, path: str = "/etc/lsb-release") -> Release | None:
    """/etc/lsb-release: DISTRIB_ID (when libguestfs knows it), DISTRIB_RELEASE, DISTRIB_DESCRIPTION."""
    values = parse_os_release(data)
    os_id = _LSB_IDS.get(values.get("DISTRIB_ID", ""))
    if os_id is None:
        return None
    description = values.get("DISTRIB_DESCRIPTION")
    return Release(
        os_id, values.get("DISTRIB_RELEASE") or None, description[:MAX_NAME] if description else None, path
    )


def parse_redhat_release(data: bytes, path: str) -> Release | None:
    """/etc/redhat-release and its kin (oracle-, centos-, fedora-, altlinux-release): the first
    line names the distribution and its release ("CentOS Linux release 7.1.1503 (Core)" is
    centos 7.1; "Red Hat Enterprise Linux AS release 4 (Nahant Update 9)" rhel 4.9). A line no
    pattern names is a Red Hat-based system of unknown distribution."""
    line = _first_line(data)
    if line is None:
        return None
    if path == "/etc/altlinux-release":
        number = _LEADING_NUMBER.search(line) or re.search(r"(\d+)(?:\.(\d+))?", line)
        return Release("altlinux", _release_version(number) if number else None, line, path)
    for pattern, os_id in _REDHAT_LIKE:
        match = pattern.match(line)
        if match:
            return Release(os_id, _release_version(match), line, path)
    return Release(None, None, line, path)


def parse_debian_version(data: bytes, path: str = "/etc/debian_version") -> Release | None:
    """/etc/debian_version: "12.5" is Debian 12; "trixie/sid" (testing) has no version."""
    line = _first_line(data)
    if line is None:
        return None
    match = _LEADING_NUMBER.match(line)
    return Release("debian", match.group(1) if match else None, None, path)


def parse_suse_release(data: bytes, path: str = "/etc/SuSE-release") -> Release | None:
    """/etc/SuSE-release: SLES ("VERSION = 12", "PATCHLEVEL = 1": 12.1) or openSUSE ("VERSION = 42.1")."""
    lines = [line.strip() for line in _lines(data)]
    if not lines or not lines[0]:
        return None
    name = lines[0][:MAX_NAME]
    version = next((m.group(1) for line in lines[1:] if (m := _SUSE_VERSION.match(line))), None)
    if _SLES.match(name):
        patch = next((m.group(1) for line in lines[1:] if (m := _SUSE_PATCHLEVEL.match(line))), None)
        if version is not None and patch not in (None, "0"):
            version = f"{version}.{patch}"
        return Release("sles", version, name, path)
    if _OPENSUSE.match(name):
        return Release("opensuse", version, name, path)
    return Release(None, None, name, path)


def parse_alpine_release(data: bytes, path: str = "/etc/alpine-release") -> Release | None:
    """/etc/alpine-release: the version alone ("3.19.1")."""
    line = _first_line(data)
    return Release("alpine", line, None, path) if line else None


def parse_arch_release(data: bytes, path: str = "/etc/arch-release") -> Release:
    """/etc/arch-release: empty; its presence is the fact."""
    return Release("arch", None, None, path)


def parse_gentoo_release(data: bytes, path: str = "/etc/gentoo-release") -> Release:
    """/etc/gentoo-release: "Gentoo Base System release 2.14", a rolling distribution's name."""
    return Release("gentoo", None, _first_line(data), path)


#: The release files after os-release, in libguestfs' order: each parser gives a Release, or None
#: to go on with the next file.
RELEASE_FILES = (
    ("/etc/lsb-release", parse_lsb_release),
    ("/etc/oracle-release", parse_redhat_release),
    ("/etc/centos-release", parse_redhat_release),
    ("/etc/altlinux-release", parse_redhat_release),
    ("/etc/fedora-release", parse_redhat_release),
    ("/etc/redhat-release", parse_redhat_release),
    ("/etc/debian_version", parse_debian_version),
    ("/etc/arch-release", parse_arch_release),
    ("/etc/gentoo-release", parse_gentoo_release),
    ("/etc/SuSE-release", parse_suse_release),
    ("/etc/alpine-release", parse_alpine_release),
)


# --- the gatherer -------------------------------------------------------------------------------


def inspect_linux(fs: Filesystem, device: str, notes: list[Finding]) -> OperatingSystem | None:
    """The Linux system whose root is `fs`, or None when `fs` is not a Linux root."""
    where = f"{device} ({fs.name})"
    os_release: dict[str, str] = {}
    os_release_path: str | None = None
    for path in OS_RELEASE_PATHS:
        data = attempt(notes, f"{where} {path}", read_file, fs, path, MAX_RELEASE_FILE)
        if data is not None:
            os_release, os_release_path = parse_os_release(data), path
            break
    release = None if os_release.get("ID") else _release_file(fs, where, notes)
    if os_release_path is None and release is None:
        return None
    if not any(attempt(notes, f"{where} {marker}", exists, fs, marker) for marker in LINUX_MARKERS):
        return None

    sources: dict[str, Source] = {}
    os_id: str | None
    version: str | None
    name: str | None
    if os_release.get("ID") and os_release_path is not None:
        os_id = os_release["ID"]
        version = os_release.get("VERSION_ID") or None
        name = (os_release.get("PRETTY_NAME") or os_release.get("NAME") or "")[:MAX_NAME] or None
        read_from = source(device, fs, os_release_path)
        sources.update(os_id=read_from, distro=read_from, name=read_from)
        if version:
            sources["version"] = read_from
        elif os_id == "debian":
            version, version_from = _debian_major(fs, where, notes)
            if version_from is not None:
                sources["version"] = source(device, fs, version_from)
    else:
        found = release or Release(None, None, None, os_release_path or "")
        os_id, version, name = found.os_id, found.version, found.name
        read_from = source(device, fs, found.path)
        sources.update(name=read_from)
        if os_id:
            sources.update(os_id=read_from, distro=read_from)
        if version:
            sources["version"] = read_from
    distro = osinfo.os_distro(os_id)
    if distro is None:
        sources.pop("distro", None)
    short_id = osinfo.linux_osinfo(os_id, version, name=name)
    if short_id is not None and "version" in sources:
        sources["osinfo"] = sources["version"]
    elif short_id is not None and "os_id" in sources:
        sources["osinfo"] = sources["os_id"]

    architecture = _architecture(fs, where, notes)
    if architecture is not None:
        sources["architecture"] = source(device, fs, architecture[1])
    kernels, kernels_from = _kernels(fs, where, notes)
    if kernels_from is not None:
        sources["kernels"] = source(device, fs, kernels_from)
    agent = _first_existing(fs, where, notes, QEMU_GUEST_AGENT)
    if agent is not None:
        sources["qemu_guest_agent"] = source(device, fs, agent)
    cloud_init = _first_existing(fs, where, notes, CLOUD_INIT)
    if cloud_init is not None:
        sources["cloud_init"] = source(device, fs, cloud_init)
    return OperatingSystem(
        device=device,
        filesystem=fs.name,
        os_type="linux",
        os_id=os_id,
        distro=distro,
        version=version,
        name=name,
        architecture=architecture[0] if architecture else None,
        osinfo=short_id,
        kernels=kernels,
        qemu_guest_agent=agent is not None,
        cloud_init=cloud_init is not None,
        sources=sources,
    )


def _release_file(fs: Filesystem, where: str, notes: list[Finding]) -> Release | None:
    """The first release file (`RELEASE_FILES`) that says what the system is."""
    for path, parse in RELEASE_FILES:
        data = attempt(notes, f"{where} {path}", read_file, fs, path, MAX_RELEASE_FILE)
        if data is None:
            continue
        release = parse(data, path)
        if release is not None:
            return release
    return None


def _debian_major(fs: Filesystem, where: str, notes: list[Finding]) -> tuple[str | None, str | None]:
    """Debian's major version from /etc/debian_version, when os-release has no VERSION_ID."""
    path = "/etc/debian_version"
    data = attempt(notes, f"{where} {path}", read_file, fs, path, MAX_RELEASE_FILE)
    release = parse_debian_version(data, path) if data is not None else None
    if release is None or release.version is None:
        return None, None
    return release.version, path


def _architecture(fs: Filesystem, where: str, notes: list[Finding]) -> tuple[str, str] | None:
    """The architecture of the first system binary that is an ELF file, and its path."""
    for path in ARCHITECTURE_BINARIES:
        file = attempt(notes, f"{where} {path}", open_file, fs, path)
        if file is None or file.size < elf.HEADER_SIZE // 2:
            continue
        head = attempt(
            notes,
            f"{where} {path}",
            file.read,
            0,
            min(file.size, elf.HEADER_SIZE),
            "ELF header",
        )
        if head is None or not elf.is_elf(head):
            continue
        word = attempt(notes, f"{where} {path}", elf.architecture, head)
        if word is not None:
            return word, path
    return None


def _kernels(fs: Filesystem, where: str, notes: list[Finding]) -> tuple[list[str], str | None]:
    """The kernels installed: the versions of /boot/vmlinuz-* (vmlinux-* on some architectures)
    and the directories of /lib/modules (a separate /boot leaves only these); and where they were
    listed (/boot when it named any)."""
    boot = attempt(notes, f"{where} /boot", list_directory, fs, "/boot", MAX_BOOT_ENTRIES) or []
    from_boot = {
        name[len(prefix) :]
        for name in boot
        for prefix in KERNEL_PREFIXES
        if name.startswith(prefix) and name != prefix
    }
    modules = attempt(
        notes, f"{where} /lib/modules", list_directory, fs, "/lib/modules", MAX_MODULE_DIRECTORIES
    )
    kernels = sorted(from_boot | set(modules or []))[:MAX_KERNELS]
    if not kernels:
        return [], None
    return kernels, "/boot" if from_boot else "/lib/modules"


def _first_existing(fs: Filesystem, where: str, notes: list[Finding], paths: tuple[str, ...]) -> str | None:
    for path in paths:
        if attempt(notes, f"{where} {path}", exists, fs, path):
            return path
    return None
