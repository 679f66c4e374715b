"""Pipeline benchmark (a script, not a test): `python -m tests.bench.bench_pipeline [--images N]`.

In one run, for each catalog (SQLite, PostgreSQL), through the same Redis and the same worker
settings (`celery -A workers.app worker`, acks late, prefetch 1):

  (a) the ceiling: a no-op task with the same arguments as introspect_image;
  (b) introspect_image on N small qemu-img images (a few made once, then copied).

The ratio is the median of each round's own ratio: the two batches of a round, run back to
back, see the same machine, where a shared machine's load drifts between rounds.

Each batch is published to a queue nobody consumes yet; the clock starts when the worker is told
to consume it (`add_consumer`) and stops when the queue and Redis' unacked set are both empty
(tasks are acknowledged late, so empty means done). Prints a markdown table, and with `--cpu`
where the CPU time went: milliseconds per task in the worker's main process, in its pool
children, in PostgreSQL's server processes, in Redis, in this script, and the machine's idle time
(from /proc, so Linux only; the machine may be shared: the "other" column is everything else).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

NOOP_TASK = "tests.bench.bench_pipeline.noop"
#: The small set every image is a copy of (names in tests.workers.services.IMAGE_RECIPES).
RECIPES = ["small.qcow2", "stream.vmdk", "disk.vhd", "disk.vdi", "backed.qcow2"]
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WARMUP = 100
#: How often the end of a batch is polled for: often enough to time a batch of a few seconds to
#: within a percent, seldom enough that this script takes no CPU worth mentioning from the worker.
POLL_INTERVAL = 0.01
#: Set in the worker's environment by --profile: where each child writes its cProfile stats.
PROFILE_ENV = "BENCH_PIPELINE_PROFILE"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: The CPU breakdown's columns, in order.
CPU_GROUPS = ("worker main", "worker children", "postgres", "redis", "bench", "other", "iowait", "idle")


def _proc_cpu(pid: int | str) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _proc_name(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def cpu_snapshot(worker_pid: int) -> dict[str, float]:
    """CPU seconds so far, by group (see CPU_GROUPS); "other", "iowait" and "idle" from /proc/stat."""
    groups = dict.fromkeys(CPU_GROUPS, 0.0)
    groups["worker main"] = _proc_cpu(worker_pid)
    groups["worker children"] = sum(_proc_cpu(child) for child in _children(worker_pid))
    for pid in (entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        name = _proc_name(pid)
        if name == "postgres":
            groups["postgres"] += _proc_cpu(pid)
        elif name == "redis-server":
            groups["redis"] += _proc_cpu(pid)
    groups["bench"] = _proc_cpu(os.getpid())
    # the machine: every CPU's busy and idle time (idle + iowait), in clock ticks
    ticks = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    groups["idle"], groups["iowait"] = idle / CLOCK_TICKS, iowait / CLOCK_TICKS
    groups["other"] = (sum(ticks[:8]) - idle - iowait) / CLOCK_TICKS - sum(
        groups[name] for name in ("worker main", "worker children", "postgres", "redis", "bench")
    )
    return groups


def make_images(directory: Path, count: int) -> list[Path]:
    """`count` image files: the small set made once by qemu-img, then copied."""
    from tests.workers.services import make_images as make_originals

    originals = directory / "originals"
    originals.mkdir()
    made = make_originals(originals, RECIPES)
    copies = directory / "copies"
    copies.mkdir()
    paths = []
    for n in range(count):
        name = RECIPES[n % len(RECIPES)]
        path = copies / f"{n:06d}-{name}"
        shutil.copyfile(made[name], path)
        paths.append(path)
    return paths


def register(catalog_url: str, paths: list[Path]) -> list[uuid.UUID]:
    """Images with data, waiting for their inspection (what `introspect import` leaves behind)."""
    from sqlalchemy import insert

    from workers.catalog import Status, open_catalog
    from workers.catalog.models import images, utcnow

    catalog = open_catalog(catalog_url)
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4(),
            "name": path.name,
            "status": Status.SAVING,
            "location": path.as_uri(),
            "size": path.stat().st_size,
            "created_at": now,
            "updated_at": now,
            "deliveries": 0,
        }
        for path in paths
    ]
    with catalog.engine.begin() as connection:
        connection.execute(insert(images), rows)
    return [row["id"] for row in rows]


class Bench:
    """One worker on one catalog; runs batches of tasks through it and times them."""

    def __init__(self, env: dict[str, str], directory: Path, concurrency: int | None) -> None:
        import redis

        self.env = env
        self.cpu: dict[str, dict[str, float]] = {}
        self.prefix = env["INTROSPECT_BROKER_KEY_PREFIX"]
        self.redis = redis.Redis.from_url(env["INTROSPECT_BROKER_URL"])
        self.hostname = f"bench-{secrets.token_hex(3)}@localhost"
        log = (directory / f"worker-{self.hostname}.log").open("wb")
        self.worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "worker",
                "--loglevel",
                "WARNING",
                "--include",
                "tests.bench.bench_pipeline",
                "--queues",
                f"idle-{secrets.token_hex(3)}",
                "--hostname",
                self.hostname,
                "--without-mingle",
                "--without-gossip",
                *(["--concurrency", str(concurrency)] if concurrency else []),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        from workers.app import app

        self.app = app
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[self.hostname], timeout=0.5):
            if time.monotonic() > deadline or self.worker.poll() is not None:
                raise RuntimeError(f"the benchmark worker did not start; see {log.name}")
        self.processes = len(_children(self.worker.pid))  # the pool, started before it answers

    def run(self, task: str, ids: list[Any]) -> float:
        """Tasks per second for one batch; adds the CPU it took, by group, to `self.cpu[task]`."""
        queue = f"bench-{secrets.token_hex(4)}"
        with self.app.producer_or_acquire() as producer:
            for image_id in ids:
                self.app.send_task(
                    task, args=[str(image_id)], kwargs={"job_id": None}, queue=queue, producer=producer
                )
        before = cpu_snapshot(self.worker.pid)
        started = time.perf_counter()
        self.app.control.add_consumer(queue, destination=[self.hostname], reply=True, timeout=5)
        while any(self._pending(queue)):
            time.sleep(POLL_INTERVAL)
        elapsed = time.perf_counter() - started
        after = cpu_snapshot(self.worker.pid)
        spent = self.cpu.setdefault(task, dict.fromkeys(CPU_GROUPS, 0.0) | {"tasks": 0.0})
        for group in CPU_GROUPS:
            spent[group] += after[group] - before[group]
        spent["tasks"] += len(ids)
        self.app.control.cancel_consumer(queue, destination=[self.hostname], reply=True, timeout=5)
        return len(ids) / elapsed

    def _pending(self, queue: str) -> list[int]:
        """Messages still queued and still unacknowledged, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.prefix + queue)
        pipe.hlen(self.prefix + "unacked")
        return [int(count) for count in pipe.execute()]

    def stop(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()


def claim_redis(host: str, port: int) -> tuple[int, Any]:
    from tests.workers.services import claim_redis_db

    return claim_redis_db(host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images per batch (default 1000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="worker processes (default: the worker's own, workers/celeryconfig.py)",
    )
    parser.add_argument(
        "--worker-nice", type=int, help="INTROSPECT_WORKER_NICE of the worker (default: the settings')"
    )
    parser.add_argument("--catalogs", default="sqlite,postgresql")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds of a no-op batch then an introspect_image batch; medians are reported, and the ratio "
        "is the median of each round's own ratio (a round's two batches see the same machine)",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="also print where the CPU went (ms per task, by process group)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="cProfile (CPU time) every worker child into DIR/<catalog>-<pid>.prof (read with pstats)",
    )
    args = parser.parse_args()

    from sqlalchemy import create_engine, text

    from tests.workers.services import CLAIM_KEY, process_env

    directory = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    db, client = claim_redis("127.0.0.1", 6379)
    prefix = f"bench-{secrets.token_hex(4)}:"
    env = process_env() | {
        "INTROSPECT_BROKER_URL": f"redis://127.0.0.1:6379/{db}",
        "INTROSPECT_BROKER_KEY_PREFIX": prefix,
        "INTROSPECT_DATA_DIR": str(directory / "data"),
    }
    os.environ.update(env)  # before workers.app is imported: the publisher uses the same settings
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    schema = f"bench_{secrets.token_hex(4)}"
    rows = []
    breakdowns: list[tuple[str, str, dict[str, float]]] = []
    processes: set[int] = set()
    try:
        paths = make_images(directory, args.images + WARMUP)
        for name in args.catalogs.split(","):
            if name == "postgresql":
                with admin.connect() as connection:
                    connection.execute(text(f'CREATE SCHEMA "{schema}"'))
                url = f"{PG_URL}?options=-csearch_path%3D{schema}"
            else:
                url = f"sqlite:///{directory / 'catalog.sqlite'}"
            # every round inspects images never inspected before (rows share the copied files)
            ids = register(url, paths[:WARMUP] + paths[WARMUP:] * args.rounds)
            worker_env = env | {"INTROSPECT_DATABASE_URL": url}
            if args.worker_nice is not None:
                worker_env["INTROSPECT_WORKER_NICE"] = str(args.worker_nice)
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                worker_env[PROFILE_ENV] = str(args.profile.resolve() / name)
            bench = Bench(worker_env, directory, args.concurrency)
            ceilings, pipelines = [], []
            try:
                bench.run(NOOP_TASK, ids[:WARMUP])
                bench.run("workers.tasks.introspect_image", ids[:WARMUP])
                bench.cpu.clear()  # the warm-up batches do not count
                for round_ in range(args.rounds):
                    batch = ids[WARMUP + round_ * args.images : WARMUP + (round_ + 1) * args.images]
                    ceilings.append(bench.run(NOOP_TASK, batch))
                    pipelines.append(bench.run("workers.tasks.introspect_image", batch))
            finally:
                bench.stop()
            ceiling, pipeline = statistics.median(ceilings), statistics.median(pipelines)
            ratios = [p / c for p, c in zip(pipelines, ceilings, strict=True)]
            from workers.catalog import open_catalog

            counts = open_catalog(url).counts()
            done = sum(counts.get(status, 0) for status in ("active", "rejected", "error"))
            if done != len(ids):
                raise RuntimeError(f"{name}: only {done} of {len(ids)} images were inspected: {counts}")
            rows.append((name, ceiling, pipeline, ratios))
            processes.add(bench.processes)
            breakdowns += [(name, "no-op", bench.cpu[NOOP_TASK])]
            breakdowns += [(name, "introspect_image", bench.cpu["workers.tasks.introspect_image"])]
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.delete(CLAIM_KEY)
        shutil.rmtree(directory, ignore_errors=True)

    print(
        f"\n{args.images} images per batch, medians of {args.rounds} rounds (a no-op batch, then an "
        "introspect_image batch), "
        f"{'/'.join(map(str, sorted(processes)))} worker processes on {os.cpu_count()} CPUs, Redis broker\n"
    )
    print(
        "| catalog | no-op task (tasks/s) | introspect_image (images/s) | pipeline / no-op, median (range) |"
    )
    print("|---|---:|---:|---:|")
    for name, ceiling, pipeline, ratios in rows:
        print(
            f"| {name} | {ceiling:.0f} | {pipeline:.0f} "
            f"| {statistics.median(ratios):.0%} ({min(ratios):.0%}–{max(ratios):.0%}) |"
        )
    if args.cpu:
        print(
            "\nCPU time per task (ms), all rounds; `iowait` and `idle` are the machine's, over all its CPUs\n"
        )
        print("| catalog | task | " + " | ".join(CPU_GROUPS) + " |")
        print("|---|---|" + "---:|" * len(CPU_GROUPS))
        for name, task, spent in breakdowns:
            cells = " | ".join(f"{spent[group] / spent['tasks'] * 1000:.2f}" for group in CPU_GROUPS)
            print(f"| {name} | {task} | {cells} |")


if __name__ == "__main__":
    main()
else:
    # Imported by the benchmark's worker (`--include tests.bench.bench_pipeline`): the ceiling is
    # a task with the same options as introspect_image that does nothing.
    from workers.app import app as _app
    from workers.tasks import RETRY_OPTIONS

    @_app.task(name=NOOP_TASK, bind=True, **RETRY_OPTIONS)
    def noop(self: Any, image_id: str, job_id: str | None = None) -> dict[str, Any]:
        return {"image_id": image_id}

    if os.environ.get(PROFILE_ENV):
        import cProfile

        from celery.signals import worker_process_init, worker_process_shutdown

        # CPU time, not wall time: with more processes than CPUs, wall time counts the waits for one
        _profile = cProfile.Profile(time.process_time)

        @worker_process_init.connect
        def _start_profile(**_: object) -> None:
            _profile.enable()

        @worker_process_shutdown.connect
        def _dump_profile(**_: object) -> None:
            _profile.disable()
            _profile.dump_stats(f"{os.environ[PROFILE_ENV]}-{os.getpid()}.prof")
