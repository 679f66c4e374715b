"""`make bench-guest`: introspect's guest inspection against libguestfs', one run, same images.

For every guest fixture image (fixtures/build/guest: each source disk and ISO, and every container
qemu-img made of them; IMAGE.qemu-img.json beside each names its format):
- introspect: `introspect.inspect(path)` in process, the median wall time of BENCH_REPEAT runs, and
  its guest pass's reads and bytes (`report.guest`);
- libguestfs: fixtures/guest/libguestfs.py (guestfish --listen, `run`, `inspect-os`, the
  `inspect-get-*` answers for each root: one appliance launch, 20-35 s under TCG), timed, with
  --format as qemu-img named it. By default on one image per source (its qcow2; an ISO itself);
  BENCH_ALL=1 runs it on every image. Elsewhere the answer libguestfs gave for the source disk
  (fixtures/build/guest-libguestfs, the same guest bytes) stands in, marked *.
Prints a markdown table and the summary: median introspect ms and KiB, the speed-up (median
libguestfs wall time over median introspect wall time, on the images both ran on) and how often
the two agree.

Two answers agree when they name the same installed systems: for each root the same os type,
distribution (libguestfs' word mapped to Glance's by the vocabulary's aliases), architecture and version (introspect's "12"
against libguestfs' 12.x: the major, and the minor when introspect states one), and the same
libosinfo id where both name one. Installer media are not compared: libguestfs (since 1.38) no
longer inspects install ISOs. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import introspect
from introspect.vocabulary import PROPERTIES

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "fixtures" / "build" / "guest"
RECORDED = ROOT / "fixtures" / "build" / "guest-libguestfs"
LIBGUESTFS = ROOT / "fixtures" / "guest" / "libguestfs.py"
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
ALL = os.environ.get("BENCH_ALL", "") not in ("", "0")
#: libguestfs' distro words where Glance's os_distro says it otherwise (archlinux: arch...)
GLANCE_DISTRO = PROPERTIES["os_distro"]["aliases"]


@dataclass(frozen=True, order=True)
class System:
    """One installed system, in the words both tools can be compared in."""

    os_type: str
    distro: str | None
    major: int | None
    minor: int | None  # None: not stated (introspect's "12"), compared only when both state it
    arch: str | None
    osinfo: str | None

    def text(self) -> str:
        version = (
            "" if self.major is None else f"{self.major}" + ("" if self.minor is None else f".{self.minor}")
        )
        return " ".join(
            str(part) for part in (self.distro or self.os_type, version, self.arch, self.osinfo) if part
        )


def same(mine: list[System], theirs: list[System]) -> bool:
    if len(mine) != len(theirs):
        return False
    for a, b in zip(sorted(mine), sorted(theirs), strict=True):
        if (a.os_type, a.distro, a.major, a.arch) != (b.os_type, b.distro, b.major, b.arch):
            return False
        if a.minor is not None and b.minor is not None and a.minor != b.minor:
            return False
        if a.osinfo and b.osinfo and a.osinfo != b.osinfo:
            return False
    return True


def version_numbers(version: str | None) -> tuple[int | None, int | None]:
    parts = (version or "").split(".")
    numbers = [int(p) if p.isdigit() else None for p in parts[:2]]
    return (numbers[0] if numbers else None, numbers[1] if len(numbers) > 1 else None)


def introspect_systems(report: introspect.Report) -> list[System] | None:
    """The installed systems introspect found, or None when its Report has no guest pass."""
    guest: Any = getattr(report, "guest", None)
    if guest is None:
        return None
    systems = []
    for found in guest.systems:
        if getattr(found, "installer", False):
            continue
        major, minor = version_numbers(found.version)
        systems.append(System(found.os_type, found.distro, major, minor, found.architecture, found.osinfo))
    return systems


def libguestfs_systems(answer: dict[str, Any]) -> list[System] | None:
    """The systems libguestfs found, or None when it refused the image (its error says why)."""
    if answer["roots"] is None:
        return None
    systems = []
    for root in answer["roots"]:
        distro = root.get("distro")
        distro = None if distro in (None, "unknown") else GLANCE_DISTRO.get(distro, distro)
        osinfo = root.get("osinfo")
        systems.append(
            System(
                root.get("type", "unknown"),
                distro,
                root.get("major_version"),
                root.get("minor_version"),
                None if root.get("arch") in (None, "unknown") else root["arch"],
                None if osinfo in (None, "unknown") else osinfo,
            )
        )
    return systems


def images() -> list[tuple[Path, str]]:
    found = []
    for sidecar in sorted(GUEST.glob("*.qemu-img.json")):
        image = sidecar.with_name(sidecar.name.removesuffix(".qemu-img.json"))
        if image.is_file():
            found.append((image, json.loads(sidecar.read_text())["format"]))
    return found


def source_of(image: Path) -> Path:
    """The raw disk or ISO a container was converted from (debian-uefi.zstd.qcow2: debian-uefi.raw)."""
    if image.suffix in (".raw", ".iso"):
        return image
    return image.with_name(image.name.split(".")[0] + ".raw")


def representatives(pairs: list[tuple[Path, str]]) -> set[Path]:
    """One image per source: its qcow2 when there is one, else the source itself."""
    chosen = {}
    for image, _ in pairs:
        source = source_of(image)
        qcow2 = source.with_name(source.name.removesuffix(".raw") + ".qcow2")
        chosen[source] = qcow2 if qcow2.is_file() else source
    return set(chosen.values())


def time_introspect(image: Path) -> tuple[float, introspect.Report]:
    report = introspect.inspect(image)
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        introspect.inspect(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times), report


def run_libguestfs(image: Path, fmt: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    done = subprocess.run(
        ["python3", str(LIBGUESTFS), "--format", fmt, str(image)], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"libguestfs failed on {image.name}: {done.stderr.strip()[-400:]}")
    return elapsed, json.loads(done.stdout)


def recorded(source: Path) -> dict[str, Any] | None:
    path = RECORDED / f"{source.name}.libguestfs.json"
    return json.loads(path.read_text()) if path.is_file() else None


def answer_text(systems: list[System] | None, refused: str | None = None) -> str:
    if refused:
        return f"refused ({refused[-60:]})"
    if systems is None:
        return "n/a"
    return "; ".join(s.text() for s in systems) or "no OS"


def main() -> None:
    pairs = images()
    if not pairs:
        sys.exit(
            "bench-guest: no images under fixtures/build/guest: run `fixtures/build.sh guest guest-libguestfs`"
        )
    have_guestfish = shutil.which("guestfish") is not None
    timed = {image for image, _ in pairs} if ALL else representatives(pairs)
    probe = introspect.inspect(pairs[0][0])
    has_guest = introspect_systems(probe) is not None
    if not has_guest:
        print(
            "bench-guest: introspect's Report has no `guest` field in this checkout (the guest pass has "
            "not landed): the table shows the header pass's time, reads and bytes, nothing is compared, "
            "and libguestfs is not run (its recorded answers are shown).\n"
        )
    elif not have_guestfish:
        print("bench-guest: guestfish is not installed (`make tools`): libguestfs' recorded answers only.\n")
    print(
        f"{len(pairs)} images from fixtures/build/guest; introspect: median of {REPEAT} in-process runs; "
        f"libguestfs: {'every image' if ALL else 'one image per source (its qcow2)'}, one appliance launch each"
        f" ({os.environ.get('LIBGUESTFS_BACKEND_SETTINGS', 'force_tcg')}); * = libguestfs' answer for the source disk\n"
    )
    print("| image | format | introspect ms | reads | KiB | libguestfs s | introspect | libguestfs | agree |")
    print("|---|---|---:|---:|---:|---:|---|---|---|")
    ms, kib, speedups, agreements = [], [], [], []
    lg_seconds, in_seconds = [], []
    for image, fmt in pairs:
        seconds, report = time_introspect(image)
        guest: Any = getattr(report, "guest", None)
        reads = guest.reads if guest is not None else report.reads
        read_bytes = guest.bytes_read if guest is not None else report.bytes_read
        mine = introspect_systems(report)
        lg_time = None
        if has_guest and have_guestfish and image in timed:
            lg_time, answer = run_libguestfs(image, fmt)
            mark = ""
        else:
            answer = recorded(source_of(image))
            mark = "*"
        theirs = libguestfs_systems(answer) if answer is not None else None
        agree = None if mine is None or theirs is None else same(mine, theirs)
        ms.append(seconds * 1000)
        kib.append(read_bytes / 1024)
        if lg_time is not None:
            lg_seconds.append(lg_time)
            in_seconds.append(seconds)
            speedups.append(lg_time / seconds)
        if agree is not None:
            agreements.append(agree)
        print(
            f"| {image.name} | {fmt} | {seconds * 1000:,.1f} | {reads} | {read_bytes / 1024:,.0f} "
            f"| {'' if lg_time is None else f'{lg_time:,.1f}'} | {answer_text(mine)} "
            f"| {answer_text(theirs, (answer or {}).get('error'))}{mark} | {'' if agree is None else ('yes' if agree else 'NO')} |"
        )
    print()
    print(
        f"- introspect: median {statistics.median(ms):,.1f} ms and {statistics.median(kib):,.0f} KiB per image"
    )
    if lg_seconds:
        factor = statistics.median(lg_seconds) / statistics.median(in_seconds)
        print(
            f"- libguestfs: median {statistics.median(lg_seconds):,.1f} s per image ({len(lg_seconds)} timed): "
            f"introspect is {factor:,.0f}× faster (median of the per-image ratios: "
            f"{statistics.median(speedups):,.0f}×)"
        )
    if agreements:
        print(
            f"- agreement: {sum(agreements)}/{len(agreements)} images "
            f"({100 * sum(agreements) / len(agreements):.0f}%)"
        )


if __name__ == "__main__":
    main()
