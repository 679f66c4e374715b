"""`make bench`: introspect against `qemu-img info` and oslo.utils' format inspector, one run, same files.

For every image under fixtures/build that qemu-img recorded (IMAGE.qemu-img.json beside it):
- introspect in-process: `introspect.inspect(path, guest=False)` (the header pass, what qemu-img
  info and oslo.utils read), repeated: images/s, µs per image (median and mean over images, each
  image's the median of its passes), bytes read (Report counts);
- introspect CLI: one `introspect inspect --json --no-guest` process over the batch, REPEAT times over;
- qemu-img info: one caged-free `qemu-img info -f FMT --output=json` process per image (its best case);
- oslo.utils: `format_inspector.detect_file_format(path)` in-process, bytes read from /proc/self/io.

Then a single call, cold (a new process each time, COLD_RUNS of them, the median): the interpreter
alone, `qemu-img info` of one qcow2, `introspect --help`, `introspect inspect` of that qcow2 (and
of a Debian guest's, guest pass included); the CLI's marginal cost per image (one process over
the batch, less one process over one image) against a `qemu-img info` process per image; and
where a cold `introspect inspect` spends its imports, by package (`-X importtime`, the fastest of
IMPORT_RUNS). Cold runs get compiled bytecode (a first run writes it), as an installed package has.
Prints markdown tables (README "Benchmarks"). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import introspect
from introspect.formats import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "build"
REPEAT = int(os.environ.get("BENCH_REPEAT", "20"))
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "15"))
PASSES = max(2, REPEAT // 4)
IMPORT_RUNS = int(os.environ.get("BENCH_IMPORT_RUNS", "5"))
#: The single image of the cold runs (qemu-img create -f qcow2 ... 1G+3M: nothing inside), and a
#: Debian system's disk, whose guest pass reads its filesystems.
ONE = FIXTURES / "qcow" / "v3-1g3m.qcow2"
GUEST = FIXTURES / "guest" / "debian-uefi.qcow2"
INTROSPECT = str(Path(sys.executable).with_name("introspect"))
#: Cold processes as an installed package runs: with compiled bytecode (PYTHONDONTWRITEBYTECODE
#: would make every run compile the editable checkout's modules again).
COLD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


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


def bench_introspect(paths: list[Path]) -> tuple[float, list[float], float, dict[Path, introspect.Report]]:
    """images/s, each image's median µs, mean bytes read, and the reports, of the header pass."""
    reports = {p: introspect.inspect(p, guest=False) for p in paths}  # warm-up, and the reports to compare
    times: dict[Path, list[float]] = {p: [] for p in paths}
    for _ in range(REPEAT):
        for path in paths:
            start = time.perf_counter()
            introspect.inspect(path, guest=False)
            times[path].append(time.perf_counter() - start)
    elapsed = sum(sum(t) for t in times.values())
    per_image = [statistics.median(t) * 1e6 for t in times.values()]
    mean_bytes = sum(r.bytes_read for r in reports.values()) / len(paths)
    return REPEAT * len(paths) / elapsed, per_image, mean_bytes, reports


def run_cli(*args: str) -> float:
    """Seconds one `introspect ARGS...` process takes, start-up included."""
    start = time.perf_counter()
    subprocess.run([INTROSPECT, *args], stdout=subprocess.DEVNULL, check=False, env=COLD_ENV)
    return time.perf_counter() - start


def bench_cli(paths: list[Path]) -> float:
    """One process over the batch, as an operator runs it (interpreter start-up included)."""
    batch = [str(p) for p in paths] * REPEAT
    return len(batch) / run_cli("inspect", "--json", "--no-guest", *batch)


def marginal(paths: list[Path], *flags: str) -> float:
    """µs the CLI spends per image once started: one process over PASSES passes of the images less
    one over a single pass (which pays the start-up, and builds each format's models once), over
    the images in between; the fastest of three of each, as other processes slow some runs down."""
    batch = [str(p) for p in paths]
    one = min(run_cli("inspect", "--json", *flags, *batch) for _ in range(3))
    many = min(run_cli("inspect", "--json", *flags, *batch * PASSES) for _ in range(3))
    return (many - one) / ((PASSES - 1) * len(batch)) * 1e6


