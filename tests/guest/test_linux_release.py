"""os-release files and the older release files of many distributions (the test resources the
distro sdist ships), read as `sh` reads them (fixtures/make/facts.sh recorded it) and as the
files themselves say."""

from __future__ import annotations

from pathlib import Path

import pytest

from introspect.guest import linux, osinfo
from introspect.guest.linux import Release
from introspect.vocabulary import PROPERTIES
from tests.conftest import fixture_group

KEYS = ("ID", "ID_LIKE", "VERSION_ID", "NAME", "PRETTY_NAME")


@pytest.fixture(scope="module")
def distros() -> Path:
    return fixture_group("facts") / "distros"


def os_release_files() -> list[str]:
    root = fixture_group("facts") / "distros"
    return sorted(str(path.relative_to(root)) for path in root.glob("*/**/os-release") if path.is_file())


def shell_reading(path: Path) -> dict[str, str]:
    """The values `sh` read from the file (fixtures/make/facts.sh)."""
    text = path.with_name(path.name + ".sh.txt").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def test_there_are_many_distributions(distros: Path) -> None:
    assert len(os_release_files()) >= 40


@pytest.mark.parametrize("relative", os_release_files())
def test_os_release_reads_as_the_shell_reads_it(distros: Path, relative: str) -> None:
    path = distros / relative
    parsed = linux.parse_os_release(path.read_bytes())
    said = shell_reading(path)
    assert {key: parsed.get(key, "") for key in KEYS} == {key: said[key] for key in KEYS}


#: Each distribution's os_distro, by Glance's list: its ID when Glance has that word, openSUSE's
#: IDs as opensuse, nothing for the rest.
GLANCE_WORDS = set(PROPERTIES["os_distro"]["enum"])


@pytest.mark.parametrize("relative", os_release_files())
def test_os_distro_follows_glance_vocabulary(distros: Path, relative: str) -> None:
    os_id = shell_reading(distros / relative)["ID"]
    word = osinfo.os_distro(os_id)
    if os_id in GLANCE_WORDS:
        assert word == os_id
    elif os_id.startswith("opensuse"):
        assert word == "opensuse"
    else:
        assert word is None, os_id


#: (directory, release file) -> what its text says: (os-release ID it stands for, version).
RELEASE_FILES = [
    ("centos5", "etc/centos-release", "centos", "5.11"),  # CentOS release 5.11 (Final)
    ("centos5", "etc/redhat-release", "centos", "5.11"),
    ("centos7", "etc/centos-release", "centos", "7.1"),  # CentOS Linux release 7.1.1503 (Core)
    ("rhel5", "etc/redhat-release", "rhel", "5.11"),  # Red Hat Enterprise Linux Server release 5.11 (Tikanga)
    ("rhel6", "etc/redhat-release", "rhel", "6.5"),
    ("rhel7", "etc/redhat-release", "rhel", "7.0"),
    ("fedora19", "etc/fedora-release", "fedora", "19"),  # Fedora release 19 (Schrödinger’s Cat)
    ("fedora30", "etc/redhat-release", "fedora", "30"),
    ("scientific6", "etc/redhat-release", "scientific", "6.4"),
    ("cloudlinux5", "etc/redhat-release", "cloudlinux", "5.11"),
    ("cloudlinux6", "etc/redhat-release", "cloudlinux", "6.8"),
    ("rocky", "etc/centos-release", "rocky", "8.4"),  # Rocky Linux release 8.4 (Green Obsidian)
    ("oracle7", "etc/oracle-release", "ol", "7.5"),  # Oracle Linux Server release 7.5
    ("mageia5", "etc/redhat-release", "mageia", "5"),  # Mageia release 5 (Official) for x86_64
    ("altlinux10", "etc/altlinux-release", "altlinux", "10.1"),  # ALT Server 10.1 (Mendelevium)
    ("kvmibm1", "etc/redhat-release", None, None),  # KVM for IBM z Systems release 1.1.1 (Z)
    ("debian8", "etc/debian_version", "debian", "8"),  # 8.2
    ("debian10", "etc/debian_version", "debian", "10"),  # 10.11
    ("debiantesting", "etc/debian_version", "debian", None),  # bookworm/sid
    ("ubuntu16", "etc/lsb-release", "ubuntu", "16.04"),
    ("linuxmint17", "etc/lsb-release", "linuxmint", "17.3"),
    ("mageia5", "etc/lsb-release", "mageia", "5"),
    ("mandriva2011", "etc/lsb-release", "mandriva", "2011.0"),
    ("sles12", "etc/SuSE-release", "sles", "12.1"),  # VERSION = 12, PATCHLEVEL = 1
    ("opensuse42", "etc/SuSE-release", "opensuse", None),  # openSUSE 42.1 (x86_64), no VERSION line
    ("gentoo", "etc/gentoo-release", "gentoo", None),
    ("arch", "etc/arch-release", "arch", None),
]
PARSERS = {
    "lsb-release": linux.parse_lsb_release,
    "debian_version": linux.parse_debian_version,
    "SuSE-release": linux.parse_suse_release,
    "gentoo-release": linux.parse_gentoo_release,
    "arch-release": linux.parse_arch_release,
}


