"""`make bench`, OVAs: introspect reading each package in place, against extracting its boot disk
(`tar -xf`) and running `qemu-img info` on it, one run, the same packages.

For every OVA under fixtures/build/ova that introspect calls ok (fixtures/make/ova.sh: packages in
the shapes ovftool, VirtualBox and OVF 0.9 write, up to a 1 TiB disk):
- introspect in-process: `introspect.inspect(path)`, repeated: OVAs/s, and bytes and reads per OVA
  (the Report's counts: the tar walk, the descriptor and each disk's head and tail);
- tar + qemu-img info: `tar -xf` of the boot disk into a temporary directory, then
  `qemu-img info -f FMT --output=json` on it: OVAs/s, and bytes read (the disk's size: tar reads
  through it to extract it), which is what a checker without a tar walk must do;
- Glance's own `ovf_process` (OVAImageExtractor, in-process in the cached Glance 33.0.0 venv, by
  tests/glance/peer/ovf_process.py): the descriptor parsed, the disk copied out as Glance's import
  task copies it before it replaces the package; OVAs/s over the packages it takes, bytes copied,
  and the packages it refuses (several disks).
Prints markdown tables. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import introspect
from introspect.formats import BY_NAME
from tests.glance.peer import build_venv

ROOT = Path(__file__).resolve().parents[2]
OVAS = ROOT / "fixtures" / "build" / "ova"
REPEAT = int(os.environ.get("BENCH_REPEAT", "20"))


def packages() -> list[tuple[Path, introspect.Report]]:
    found = []
    for path in sorted(OVAS.glob("*.ova")):
        report = introspect.inspect(path)
        if (
            report.verdict == introspect.Verdict.OK
            and report.container is not None
            and report.container.boot_disk
        ):
            found.append((path, report))
    return found


def bench_introspect(paths: list[Path]) -> float:
    start = time.perf_counter()
    for _ in range(REPEAT):
        for path in paths:
            introspect.inspect(path)
    return REPEAT * len(paths) / (time.perf_counter() - start)


def bench_extract_and_qemu(pairs: list[tuple[Path, introspect.Report]]) -> tuple[float, float]:
    """`tar -xf OVA DISK` then `qemu-img info` on the extracted disk, per OVA; and mean bytes extracted."""
    extracted = 0
    start = time.perf_counter()
    for path, report in pairs:
        disk = report.container.boot_disk.file_href
        qemu = BY_NAME[report.format].load().qemu_name or report.format
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(["tar", "-xf", str(path), "-C", scratch, disk], check=True)
            subprocess.run(
                ["qemu-img", "info", "-f", qemu, "--output=json", str(Path(scratch) / disk)],
                stdout=subprocess.DEVNULL,
                check=True,
            )
            extracted += (Path(scratch) / disk).stat().st_size
    return len(pairs) / (time.perf_counter() - start), extracted / len(pairs)


def bench_glance(paths: list[Path]) -> list[dict[str, Any]]:
    """Glance's OVAImageExtractor on each package, in Glance's venv; its own timing of each."""
    result = subprocess.run(
        [build_venv() / "bin" / "python", "-m", "tests.glance.peer.ovf_process", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def main() -> None:
    pairs = [
        (p, r) for p, r in packages() if p.stat().st_size < 1 << 30
    ]  # the 1 TiB raw ones: extraction is hours
    if not pairs:
        sys.exit("bench: no OVAs under fixtures/build/ova: run `make fixtures`")
    paths = [p for p, _ in pairs]
    rate = bench_introspect(paths)
    qemu_rate, extracted = bench_extract_and_qemu(pairs)
    n = len(paths)
    mean_bytes = sum(r.bytes_read for _, r in pairs) / n
    mean_reads = sum(r.reads for _, r in pairs) / n
    print(f"\n{n} OVAs from fixtures/build/ova, {REPEAT} in-process passes\n")
    print("| tool | OVAs/s | × tar + qemu-img info | mean bytes read per OVA | mean reads per OVA |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| introspect (in-process, in place) | {rate:,.0f} | {rate / qemu_rate:,.0f}× | {mean_bytes:,.0f} | {mean_reads:.1f} |"
    )
    print(f"| tar -xf + qemu-img info (per OVA) | {qemu_rate:,.1f} | 1× | {extracted:,.0f} extracted | n/a |")
    glance = bench_glance(paths)
    taken = [g for g in glance if g["outcome"] == "extracted"]
    if taken:
        glance_rate = len(taken) / sum(g["seconds"] for g in taken)
        copied = sum(g["bytes"] for g in taken) / len(taken)
        print(
            f"| Glance ovf_process (in-process; {len(taken)} of {n} taken) | {glance_rate:,.0f} "
            f"| {glance_rate / qemu_rate:,.0f}× | {copied:,.0f} copied | n/a |"
        )
    refused = ", ".join(
        f"{g['ova']} ({g['error'].split(':')[0]})" for g in glance if g["outcome"] != "extracted"
    )
    print(f"\nGlance ovf_process refused: {refused or 'none'}")
    print("\nPer OVA:\n")
    print("| OVA | size | disk | virtual size | reads | bytes read |")
    print("|---|---:|---|---:|---:|---:|")
    for path, report in pairs:
        print(
            f"| {path.name} | {path.stat().st_size:,} | {report.format} | {report.virtual_size:,} "
            f"| {report.reads} | {report.bytes_read:,} |"
        )


if __name__ == "__main__":
    main()
