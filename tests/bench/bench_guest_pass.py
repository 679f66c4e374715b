"""`python -m tests.bench.bench_guest_pass`: how long the guest pass takes, in-process, per image.

For every image of fixtures/build/guest (real Debian roots, a Windows volume, ISOs, in every
container): `introspect.inspect(path)` REPEAT times, timing only the guest pass (the inspector's
`_inspect_guest`, which runs after the header pass), and the guest reads and bytes the Report
counts. Prints a markdown table: per image (median and p90 of the guest pass), per format, and
overall, with CPU time beside wall time (the machine may be shared). The goal (issue 10): a median
of at most 20 ms per image. Arguments: parts of image names, to bench only those; `--profile`
prints cProfile's top functions over one pass of each image instead. Not a test: numbers depend on
the machine.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import introspect
from introspect import inspector

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "fixtures" / "build" / "guest"
REPEAT = int(os.environ.get("BENCH_REPEAT", "15"))
#: The goal of issue 10, in seconds: the median guest pass of an image.
GOAL = 0.020


def images() -> list[Path]:
    return sorted(
        path
        for path in GUEST.iterdir()
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith((".txt", ".json"))
    )


def timed_guest_pass(times: list[tuple[float, float]]) -> Callable[..., Any]:
    """The inspector's guest pass, wrapped to append its wall time and CPU time to `times`."""
    original = inspector._inspect_guest

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            times.append((time.perf_counter() - start, time.process_time() - cpu))

    return wrapper


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def bench(paths: list[Path]) -> None:
    times: list[tuple[float, float]] = []
    original = inspector._inspect_guest
    inspector._inspect_guest = timed_guest_pass(times)  # type: ignore[assignment]
    try:
        per_image: dict[Path, list[tuple[float, float]]] = {}
        counts: dict[Path, tuple[int, int]] = {}
        for path in paths:
            report = introspect.inspect(path)  # warm-up (page cache, imports)
            counts[path] = (report.guest.reads, report.guest.bytes_read) if report.guest else (0, 0)
            times.clear()
            for _ in range(REPEAT):
                introspect.inspect(path)
            per_image[path] = list(times)
    finally:
        inspector._inspect_guest = original  # type: ignore[assignment]
    print(
        f"{len(paths)} images of fixtures/build/guest, {REPEAT} passes each, python {sys.version.split()[0]}; "
        "wall time, and CPU time (the process's own, which other load on the machine inflates less)\n"
    )
    print("| image | median ms | p90 ms | CPU median ms | guest reads | guest bytes read |")
    print("|---|---:|---:|---:|---:|---:|")
    by_format: dict[str, list[tuple[float, float]]] = defaultdict(list)
    medians = []
    for path, samples in per_image.items():
        reads, read_bytes = counts[path]
        wall = [w for w, _ in samples]
        medians.append(statistics.median(wall))
        by_format[path.suffix.lstrip(".")].extend(samples)
        print(
            f"| {path.name} | {ms(medians[-1])} | {ms(p90(wall))} "
            f"| {ms(statistics.median(c for _, c in samples))} | {reads} | {read_bytes:,} |"
        )
    print("\n| format | images | median ms | p90 ms | CPU median ms |")
    print("|---|---:|---:|---:|---:|")
    for fmt, samples in sorted(by_format.items()):
        n = sum(1 for p in per_image if p.suffix.lstrip(".") == fmt)
        wall = [w for w, _ in samples]
        print(
            f"| {fmt} | {n} | {ms(statistics.median(wall))} | {ms(p90(wall))} "
            f"| {ms(statistics.median(c for _, c in samples))} |"
        )
    every = [w for samples in per_image.values() for w, _ in samples]
    cpu = [c for samples in per_image.values() for _, c in samples]
    print(
        f"\nall: median of the per-image medians {ms(statistics.median(medians))} ms, "
        f"median {ms(statistics.median(every))} ms, p90 {ms(p90(every))} ms, "
        f"slowest median {ms(max(medians))} ms (goal: {ms(GOAL)} ms), CPU median {ms(statistics.median(cpu))} ms; "
        f"reads {sum(r for r, _ in counts.values())}, bytes {sum(b for _, b in counts.values()):,} in all"
    )


def profile(paths: list[Path]) -> None:
    for path in paths:
        introspect.inspect(path)  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    for path in paths:
        introspect.inspect(path)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


def main() -> None:
    paths = images()
    if not paths:
        sys.exit("bench: no fixtures under fixtures/build/guest: run `fixtures/build.sh guest`")
    chosen = [p for p in paths if any(arg in p.name for arg in sys.argv[1:] if not arg.startswith("-"))]
    (profile if "--profile" in sys.argv else bench)(chosen or paths)


if __name__ == "__main__":
    main()
