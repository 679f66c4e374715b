"""The names a system goes by: Glance's os_distro words (the vocabulary), libosinfo's short ids
(each checked to be one the installed osinfo-db defines), Nova's architecture words."""

from __future__ import annotations

import re
import shutil
from functools import cache
from pathlib import Path

import pytest

from introspect.guest import osinfo
from introspect.vocabulary import PROPERTIES, check


@cache
def osinfo_db_ids() -> frozenset[str]:
    """Every <short-id> of the osinfo-db Debian's package installed (osinfo-db 0.20221130)."""
    assert (osinfo.OSINFO_DB / "VERSION").exists(), "osinfo-db is missing: make tools installs it"
    ids = set()
    for path in (osinfo.OSINFO_DB / "os").glob("*/*.xml"):
        ids.update(re.findall(r"<short-id>([^<]+)</short-id>", path.read_text()))
    return frozenset(ids)


def test_every_glance_word_maps_to_itself() -> None:
    for word in PROPERTIES["os_distro"]["enum"]:
        assert osinfo.os_distro(word) == word


@pytest.mark.parametrize(
    ("os_id", "word"),
    [
        ("opensuse-leap", "opensuse"),
        ("opensuse-tumbleweed", "opensuse"),
        ("opensuse", "opensuse"),
        ("rocky", "rocky"),
        ("arch", "arch"),
        ("rhel", "rhel"),
        ("sled", "sled"),
        # No Glance word: the system keeps its os_id and gets no os_distro.
        ("sles", None),
        ("alpine", None),
        ("almalinux", None),
        ("ol", None),
        ("raspbian", None),
        ("linuxmint", None),
        ("", None),
        (None, None),
    ],
)
def test_os_distro(os_id: str | None, word: str | None) -> None:
    assert osinfo.os_distro(os_id) == word
    if word is not None:
        assert check("os_distro", word) is None


#: (os-release ID, VERSION_ID, PRETTY_NAME) -> libosinfo's short id, each in osinfo-db.
LINUX = [
    ("debian", "11", None, "debian11"),
    ("debian", "10", None, "debian10"),
    ("debian", None, "Debian GNU/Linux trixie/sid", "debiantesting"),
    ("ubuntu", "22.04", None, "ubuntu22.04"),
    ("ubuntu", "20.10", None, "ubuntu20.10"),
    ("centos", "7", "CentOS Linux 7 (Core)", "centos7.0"),
    ("centos", "6.5", None, "centos6.5"),
    ("centos", "8", "CentOS Linux 8", "centos8"),
    ("centos", "8", "CentOS Stream 8", "centos-stream8"),
    ("centos", "9", "CentOS Stream 9", "centos-stream9"),
    ("fedora", "37", None, "fedora37"),
    ("rhel", "9.1", None, "rhel9.1"),
    ("opensuse-leap", "15.4", None, "opensuse15.4"),
    ("opensuse", "42.1", None, "opensuse42.1"),
    ("opensuse-tumbleweed", "20221130", None, "opensusetumbleweed"),
    ("sles", "12.5", None, "sles12sp5"),
    ("sles", "12", None, "sles12"),
    ("sled", "11.4", None, "sles11sp4"),
    ("alpine", "3.17.1", None, "alpinelinux3.17"),
    ("arch", None, "Arch Linux", "archlinux"),
    ("gentoo", None, None, "gentoo"),
    ("void", None, None, "voidlinux"),
    ("rocky", "9.0", None, "rocky9"),
    ("almalinux", "9.1", None, "almalinux9"),
    ("ol", "8.5", None, "ol8.5"),
    ("altlinux", "10.0", None, "alt10.0"),
    ("mageia", "8", None, "mageia8"),
]


@pytest.mark.parametrize(("os_id", "version", "name", "short_id"), LINUX)
def test_linux_short_ids_are_osinfo_db_ids(
    os_id: str, version: str | None, name: str | None, short_id: str
) -> None:
    assert short_id in osinfo_db_ids()
    assert osinfo.linux_osinfo(os_id, version, name=name) == short_id