@pytest.mark.parametrize(("directory", "relative", "os_id", "version"), RELEASE_FILES)
def test_release_files(
    distros: Path, directory: str, relative: str, os_id: str | None, version: str | None
) -> None:
    path = distros / directory / relative
    data = path.read_bytes()
    name = path.name
    parse = PARSERS.get(name, linux.parse_redhat_release)
    release = parse(data, f"/{relative}")
    assert isinstance(release, Release)
    assert (release.os_id, release.version) == (os_id, version)
    assert release.path == f"/{relative}"
    if version is not None:
        assert version.split(".")[0] in data.decode()
    if name.endswith("-release") and name not in ("lsb-release", "arch-release", "SuSE-release"):
        assert release.name == data.decode().splitlines()[0].strip()


def test_the_release_file_order_is_libguestfs(distros: Path) -> None:
    """os-release first; then lsb-release before the Red Hat family, whose specific files come
    before /etc/redhat-release, and /etc/debian_version after them."""
    order = [path for path, _ in linux.RELEASE_FILES]
    assert order[0] == "/etc/lsb-release"
    assert (
        order.index("/etc/centos-release")
        < order.index("/etc/redhat-release")
        < order.index("/etc/debian_version")
    )
    assert linux.OS_RELEASE_PATHS == ("/etc/os-release", "/usr/lib/os-release")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'# comment\n\nID="quoted \\"inner\\" \\$HOME"\n', {"ID": 'quoted "inner" $HOME'}),
        (b"ID='single $quoted'\n", {"ID": "single $quoted"}),
        (b"ID=bare\\ word # trailing comment\n", {"ID": "bare word"}),
        (b'ID="unterminated\nVERSION_ID=1\n', {"VERSION_ID": "1"}),
        (b"not a line\n=value\n1KEY=x\nKEY\n", {}),
        (b"ID=\xff\xfe\n", {"ID": "\ufffd\ufffd"}),
    ],
)
def test_os_release_syntax(text: bytes, expected: dict[str, str]) -> None:
    """os-release(5)'s shell syntax, each case as the shell would read it."""
    assert linux.parse_os_release(text) == expected


def test_os_release_is_bounded() -> None:
    """A hostile os-release: 1 MiB of assignments, one endless value; the parse keeps its caps."""
    many = b"".join(b"K%d=v\n" % index for index in range(100_000))
    assert len(linux.parse_os_release(many)) == linux.MAX_KEYS
    long = b"PRETTY_NAME=" + b"x" * (1 << 20)
    assert len(linux.parse_os_release(long)["PRETTY_NAME"]) == linux.MAX_VALUE


def test_debian_testing_is_debiantesting(distros: Path) -> None:
    """Debian testing's os-release has no VERSION_ID and its debian_version no number: osinfo-db
    calls it debiantesting."""
    said = shell_reading(distros / "debiantesting" / "etc" / "os-release")
    assert said["VERSION_ID"] == ""
    assert osinfo.linux_osinfo(said["ID"], None, name=said["PRETTY_NAME"]) == "debiantesting"
    assert osinfo.linux_osinfo("debian", None, name="Debian GNU/Linux") is None
