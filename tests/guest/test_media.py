"""Installer media's own descriptions: real .treeinfo files of Fedora, RHEL and openSUSE trees
(the productmd sdist's test data, fixtures/make/facts.sh), and real .disk/info lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from introspect.guest import media, osinfo
from tests.conftest import fixture_group

#: The architecture suffixes of productmd's file names -> Nova's words.
SUFFIX_WORDS = {
    "i386": "i686",
    "x86_64": "x86_64",
    "ppc": "ppc",
    "armhfp": "armv7l",
    "aarch64": "aarch64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
NAMED = re.compile(r"^(?P<distro>fedora|RHEL)-(?P<major>\d+)-.*\.(?P<arch>[a-z0-9_]+)$")
#: Real trees say odd things: Fedora 7's Everything tree for ppc says "arch = ppcppc" (no
#: architecture is named), Fedora 8's Everything trees "version = development" (no number).
ODD_ARCH = {"fedora-7-Everything.ppc"}
ODD_VERSION = {"fedora-8-Everything.i386", "fedora-8-Everything.ppc", "fedora-8-Everything.x86_64"}


def treeinfo_files() -> list[str]:
    return sorted(path.name for path in (fixture_group("facts") / "treeinfo").iterdir())


@pytest.fixture(scope="module")
def trees() -> Path:
    return fixture_group("facts") / "treeinfo"


@pytest.mark.parametrize("name", [name for name in treeinfo_files() if NAMED.match(name)])
def test_treeinfo_is_what_its_file_name_says(trees: Path, name: str) -> None:
    """productmd names each file after the tree: distribution, major version, architecture."""
    said = NAMED.match(name)
    installer = media.parse_treeinfo((trees / name).read_bytes(), "/.treeinfo")
    assert installer is not None
    assert installer.os_type == "linux"
    assert installer.os_id == {"fedora": "fedora", "RHEL": "rhel"}[said["distro"]]
    short_id = osinfo.linux_osinfo(installer.os_id, installer.version)
    if name in ODD_VERSION:
        assert installer.version == "development"
        assert short_id is None
    else:
        assert installer.version.split(".")[0].split("_")[0] == said["major"]
        assert short_id.startswith(installer.os_id) and said["major"] in short_id
    assert installer.architecture == (None if name in ODD_ARCH else SUFFIX_WORDS[said["arch"]])


@pytest.mark.parametrize(
    ("name", "os_id", "version", "architecture", "short_id"),
    [
        ("opensuse", "opensuse-leap", "15.1", "x86_64", "opensuse15.1"),
        ("multivariants_treeinfo", "fedora", "20", "x86_64", "fedora20"),
    ],
)
def test_treeinfo_releases(
    trees: Path, name: str, os_id: str, version: str, architecture: str, short_id: str
) -> None:
    installer = media.parse_treeinfo((trees / name).read_bytes(), "/.treeinfo")
    assert (installer.os_id, installer.version, installer.architecture) == (os_id, version, architecture)
    assert osinfo.linux_osinfo(installer.os_id, installer.version) == short_id


#: Real .disk/info lines, as public records quote them from the discs: Ubuntu's installer and
#: apport copy the file into bug reports ("InstallationMedia:"), and Wubi's logs print it
#: ("parsing info from str=..."); the Debian line is from a public build record of a netinst.
DISK_INFO = [
    ('Ubuntu 10.04.1 LTS "Lucid Lynx" - Release amd64 (20100816.1)', "ubuntu", "10.04.1", "x86_64"),
    ('Ubuntu 10.04 "Lucid Lynx" - Release Candidate i386 (20100419.1)', "ubuntu", "10.04", "i686"),
    ('Kubuntu 10.04 LTS "Lucid Lynx" - Release amd64 (20100427)', "ubuntu", "10.04", "x86_64"),
    ('Ubuntu-Netbook 10.04 "Lucid Lynx" - Release i386', "ubuntu", "10.04", "i686"),
    (
        'Debian GNU/Linux 12.15.0 "Bookworm" - Official amd64 NETINST with firmware 20260711-14:01',
        "debian",
        "12.15.0",
        "x86_64",
    ),
]


@pytest.mark.parametrize(("line", "os_id", "version", "architecture"), DISK_INFO)
def test_disk_info(line: str, os_id: str, version: str, architecture: str) -> None:
    installer = media.parse_disk_info(line.encode() + b"\n", "/.disk/info")
    assert (installer.os_id, installer.version, installer.architecture) == (os_id, version, architecture)
    assert installer.name == line
    assert osinfo.os_distro(installer.os_id) == os_id


@pytest.mark.parametrize("data", [b"", b"\n", b"random text", b"\xff" * 100, b"x" * (1 << 20)])
def test_what_is_not_disk_info_or_treeinfo(data: bytes) -> None:
    assert media.parse_disk_info(data) is None
    assert media.parse_treeinfo(data) is None
    assert media.parse_idwbinfo(data) is None
