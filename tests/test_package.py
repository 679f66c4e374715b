"""The package as users install it: `python -m build`, then the wheel in fresh venvs.

The library alone (what Glance's import plugin installs into Glance's venv) must bring no
command-line or service packages; with the `cli` extra, the command works.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: Packages that belong to the command line or the service side, never to the library.
NOT_IN_THE_LIBRARY = {"click", "rich", "sh", "celery", "sqlalchemy", "alembic", "redis", "keystoneauth1"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True, capture_output=True
    )
    return out


def _venv(path: Path, requirement: str) -> Path:
    venv.create(path, with_pip=True)
    subprocess.run(
        [str(path / "bin/pip"), "install", "-q", "--disable-pip-version-check", requirement],
        check=True,
        capture_output=True,
    )
    return path / "bin"


def _installed(bin_dir: Path) -> set[str]:
    listed = subprocess.run(
        [str(bin_dir / "pip"), "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    )
    return {package["name"].lower() for package in json.loads(listed.stdout)}


def _qcow2(tmp_path: Path) -> Path:
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "3G"], check=True)
    return image


def test_the_distribution_is_not_named_like_the_unrelated_introspect_on_pypi():
    assert PROJECT["name"] == "introspect-images"
    assert PROJECT["scripts"] == {"introspect": "introspect.command:main"}


def test_build_makes_a_wheel_and_an_sdist(dist):
    version = PROJECT["version"]
    names = sorted(path.name for path in dist.iterdir())
    assert names == [f"introspect_images-{version}-py3-none-any.whl", f"introspect_images-{version}.tar.gz"]


def test_the_library_alone_brings_no_command_line_or_service_packages(dist, tmp_path):
    wheel = next(dist.glob("*.whl"))
    bin_dir = _venv(tmp_path / "library", str(wheel))
    assert not (_installed(bin_dir) & NOT_IN_THE_LIBRARY)
    image = _qcow2(tmp_path)
    inspected = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            f"import introspect; r = introspect.inspect({str(image)!r}); print(r.format, r.virtual_size)",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    qemu = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(image)], check=True, capture_output=True, text=True
        ).stdout
    )
    assert inspected.stdout.split() == [qemu["format"], str(qemu["virtual-size"])]
    command = subprocess.run([str(bin_dir / "introspect"), "--version"], capture_output=True, text=True)
    assert command.returncode == 2
    assert (
        command.stderr
        == "Error: the command line needs the click package: pip install 'introspect-images[cli]'\n"
    )


def test_with_the_cli_extra_the_command_works(dist, tmp_path):
    wheel = next(dist.glob("*.whl"))
    bin_dir = _venv(tmp_path / "cli", f"introspect-images[cli] @ {wheel.as_uri()}")
    version = subprocess.run(
        [str(bin_dir / "introspect"), "--version"], check=True, capture_output=True, text=True
    )
    assert version.stdout == f"introspect, version {PROJECT['version']}\n"
    image = _qcow2(tmp_path)
    report = json.loads(
        subprocess.run(
            [str(bin_dir / "introspect"), "inspect", "--json", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert (report["format"], report["virtual_size"]) == ("qcow2", 3 << 30)
