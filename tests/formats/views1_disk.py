"""The guest disk of fixtures/make/views1.sh, as the tools that made it describe it, and its views
opened as the guest pass opens them: through a Reader of its own with the guest pass's budget.

What the guest sees in an image is disk.raw's bytes, with the qemu-io commands recorded beside the
image (IMAGE.qemu-io.txt) applied; an overlay (qemu-img info names a backing file) is read alone,
so where it has nothing of its own the guest sees zeros.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel

import introspect
from introspect.decode import KIB, MIB
from introspect.formats import BY_NAME
from introspect.formats.base import GuestView
from introspect.sources import Budget, BytesSource, FileSource, Reader
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded

SECTOR = 512
#: The guest pass's budget (introspect.guest): 512 reads and 4 MiB for the whole guest.
GUEST_BUDGET = Budget(max_reads=512, max_bytes=4 * MIB)
#: The ext4 block size the script asks mkfs.ext4 for (-b 4096).
EXT4_BLOCK = 4 * KIB
#: An ext4 superblock lies 1024 bytes into its filesystem and is 1024 bytes long.
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
#: The script leaves the disk zero from 33 MiB to the backup GPT.
ZEROS_AT = 40 * MIB

QEMU_IO = re.compile(r"write (?:-P (?P<pattern>0x[0-9a-f]+)|-z(?: -u)?) (?P<offset>\d+) (?P<length>\d+)")


def group() -> Path:
    return fixture_group("views1")


@cache
def disk() -> bytes:
    """disk.raw, the source every image was converted from."""
    return (group() / "disk.raw").read_bytes()


def partition_start() -> int:
    """Where sgdisk put the one partition, as sfdisk says, in bytes."""
    table = json.loads(recorded(group() / "disk.raw", "sfdisk.json"))["partitiontable"]
    return int(table["partitions"][0]["start"]) * int(table["sectorsize"])


def random_runs() -> list[tuple[int, int]]:
    """The disk ranges (offset, length) that hold random.bin, from debugfs's block list."""
    blocks = [
        int(word) for word in recorded(group() / "disk.raw", "random-blocks.txt").split() if word.isdigit()
    ]
    runs: list[tuple[int, int]] = []
    for block in blocks:
        offset = partition_start() + block * EXT4_BLOCK
        if runs and sum(runs[-1]) == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + EXT4_BLOCK)
        else:
            runs.append((offset, EXT4_BLOCK))
    return runs


@dataclass(frozen=True)
class Probe:
    """A range of the guest's disk a test reads, named for what the tools put there."""

    name: str
    offset: int
    length: int


def probes() -> list[Probe]:
    """The partition table, the superblock, random.bin, zeros, the last sector, and reads that
    cross cluster and block boundaries (3 MiB is a multiple of every cluster and block size here)."""
    start, (random_at, random_length) = partition_start(), random_runs()[0]
    return [
        Probe("protective MBR", 0, SECTOR),
        Probe("GPT header and entries", SECTOR, 32 * SECTOR),
        Probe("ext4 superblock", start + SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE),
        Probe("random.bin", random_at, random_length),
        Probe("zeros past the partition", ZEROS_AT, 64 * KIB),
        Probe("backup GPT header, the last sector", len(disk()) - SECTOR, SECTOR),
        Probe("across a 3 MiB boundary", 3 * MIB - 2 * KIB, 4 * KIB),
        Probe("across a 64 KiB boundary", start + 64 * KIB - 100, 200),
    ]


def qemu_io_writes(image: Path) -> list[tuple[int, int, bytes]]:
    """The qemu-io writes recorded beside IMAGE: (offset, length, byte written)."""
    sidecar = image.with_name(image.name + ".qemu-io.txt")
    if not sidecar.exists():
        return []
    writes = []
    for line in sidecar.read_text().splitlines():
        match = QEMU_IO.fullmatch(line)
        assert match, line
        byte = int(match["pattern"], 16) if match["pattern"] else 0
        writes.append((int(match["offset"]), int(match["length"]), bytes([byte])))
    return writes


def guest_bytes(image: Path, offset: int, length: int) -> bytes:
    """What the guest sees in IMAGE alone (see the module docstring)."""
    overlay = "backing-filename" in qemu_info(image)
    data = bytearray(length) if overlay else bytearray(disk()[offset : offset + length])
    for start, size, byte in qemu_io_writes(image):
        low, high = max(start, offset), min(start + size, offset + length)
        if low < high:
            data[low - offset : high - offset] = byte * (high - low)
    return bytes(data)


@contextmanager
def opened(image: Path, budget: Budget = GUEST_BUDGET) -> Iterator[tuple[GuestView, Reader]]:
    """IMAGE's guest view over a fresh Reader with the guest budget, after the header pass."""
    details = introspect.inspect(image).details
    assert details is not None
    with FileSource(image) as source:
        reader = Reader(source, budget)
        view = BY_NAME[details.format].load().guest(reader, details)
        assert view is not None
        yield view, reader


def derived(data: bytes | bytearray, details: BaseModel | None = None) -> tuple[GuestView, Reader]:
    """The guest view of an image derived from a fixture: `details` from the header pass of the
    derived bytes, or given (those of the fixture it came from, when only its tables changed)."""
    source = BytesSource(bytes(data), "derived")
    if details is None:
        details = introspect.inspect(source).details
    assert details is not None
    reader = Reader(source, GUEST_BUDGET)
    view = BY_NAME[details.format].load().guest(reader, details)
    assert view is not None
    return view, reader
