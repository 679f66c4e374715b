"""Bytes read per image from a real Glance, and images/s of a re-run over a few hundred images.

    .venv/bin/python -m tests.bench.bench_glance [--images 300] [--workers 4]

Starts its own Glance 33.0.0 (the test peer, tests/glance/peer), uploads the images (VMDK,
qcow2, VHD made by qemu-img, each with 512 KiB of random data so none is trivially small), then
times three passes with the pipeline's `introspect_image` over the Glance catalog (the code every
trigger ends in), run inline:

- first:   nothing cached, every image inspected and written back;
- re-run:  forced (`introspect glance inspect --force`, `rerun`): inspected again, ranges from
           the cache, no property to change; the claim still costs two PATCHes (taking it, and
           dropping it with the write-back), most of the time of a pass: 30 images, 2 CPUs, on
           the one-process test peer, 4.6 images/s, where the inline path without a claim (before
           every trigger ran the pipeline's inspection) made 53;
- sync:    not forced: the marker says each image's data was inspected, so only its record is read.

Not collected by pytest (not a test_ file); `make bench-glance` could run it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.glance.peer import ADMIN, deployment
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import GlanceClient, HeaderIdentity
from workers.glance.source import RangeCache
from workers.pipeline import Inspection, introspect_image

MIB = 1024 * 1024
FORMATS = [
    ("vmdk", "vmdk", ["-o", "subformat=streamOptimized,adapter_type=lsilogic"]),
    ("qcow2", "qcow2", []),
    ("vhd", "vpc", ["-o", "subformat=dynamic"]),
]


def make_images(directory: Path) -> list[tuple[Path, str]]:
    raw = directory / "data.raw"
    with raw.open("wb") as out:
        out.write(random.Random(1).randbytes(MIB // 2))
        out.truncate(1024 * MIB + 3 * MIB)
    made = []
    for disk_format, qemu_format, options in FORMATS:
        target = directory / f"disk.{disk_format}"
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", qemu_format, *options, str(raw), str(target)],
            check=True,
        )
        made.append((target, disk_format))
    return made


def upload(url: str, count: int, files: list[tuple[Path, str]]) -> list[str]:
    ids = []
    contents = [(path.read_bytes(), disk_format) for path, disk_format in files]
    with httpx.Client(headers=ADMIN, timeout=60) as http:
        for n in range(count):
            data, disk_format = contents[n % len(contents)]
            body = {"name": f"bench-{n}", "disk_format": disk_format, "container_format": "bare"}
            image_id = http.post(f"{url}/v2/images", json=body).json()["id"]
            response = http.put(
                f"{url}/v2/images/{image_id}/file",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            response.raise_for_status()
            ids.append(image_id)
    return ids


def timed(ids: list[str], workers: int, one: Callable[[str], Inspection]) -> tuple[float, list[Inspection]]:
    started = time.perf_counter()
    if workers == 1:
        outcomes = [one(image_id) for image_id in ids]
    else:
        with ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(one, ids))
    return time.perf_counter() - started, outcomes


def describe(name: str, seconds: float, outcomes: list[Inspection]) -> str:
    data = [outcome.data_bytes or 0 for outcome in outcomes]
    requests = [outcome.data_requests or 0 for outcome in outcomes]
    states = sorted({str(outcome.state) for outcome in outcomes})
    return (
        f"{name:<24} {len(outcomes) / seconds:8.1f} images/s  {seconds:6.2f} s  "
        f"data bytes/image mean {statistics.mean(data):9.0f} max {max(data):7d}  "
        f"range requests/image {statistics.mean(requests):4.2f}  {','.join(states)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-glance-") as scratch:
        root = Path(scratch)
        with deployment(root / "glance") as peer:
            api = peer.apis[0]
            files = make_images(root)
            started = time.perf_counter()
            ids = upload(api.url, args.images, files)
            print(f"uploaded {len(ids)} images ({', '.join(f'{p.name} {p.stat().st_size}' for p, _ in files)} "
                  f"bytes) in {time.perf_counter() - started:.1f} s")  # fmt: skip
            cache = RangeCache(root / "cache", 512 * MIB)
            with GlanceClient([api.url], HeaderIdentity(["admin"], "0" * 31 + "a", "bench")) as client:
                catalog = GlanceCatalog(client, cache=cache)
                for name, workers, force in [
                    ("first (cold)", 1, True),
                    ("re-run, forced", 1, True),
                    (f"re-run, forced, {args.workers} threads", args.workers, True),
                    ("sync (marker skip)", 1, False),
                ]:
                    seconds, outcomes = timed(
                        ids,
                        workers,
                        lambda image_id, f=force: introspect_image(catalog, image_id, task_id=None, force=f),
                    )
                    print(describe(name, seconds, outcomes))
                print(f"range cache: {cache.size()} bytes for {len(ids)} images")


if __name__ == "__main__":
    main()
