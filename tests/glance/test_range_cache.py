"""The range cache shared by several worker processes (one cache directory per machine): writes,
reads and evictions racing each other never fail, never serve a wrong byte, and the cap holds.
No Glance needed: the cache is only files."""

from __future__ import annotations

import hashlib
import multiprocessing
import random
from pathlib import Path

from workers.glance.source import RangeCache

KIB = 1024
#: Small enough that nearly every write evicts: the racy path is the common one here.
CAP = 64 * KIB
PROCESSES = 6
ROUNDS = 100
IMAGES = 12


def content(key: str, start: int, length: int) -> bytes:
    """What the range of `key` at `start` holds: derived from both, so a byte from any other
    range or image shows."""
    seed = hashlib.sha256(f"{key}:{start}".encode()).digest()
    return (seed * (length // len(seed) + 1))[:length]


def hammer(directory: str, seed: int) -> str:
    """One worker process: random writes and reads of random images; '' or what went wrong."""
    cache = RangeCache(Path(directory), CAP)
    chance = random.Random(seed)
    try:
        for _ in range(ROUNDS):
            key = hashlib.sha1(str(chance.randrange(IMAGES)).encode()).hexdigest()
            if chance.random() < 0.6:
                start = chance.randrange(8) * 4 * KIB
                cache.put(key, start, content(key, start, chance.choice((KIB, 4 * KIB, 8 * KIB))))
            else:
                for start, data in cache.ranges(key):
                    if data != content(key, start, len(data)):
                        return f"wrong bytes for {key} at {start}"
    except Exception as error:  # reported by the test, with its type
        return f"{type(error).__name__}: {error}"
    return ""


def test_several_processes_share_one_cache_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ranges"
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        outcomes = pool.starmap(hammer, [(str(directory), seed) for seed in range(PROCESSES)])
    assert outcomes == [""] * PROCESSES
    cache = RangeCache(directory, CAP)
    assert 0 < cache.size() <= CAP
    assert not list(directory.rglob("*.tmp"))  # no write left a temporary file behind
