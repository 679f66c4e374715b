"""Mutation fuzzing (hypothesis) of real images: whatever bytes arrive, `inspect()` returns a
Report, never raises, never trips the internal-error net, writes only values in the vocabulary,
stays within the read budget, and stays fast. Seeds are the tool-built fixtures; mutations aim
at the fields that hurt most (lengths, counts and offsets: boundary integers at aligned offsets)
plus random bytes and truncation."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import introspect
from introspect import vocabulary
from introspect.sources import Budget, ByteSource, FileSource
from tests.conftest import FIXTURES

SIDECARS = (".json", ".txt", ".built", ".sh")
MAX_SEED_BYTES = 64 << 20  # apparent size; the files are sparse


def seeds() -> list[Path]:
    found = []
    for path in sorted(FIXTURES.glob("*/*")):
        if path.is_file() and not path.name.endswith(SIDECARS) and path.stat().st_size <= MAX_SEED_BYTES:
            found.append(path)
    return found


SEEDS = seeds()
BOUNDARIES = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 32,
    1 << 40,
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - 1,
]


class Mutated(ByteSource):
    """A real file seen through patches and an optional truncation; never written to disk."""

    def __init__(self, path: Path, patches: list[tuple[int, bytes]], size: int | None) -> None:
        self._file = FileSource(path)
        self._patches = patches
        self._size = self._file.size if size is None else min(size, self._file.size)
        self.name = f"{path.name}+{len(patches)} patches"

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        data = bytearray(self._file.pread(offset, length))
        for at, patch in self._patches:
            for i, byte in enumerate(patch):
                if offset <= at + i < offset + len(data):
                    data[at + i - offset] = byte
        return bytes(data)

    def close(self) -> None:
        self._file.close()


@st.composite
def boundary_patch(draw):
    offset = draw(st.integers(0, 4096 // 4 - 1)) * 4
    width, order = draw(st.sampled_from([(4, ">"), (4, "<"), (8, ">"), (8, "<"), (2, "<"), (2, ">")]))
    value = draw(st.sampled_from(BOUNDARIES)) & ((1 << (8 * width)) - 1)
    return offset, struct.pack(f"{order}{'HIQ'[[2, 4, 8].index(width)]}", value)


random_patch = st.tuples(st.integers(0, 256 * 1024), st.binary(min_size=1, max_size=16))


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.sampled_from(SEEDS or [Path("/dev/null")]),
    patches=st.lists(st.one_of(boundary_patch(), random_patch), min_size=1, max_size=6),
    truncate=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_no_bytes_crash_inspect(seed, patches, truncate):
    source = Mutated(seed, patches, truncate)
    start = time.perf_counter()
    with source:
        report = introspect.inspect(source)
    elapsed = time.perf_counter() - start
    assert "introspect.internal_error" not in [f.code for f in report.findings], report.findings
    invalid = {key: why for key, value in report.properties.items() if (why := vocabulary.check(key, value))}
    assert not invalid, invalid  # whatever the bytes say, every value written is a valid one
    budget = Budget()
    assert report.reads <= budget.max_reads and report.bytes_read <= budget.max_bytes
    assert elapsed < 1.0, f"{source.name} took {elapsed:.3f} s"


def test_fuzz_has_seeds():
    assert len(SEEDS) >= 20, "run `make fixtures`: the fuzzer needs the tool-built images as seeds"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("engine", "runs"), [("mutate", 300), ("atheris", 400)])
def test_a_short_round_of_make_fuzz(tmp_path, engine, runs):
    """CI's bounded round of `make fuzz`: each engine over the fixtures' corpus, no failure."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz",
            "--engine",
            engine,
            "--runs",
            str(runs),
            "--corpus",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if engine == "atheris":
        executed = re.search(r"stat::number_of_executed_units:\s+(\d+)", result.stderr)
        assert executed and int(executed.group(1)) >= runs, result.stderr[-2000:]
        assert "stat::new_units_added:" in result.stderr  # coverage-guided: the library is instrumented
        assert "no interesting inputs were found" not in result.stderr
    else:
        assert f"fuzz: {runs} inputs ({4 * runs} inspections), 0 failures" in result.stdout
