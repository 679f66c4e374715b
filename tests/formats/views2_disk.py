"""The source disk of fixtures/make/views2.sh, and the checks every format's guest view of it
must pass: what the view reads is the source's bytes, where sgdisk, mkfs.ext4 and debugfs put them.

Every offset here comes from what the tools recorded (sgdisk -p, debugfs "blocks"), or from the
specs of what they wrote (a GPT's header at LBA 1 and its entries from LBA 2, ext4's superblock
1024 bytes into its filesystem): never from introspect.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import introspect
from introspect.formats import BY_NAME
from introspect.sources import Budget, ByteSource, BytesSource, FileSource, Reader
from tests.conftest import fixture_group

SECTOR = 512
MIB = 1 << 20
#: The guest pass's default budget (DESIGN.md): every check here must fit in it many times over.
GUEST_BUDGET = Budget(max_reads=512, max_bytes=4 * MIB)
#: ext4's block size, as views2.sh made it (mkfs.ext4 -b 4096).
EXT4_BLOCK = 4096


def group() -> Path:
    return fixture_group("views2")


@cache
def source() -> bytes:
    """disk.raw, the disk every image of the group was converted from."""
    return (group() / "disk.raw").read_bytes()


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the tools put things on the source disk, in bytes."""

    partitions: dict[str, tuple[int, int]]  # name: (start, end)
    random_file: tuple[int, int]  # where /random.bin's blocks are (debugfs says they are contiguous)
    size: int


@cache
def layout() -> Layout:
    text = (group() / "disk.raw.sgdisk.txt").read_text()
    partitions = {
        name: (int(start) * SECTOR, (int(end) + 1) * SECTOR)
        for start, end, name in re.findall(r"^\s+\d+\s+(\d+)\s+(\d+)\s+.*\s(\S+)$", text, re.MULTILINE)
    }
    blocks = [int(b) for b in (group() / "disk.raw.debugfs-random.txt").read_text().split()]
    assert blocks == list(range(blocks[0], blocks[0] + len(blocks))), "debugfs: /random.bin is fragmented"
    root = partitions["root"][0]
    random_file = (root + blocks[0] * EXT4_BLOCK, root + (blocks[-1] + 1) * EXT4_BLOCK)
    return Layout(partitions, random_file, len(source()))


def checks() -> dict[str, tuple[int, int]]:
    """Named (offset, length) reads covering what a guest pass reads, and the boundaries of every
    format's blocks: a grain (64 KiB), a VHD block (2 MiB), a VHDX block (1 MiB or 32 MiB)."""
    where = layout()
    root = where.partitions["root"][0]
    esp_start, esp_end = where.partitions["ESP"]
    random_start, random_end = where.random_file
    return {
        "protective MBR and GPT header": (0, 2 * SECTOR),
        "GPT entries": (2 * SECTOR, 32 * SECTOR),
        "ext4 superblock": (root + 1024, 1024),
        "the random file": (random_start, random_end - random_start),
        "in the ESP (zeros)": (esp_start + MIB, 256 * 1024),
        "between the partitions (zeros)": (esp_end, 256 * 1024),
        "across the 8 MiB boundary": (8 * MIB - 3 * SECTOR, 7 * SECTOR),
        "across the 15 MiB boundary, in the random file": (15 * MIB - 5000, 10000),
        "across a grain boundary, unaligned": (random_start + 65536 - 7, 77),
        "across the 32 MiB boundary": (32 * MIB - 4096, 8192),
        "the last sector (GPT backup header)": (where.size - SECTOR, SECTOR),
    }


def open_view(path: Path | str, budget: Budget = GUEST_BUDGET, source: ByteSource | None = None) -> Any:
    """The guest view of an image, through a Reader of its own (as the guest pass makes one)."""
    report = introspect.inspect(source if source is not None else path)
    assert report.details is not None, report.findings
    reader = Reader(source if source is not None else FileSource(path), budget)
    return BY_NAME[report.format].load().guest(reader, report.details), reader


def assert_reads_like_source(view: Any, names: list[str] | None = None) -> None:
    """Each check's bytes, read through the view, are the source disk's."""
    disk = source()
    for name, (offset, length) in checks().items():
        if names is not None and name not in names:
            continue
        assert view.read(offset, length) == disk[offset : offset + length], name


def survives_mutations(name: str, start: int, end: int, *, count: int = 12, seed: int = 10) -> int:
    """Overwrite a random 4-byte word between `start` and `end` of the image (its mapping tables)
    with a hostile value, `count` times, each time on a fresh copy: opening the view and reading
    every check must give the bytes asked for or an ImageError, never another exception or a hang.
    Returns how many mutations got as far as a view (so a test can say the tables were reached)."""
    rng = random.Random(seed)
    original = (group() / name).read_bytes()
    viewed = 0
    for _ in range(count):
        data = bytearray(original)
        at = rng.randrange(start, end - 4) // 4 * 4
        data[at : at + 4] = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 1, 0, rng.getrandbits(32)]).to_bytes(
            4, "little"
        )
        mutated = BytesSource(bytes(data), name)
        report = introspect.inspect(mutated)
        if report.details is None:
            continue
        try:
            view = BY_NAME[report.format].load().guest(Reader(mutated, GUEST_BUDGET), report.details)
            viewed += 1
            for offset, length in checks().values():
                assert len(view.read(offset, length)) == length
        except introspect.ImageError:
            continue
    return viewed