@pytest.mark.parametrize(
    ("os_id", "version"),
    [("debian", None), ("fedora", "rawhide"), (None, "12"), ("debian", "3"), ("unknown", "0")],
)
def test_no_short_id_without_a_version(os_id: str | None, version: str | None) -> None:
    assert osinfo.linux_osinfo(os_id, version) is None


#: CurrentVersion's values -> the short id, each in osinfo-db.
WINDOWS = [
    (10, 0, "Windows Server 2019 Standard", "Server", "17763", "win2k19"),
    (10, 0, "Windows Server 2022 Datacenter", "Server", "20348", "win2k22"),
    (10, 0, "Windows Server 2016 Standard", "Server Core", "14393", "win2k16"),
    (10, 0, "Windows Server Datacenter", "Server Core", "18363", "win2k19"),  # semi-annual 1909
    (10, 0, "Windows Server Datacenter", "Server Core", "14393", "win2k16"),
    (10, 0, "Windows 10 Pro", "Client", "19045", "win10"),
    (10, 0, "Windows 10 Pro", "Client", "22631", "win11"),  # Windows 11 still says "Windows 10"
    (6, 3, "Windows Server 2012 R2 Datacenter", "Server", "9600", "win2k12r2"),
    (6, 3, "Windows 8.1 Pro", "Client", "9600", "win8.1"),
    (6, 1, "Windows 7 Professional", "Client", "7601", "win7"),
    (6, 1, "Windows Server 2008 R2 Standard", "Server", "7601", "win2k8r2"),
    (6, 0, "Windows Vista (TM) Business", "Client", "6002", "winvista"),
    (5, 2, "Microsoft Windows XP", None, "3790", "winxp"),
    (5, 2, "Microsoft Windows Server 2003 R2", None, "3790", "win2k3r2"),
    (5, 1, "Microsoft Windows XP", None, "2600", "winxp"),
]


@pytest.mark.parametrize(("major", "minor", "product", "kind", "build", "short_id"), WINDOWS)
def test_windows_short_ids_are_osinfo_db_ids(
    major: int, minor: int, product: str, kind: str | None, build: str, short_id: str
) -> None:
    assert short_id in osinfo_db_ids()
    assert osinfo.windows_osinfo(major, minor, product, kind, build) == short_id


def test_no_windows_short_id_without_a_version_or_build() -> None:
    assert osinfo.windows_osinfo(None, None, "Windows 10 Pro", "Client", "19045") is None
    assert osinfo.windows_osinfo(10, 0, "Windows 10 Pro", "Client", None) is None
    assert osinfo.windows_osinfo(4, 0, "Windows NT", None, "1381") is None


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("amd64", "x86_64"),
        ("x86_64", "x86_64"),
        ("i386", "i686"),
        ("x86", "i686"),
        ("arm64", "aarch64"),
        ("ARM64", "aarch64"),
        ("armhf", "armv7l"),
        ("armhfp", "armv7l"),
        ("ppc64el", "ppc64le"),
        ("ppc64le", "ppc64le"),
        ("s390x", "s390x"),
        ("mips64el", "mips64el"),
        ("Official", None),
        (None, None),
    ],
)
def test_architecture_words(name: str | None, word: str | None) -> None:
    assert osinfo.nova_architecture(name) == word
    if word is not None:
        assert check("architecture", word) is None


def test_volume_ids_that_name_nothing(tmp_path: Path) -> None:
    """Debian's and Microsoft's entries of the installed osinfo-db (copied, to parse less) know
    no media labelled as the ISO fixtures are, and nothing is answered without a label."""
    for vendor in ("debian.org", "microsoft.com"):
        shutil.copytree(osinfo.OSINFO_DB / "os" / vendor, tmp_path / "os" / vendor)
    media = osinfo.osinfo_media(tmp_path)
    assert {entry.short_id for entry in media} >= {"debian11", "win10", "win2k19"}
    for label in ("PLAIN_VOL", "BIOS_EFI", "", None, "x" * 200):
        assert osinfo.match_media(label, "x86_64", tmp_path) is None