def cold(command: list[str]) -> float:
    """Median ms of COLD_RUNS new processes running `command` (after one that warms the caches)."""
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=COLD_ENV)
    times = []
    for _ in range(COLD_RUNS):
        start = time.perf_counter()
        subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=COLD_ENV
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def import_costs(command: list[str]) -> dict[str, float]:
    """ms of self import time by package (ours by module) of a cold `command`: each module's fastest
    of IMPORT_RUNS runs, so that a run another process slowed down does not count."""
    fastest: dict[str, int] = {}
    for _ in range(IMPORT_RUNS):
        stderr = subprocess.run(
            [sys.executable, "-X", "importtime", *command],
            capture_output=True,
            text=True,
            check=False,
            env=COLD_ENV,
        ).stderr
        for match in re.finditer(r"^import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)$", stderr, flags=re.MULTILINE):
            us, module = int(match[1]), match[2]
            fastest[module] = min(fastest.get(module, us), us)
    costs: Counter[str] = Counter()
    for module, us in fastest.items():
        ours = module.startswith(("introspect.", "workers."))
        costs[module if ours else module.split(".")[0]] += us
    return {name: us / 1000 for name, us in costs.most_common()}


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
    rate, per_image, mean_bytes, reports = bench_introspect(paths)
    cli_rate = bench_cli(paths)
    qemu_rate = bench_qemu(pairs)
    qemu_sizes = {
        p: json.loads(p.with_name(p.name + ".qemu-img.json").read_text())["virtual-size"] for p in paths
    }
    oslo = bench_oslo(pairs, qemu_sizes)
    agree = sum(
        BY_NAME[r.format].load().qemu_name == fmt and r.virtual_size == qemu_sizes[p]
        for (p, fmt), r in zip(pairs, reports.values(), strict=True)
        if r.format
    )
    print(f"{len(paths)} images from fixtures/build (qemu-img recorded each), {REPEAT} in-process passes\n")
    print(f"qemu-img {qemu_version()}, python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    print(
        "The header pass (what qemu-img info and oslo.utils read; the guest pass is `make bench-guest`'s):\n"
    )
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
    for report in biggest:
        name = Path(report.source).relative_to(FIXTURES)
        print(f"| {name} | {report.virtual_size:,} | {report.reads} | {report.bytes_read:,} |")
    single_call(paths, per_image, qemu_rate)


#: What any `introspect inspect` imports before a module of its own: click and pydantic, and one
#: model class as introspect declares its own (built lazily, no validator): the floor of a cold call.
LIBRARIES = (
    "import click\n"
    "from pydantic import BaseModel, ConfigDict\n"
    "class Model(BaseModel):\n"
    "    model_config = ConfigDict(frozen=True, extra='forbid', defer_build=True)\n"
    "    size: int\n"
)


def single_call(paths: list[Path], per_image: list[float], qemu_rate: float) -> None:
    """The start-up table: one call, cold; then the cost per image once started; then imports."""
    one, guest = str(ONE), str(GUEST)
    python = sys.executable
    rows = [
        ("`python -c pass`", cold([python, "-c", "pass"])),
        ("`python -S -c pass` (no site-packages)", cold([python, "-S", "-c", "pass"])),
        (f"`qemu-img info {ONE.name}`", cold(["qemu-img", "info", "--force-share", one])),
        ("the command's libraries alone: click, pydantic and one model", cold([python, "-c", LIBRARIES])),
        ("`introspect --help` (every command listed)", cold([INTROSPECT, "--help"])),
        (f"`introspect inspect {ONE.name}`", cold([INTROSPECT, "inspect", one])),
        (f"`introspect inspect --json {ONE.name}`", cold([INTROSPECT, "inspect", "--json", one])),
    ]
    if GUEST.is_file():
        rows.append(
            (f"`introspect inspect {GUEST.name}` (a Debian guest)", cold([INTROSPECT, "inspect", guest]))
        )
    print(
        f"\nA single call, cold (a new process each time; median of {COLD_RUNS}; `{ONE.relative_to(FIXTURES)}`):\n"
    )
    print("| command | ms |")
    print("|---|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms:,.1f} |")
    qemu_us = 1e6 / qemu_rate
    header_cli = marginal(paths, "--no-guest")
    whole_cli = marginal(paths)
    print(
        f"\nPer image once started ({len(paths)} images; × = a `qemu-img info` process per image, {qemu_us:,.0f} µs):\n"
    )
    print("| | µs per image | × qemu-img info |")
    print("|---|---:|---:|")
    median, mean = statistics.median(per_image), statistics.mean(per_image)
    print(f"| in-process header pass, median image | {median:,.1f} | {qemu_us / median:,.0f}× |")
    print(f"| in-process header pass, mean | {mean:,.1f} | {qemu_us / mean:,.0f}× |")
    print(f"| CLI, marginal, `--no-guest` | {header_cli:,.1f} | {qemu_us / header_cli:,.0f}× |")
    print(f"| CLI, marginal, with the guest pass | {whole_cli:,.1f} | {qemu_us / whole_cli:,.0f}× |")
    costs = import_costs(
        [
            "-c",
            f"import sys; sys.argv = ['introspect', 'inspect', {one!r}]; "
            "from introspect.command import main; main()",
        ]
    )
    ours = sum(ms for name, ms in costs.items() if name.startswith(("introspect", "workers")))
    print(
        f"\nWhere a cold `introspect inspect {ONE.name}` imports (self time, fastest of {IMPORT_RUNS} runs; "
        f"-X importtime adds its own): {sum(costs.values()):,.1f} ms, introspect's modules {ours:,.1f} ms:\n"
    )
    print("| package | ms |")
    print("|---|---:|")
    for name, ms in list(costs.items())[:15]:
        print(f"| {name} | {ms:,.1f} |")


if __name__ == "__main__":
    main()
