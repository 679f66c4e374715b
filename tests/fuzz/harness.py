"""What one fuzz input is run as, and what counts as a failure.

Every input is inspected four ways, each through `introspect.inspect()` on bytes in memory:

- as it is: the mutated image;
- wrapped: its first 64 KiB inside 1 to MAX_WRAPPERS nested gzip/xz/bz2/zstd streams (more than
  the inspector's container depth cap), the kinds and depth chosen by the input's own bytes;
- spliced: its head joined to the tail of another seed (a qcow2 head with a VHD footer, a VMDK
  with an ISO's descriptors...): the polyglots and mixed headers no tool writes;
- claimed large: the same bytes in a source that says it is 1 TiB long (zeros past the data), so
  offsets and sizes from the header land inside "the file".

A failure is any exception out of `inspect()` (a Report must come back whatever the bytes), an
`introspect.internal_error` finding (our bug, caught by the net), a Report that does not validate
back to itself from its JSON (output models are built unvalidated: every value must already be
of its field's type, whatever the bytes made of it), reads past the budget, or one
inspection taking more than MAX_SECONDS of CPU (the inspection's work, not the scheduler's: on a
shared machine a niced fuzzer waits for a CPU, and a unit measured 1.4 s of wall time while the
same bytes take 10 ms; inputs are in memory, so a hang is CPU too, and libFuzzer's own -timeout
guards the wall clock). Memory is bounded by the engine (libFuzzer's
-rss_limit_mb under atheris; the fallback checks the peak RSS).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import time
from pathlib import Path

import zstandard

import introspect
from introspect.report import Report
from introspect.sources import Budget, ByteSource, BytesSource, FileSource
from tests.conftest import FIXTURES

MAX_SECONDS = 1.0
WRAPPED_BYTES = 64 * 1024
MAX_WRAPPERS = 6
#: A seed is an image's first SEED_HEAD bytes and, for a larger file, its last SEED_TAIL: every
#: format's metadata sits there (a fixed VHD's footer, a DMG's koly block, a GPT's backup).
SEED_HEAD = 192 * 1024
SEED_TAIL = 64 * 1024
CLAIMED_SIZE = 1 << 40
SIDECARS = (".json", ".txt", ".built", ".sh", ".log")

WRAPPERS = (
    lambda data: gzip.compress(data, compresslevel=1, mtime=0),
    lambda data: lzma.compress(data, preset=0),
    lambda data: bz2.compress(data, compresslevel=1),
    lambda data: zstandard.ZstdCompressor(level=1).compress(data),
)


class FuzzFailure(AssertionError):
    """An input that broke a promise of `inspect()`."""


class ClaimedLarge(ByteSource):
    """Bytes that say they are CLAIMED_SIZE long: zeros past the data, as a sparse file reads."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.name = "<claimed 1 TiB>"

    @property
    def size(self) -> int:
        return CLAIMED_SIZE

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, CLAIMED_SIZE - offset))
        chunk = self._data[offset : offset + length]
        return chunk + bytes(length - len(chunk))


def seed_files() -> list[Path]:
    """Every tool-made fixture (hostile ones included): the starting corpus."""
    return [
        path
        for path in sorted(FIXTURES.glob("*/*"))
        if path.is_file() and not path.name.endswith(SIDECARS) and path.stat().st_size > 0
    ]


def seed_bytes(path: Path) -> bytes:
    """The head, and for a larger file the tail, of one fixture: small enough to mutate quickly."""
    with FileSource(path) as source:
        if source.size <= SEED_HEAD + SEED_TAIL:
            return source.pread(0, source.size)
        return source.pread(0, SEED_HEAD) + source.pread(source.size - SEED_TAIL, SEED_TAIL)


def wrapped(data: bytes) -> bytes:
    """The input's head in nested compression streams; kinds and depth from its own bytes."""
    selector = data[:8] or b"\0"
    depth = 1 + selector[0] % MAX_WRAPPERS
    out = data[:WRAPPED_BYTES]
    for level in range(depth):
        out = WRAPPERS[selector[level % len(selector)] % len(WRAPPERS)](out)
    return out


def spliced(data: bytes, other: bytes) -> bytes:
    """This input's head, then the other seed's tail, as if one file held both."""
    cut = len(data) // 2
    return data[:cut] + other[len(other) // 2 :]


def check(source: ByteSource) -> None:
    started = time.process_time()
    try:
        report = introspect.inspect(source)
    except Exception as error:
        raise FuzzFailure(f"inspect() raised {type(error).__name__}: {error}") from error
    elapsed = time.process_time() - started
    if "introspect.internal_error" in {finding.code for finding in report.findings}:
        raise FuzzFailure(f"internal error: {report.findings}")
    try:
        again = Report.model_validate_json(report.model_dump_json(warnings="error"))
    except Exception as error:
        raise FuzzFailure(f"the Report does not validate: {type(error).__name__}: {error}") from error
    if again != report:
        raise FuzzFailure(f"the Report validates to another: {report!r}")
    budget = Budget()
    if report.reads > budget.max_reads or report.bytes_read > budget.max_bytes:
        raise FuzzFailure(f"over budget: {report.reads} reads, {report.bytes_read} bytes")
    if elapsed > MAX_SECONDS:
        raise FuzzFailure(f"took {elapsed:.3f} s of CPU")


def run_one(data: bytes, others: list[bytes]) -> None:
    """All four ways of one input (see the module docstring)."""
    check(BytesSource(data, "<input>"))
    check(BytesSource(wrapped(data), "<wrapped>"))
    if others:
        check(BytesSource(spliced(data, others[len(data) % len(others)]), "<spliced>"))
    check(ClaimedLarge(data))
