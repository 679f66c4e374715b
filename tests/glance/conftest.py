"""Fixtures of the Glance suite: images made by qemu-img, and the Glance catalog under test. The
Glance peer itself (`glance`, `api`, `client`, `admin`, `member`, `rabbit_vhost`) is in
tests/glance/fixtures.py, registered for every suite by tests/conftest.py."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from tests.glance.fixtures import IMAGES, run
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import GlanceClient

MIB = 1024 * 1024
#: Virtual size of every fixture image: odd on purpose (1 GiB + 3 MiB).
VIRTUAL_SIZE = 1024 * MIB + 3 * MIB


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture images, made by qemu-img from one sparse raw disk with 2 MiB of random data
    (at its start and in its middle), so every image is a few MiB: reading it whole would show."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is missing: `make tools` installs qemu-utils")
    directory = tmp_path_factory.mktemp("glance-images")
    raw = directory / "data.raw"
    with raw.open("wb") as out:
        noise = random.Random(5).randbytes(MIB)  # deterministic, and nothing for a format to compress
        out.write(noise)
        out.seek(VIRTUAL_SIZE // 2)
        out.write(noise[::-1])
        out.truncate(VIRTUAL_SIZE)
    made: dict[str, Path] = {}
    for name, qemu_format, options, _ in IMAGES:
        target = directory / name
        run(
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            qemu_format,
            *(["-o", options] if options else []),
            raw,
            target,
        )
        made[name] = target
    # Hostile: a qcow2 naming a backing file (Glance and introspect both refuse it).
    backed = directory / "backed.qcow2"
    run("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", backed, str(VIRTUAL_SIZE))
    made["backed.qcow2"] = backed
    raw.unlink()
    return made


@pytest.fixture
def catalog(client: GlanceClient) -> GlanceCatalog:
    """The Glance catalog under test, over the service's client (no range cache)."""
    return GlanceCatalog(client)
