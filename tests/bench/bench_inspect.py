"""`make bench`: introspect against `qemu-img info` and oslo.utils' format inspector, one run, same files.

For every image under fixtures/build that qemu-img recorded (IMAGE.qemu-img.json beside it):
- introspect in-process: `introspect.inspect(path)`, repeated, images/s and bytes read (Report counts);
- introspect CLI: one `introspect inspect --json` process over the batch, REPEAT times over;
- qemu-img info: one caged-free `qemu-img info -f FMT --output=json` process per image (its best case);
- oslo.utils: `format_inspector.detect_file_format(path)` in-process, bytes read from /proc/self/io.
Prints a markdown table (README "Benchmark"). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import introspect
from introspect.formats import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "build"
REPEAT = int(os.environ.get("BENCH_REPEAT", "20"))


def images() -> list[tuple[Path, str]]:
    found = []
    for sidecar in sorted(FIXTURES.glob("*/*.qemu-img.json")):
        image = sidecar.with_name(sidecar.name.removesuffix(".qemu-img.json"))
        if image.is_file():
            found.append((image, json.loads(sidecar.read_text())["format"]))
    return found


def rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def bench_introspect(paths: list[Path]) -> tuple[float, float, dict[Path, introspect.Report]]:
    reports = {p: introspect.inspect(p) for p in paths}  # warm-up, and the reports to compare
    start = time.perf_counter()
    for _ in range(REPEAT):
        for path in paths:
            introspect.inspect(path)
    elapsed = time.perf_counter() - start
    mean_bytes = sum(r.bytes_read for r in reports.values()) / len(paths)
    return REPEAT * len(paths) / elapsed, mean_bytes, reports


def bench_cli(paths: list[Path]) -> float:
    """One process over the batch, as an operator runs it (interpreter start-up included)."""
    batch = [str(p) for p in paths] * REPEAT
    command = [str(Path(sys.executable).with_name("introspect")), "inspect", "--json", *batch]
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
    return len(batch) / (time.perf_counter() - start)


def bench_qemu(pairs: list[tuple[Path, str]]) -> float:
    start = time.perf_counter()
    for path, fmt in pairs:
        subprocess.run(
            ["qemu-img", "info", "-f", fmt, "--force-share", "--output=json", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    return len(pairs) / (time.perf_counter() - start)


OSLO_NAMES = {"vhd": "vpc", "iso": "raw", "ploop": "parallels", "gpt": "raw", "luks": "luks"}


def oslo_answer(format_inspector: Any, path: Path) -> tuple[str, int] | None:
    try:
        inspector = format_inspector.detect_file_format(str(path))
        return OSLO_NAMES.get(str(inspector), str(inspector)), int(inspector.virtual_size)
    except Exception:  # oslo raises on what it refuses: that is its answer
        return None


def bench_oslo(pairs: list[tuple[Path, str]], qemu_sizes: dict[Path, int]) -> tuple[float, float, int] | None:
    try:
        from oslo_utils.imageutils import format_inspector
    except ImportError:
        return None
    # it logs a warning per VMDK subformat it refuses ("Unsupported VMDK format ..."): its answer
    # is counted below, the lines would only bury the table
    logging.getLogger(format_inspector.__name__).setLevel(logging.ERROR)
    paths = [p for p, _ in pairs]
    before = rchar()
    answers = {path: oslo_answer(format_inspector, path) for path in paths}
    mean_bytes = (rchar() - before) / len(paths)
    agree = sum(answers[p] == (fmt, qemu_sizes[p]) for p, fmt in pairs)
    start = time.perf_counter()
    for _ in range(max(1, REPEAT // 4)):
        for path in paths:
            oslo_answer(format_inspector, path)
    return max(1, REPEAT // 4) * len(paths) / (time.perf_counter() - start), mean_bytes, agree


def qemu_version() -> str:
    output = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True, check=False).stdout
    return output.split()[2] if output else "?"


def main() -> None:
    pairs = images()
    if not pairs:
        sys.exit("bench: no fixtures with qemu-img records under fixtures/build: run `make fixtures`")
    paths = [p for p, _ in pairs]
    rate, mean_bytes, reports = bench_introspect(paths)
    cli_rate = bench_cli(paths)
    qemu_rate = bench_qemu(pairs)
    qemu_sizes = {
        p: json.loads(p.with_name(p.name + ".qemu-img.json").read_text())["virtual-size"] for p in paths
    }
    oslo = bench_oslo(pairs, qemu_sizes)
    agree = sum(
        BY_NAME[r.format].qemu_name == fmt and r.virtual_size == qemu_sizes[p]
        for (p, fmt), r in zip(pairs, reports.values(), strict=True)
        if r.format
    )
    print(f"{len(paths)} images from fixtures/build (qemu-img recorded each), {REPEAT} in-process passes\n")
    print(f"qemu-img {qemu_version()}, python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    print(
        "| tool | images/s | × qemu-img info | mean bytes read per image | same format and size as qemu-img |"
    )
    print("|---|---:|---:|---:|---:|")
    n = len(paths)
    print(
        f"| introspect (in-process) | {rate:,.0f} | {rate / qemu_rate:,.0f}× | {mean_bytes:,.0f} "
        f"| {agree}/{n} |"
    )
    print(
        f"| introspect (CLI, one process for the batch) | {cli_rate:,.0f} "
        f"| {cli_rate / qemu_rate:,.0f}× | same | same |"
    )
    print(f"| qemu-img info (one process per image) | {qemu_rate:,.0f} | 1× | n/a | {n}/{n} |")
    if oslo:
        print(
            f"| oslo.utils format_inspector (in-process) | {oslo[0]:,.0f} | {oslo[0] / qemu_rate:,.0f}× "
            f"| {oslo[1]:,.0f} | {oslo[2]}/{n} |"
        )
    else:
        print("| oslo.utils format_inspector | not installed | | |")
    print("\nBytes read do not depend on the virtual size:\n")
    print("| image | virtual size | reads | bytes read |")
    print("|---|---:|---:|---:|")
    biggest = sorted(reports.values(), key=lambda r: -(r.virtual_size or 0))[:4]
    smallest = sorted(reports.values(), key=lambda r: r.virtual_size or 0)[:0]
    for report in [*biggest, *smallest]:
        name = Path(report.source).relative_to(FIXTURES)
        print(f"| {name} | {report.virtual_size:,} | {report.reads} | {report.bytes_read:,} |")


if __name__ == "__main__":
    main()
