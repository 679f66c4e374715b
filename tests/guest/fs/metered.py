"""Open a fixture's filesystem the way the guest pass does: a Disk over the raw guest view of a
Reader metered by the guest budget (512 reads, 4 MiB), so tests see what each lookup costs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from introspect.decode import MIB
from introspect.formats.raw import RawGuestView
from introspect.guest.disk import Disk
from introspect.guest.fs.base import FilesystemType
from introspect.sources import Budget, FileSource, Reader

GUEST_BUDGET = Budget(max_reads=512, max_bytes=4 * MIB)


@contextmanager
def metered(path: Path) -> Iterator[tuple[Disk, Reader]]:
    """The whole image as a guest disk, read through a Reader under the guest budget."""
    with FileSource(path) as source:
        reader = Reader(source, GUEST_BUDGET)
        yield Disk.of(RawGuestView(reader)), reader


def blkid(image: Path) -> dict[str, str]:
    """`blkid -p -o export IMAGE`, as the build script recorded it (values unescaped)."""
    text = image.with_name(image.name + ".blkid.txt").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value.replace("\\ ", " ") for key, value in pairs}


def derived(image: Path, tmp_path: Path, data: bytearray) -> Path:
    """A hostile copy of `image` holding `data`."""
    path = tmp_path / f"hostile-{image.name}"
    path.write_bytes(data)
    return path


def opened(kind: FilesystemType, disk: Disk) -> Any:
    """`kind` opened on `disk`, after its probe said yes."""
    assert kind.probe(disk)
    return kind.open(disk)
