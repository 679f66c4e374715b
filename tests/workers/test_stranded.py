"""No image is ever stranded: real workers on a private Redis, batches of real images read in place
over HTTP, and the faults that used to leave images `saving` or `importing` for good: the broker
restarted mid-batch (without persistence, and with append-only persistence), the worker's main
process and its pool children SIGKILLed mid-batch, a location that hangs past the time limit, a
task that died holding its image. On SQLite and PostgreSQL; `introspect import` without `--wait`,
so that nothing but the workers' sweep (workers/sweep.py) can bring the images home. Every image
must end `active`, `rejected` or `error` within SETTLE seconds of the fault, as the library says."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import introspect
from introspect.model import Verdict
from tests.workers.conftest import SQL_URLS
from tests.workers.httpserver import Served, serve
from tests.workers.services import INTROSPECT, Deployment, Worker, claim_redis_db, deployment_env, wait_until
from workers.catalog import DONE, Catalog, Status, open_catalog

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.qemu]

STATUS = {Verdict.OK: Status.ACTIVE, Verdict.REJECTED: Status.REJECTED, Verdict.ERROR: Status.ERROR}
NAMES = ("small.qcow2", "stream.vmdk", "disk.vhd", "disk.vdi")
BATCH = 40
PROCESSES = "4"
#: Short limits, so that the sweep's deadlines pass within the test: a soft limit of 5 s (an image
#: here takes well under a second), killed 1 s later, `importing` swept after 8 s, `saving` after 3 s.
FAST = {
    "INTROSPECT_TASK_TIME_LIMIT": "5",
    "INTROSPECT_TASK_KILL_GRACE": "1",
    "INTROSPECT_RETRY_BACKOFF_MAX": "1",
    "INTROSPECT_VISIBILITY_TIMEOUT": "60",
    "INTROSPECT_SWEEP_PERIOD": "1",
    "INTROSPECT_SWEEP_PENDING_AFTER": "3",
    "INTROSPECT_SWEEP_IMPORTING_AFTER": "8",
}
#: Seconds within which every image must have settled after the fault (the deadlines above, a
#: worker restart, and room for a machine shared with other test runs).
SETTLE = 90.0


# -- a private Redis ----------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own, on a free port, that the test kills and starts again."""

    def __init__(self, directory: Path, *, appendonly: bool) -> None:
        self.directory = directory
        self.appendonly = appendonly
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.appendonly else []
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *persistence,
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._accepts, timeout=20, what=f"redis-server on port {self.port}")

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory, appendonly=False)
    try:
        yield server
    finally:
        server.kill()


def deploy(redis_server: PrivateRedis, catalog_url: str, tmp_path: Path) -> tuple[Deployment, Catalog]:
    db, client = claim_redis_db("127.0.0.1", redis_server.port)
    client.close()
    env = deployment_env(
        tmp_path,
        broker_url=f"redis://127.0.0.1:{redis_server.port}/{db}",
        prefix="stranded:",
        queue=f"q-{secrets.token_hex(4)}",
        database_url=catalog_url,
        **FAST,
    )
    return Deployment(env=env, data_dir=tmp_path), open_catalog(catalog_url)


class Supervisor:
    """What runs workers in production (systemd's Restart=always): a worker that exits is started
    again. Celery 5.7's worker can exit on a broker connection loss ("Unrecoverable error:
    AttributeError: 'NoneType' object has no attribute 'hostname'" while it restores its
    unacknowledged messages to a Redis that is still down, as in celery/celery#9250): seen here
    about once in six restarts of Redis. Workers start without being waited for: they start while
    the batch is imported, its messages waiting in the queue."""

    def __init__(self, deployed: Deployment, directory: Path) -> None:
        self.deployed = deployed
        self.directory = directory
        self.workers: list[Worker] = []
        self.started = 0

    def start(self) -> Worker:
        self.started += 1
        log = self.directory / f"worker-{self.started}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*INTROSPECT, "worker", "--loglevel", "INFO", "--concurrency", PROCESSES],
                env=self.deployed.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(process, log)
        self.workers.append(worker)
        return worker

    def watch(self) -> None:
        """Start a worker again for each that exited."""
        for worker in list(self.workers):
            if worker.process.poll() is not None:
                self.workers.remove(worker)
                worker.stop()  # its orphans
                self.start()

    @property
    def restarts(self) -> int:
        return self.started - len(self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


# -- a batch ------------------------------------------------------------------------------------------


def copies(images: dict[str, Path], directory: Path, count: int = BATCH) -> list[str]:
    """`count` real images to serve, named n-<source> (the same bytes as the source)."""
    directory.mkdir()
    names = []
    for n in range(count):
        source = NAMES[n % len(NAMES)]
        shutil.copyfile(images[source], directory / f"{n}-{source}")
        names.append(f"{n}-{source}")
    return names


def slow(method: str, _path: str) -> None:
    if method == "GET":
        time.sleep(0.04)  # a store slow to send bytes: the batch lasts a few seconds


def import_locations(deployed: Deployment, served: Served, names: list[str]) -> list[uuid.UUID]:
    """`introspect import --location` for each name, without --wait: queued, and left to the workers."""
    locations = [arg for name in names for arg in ("--location", served.url(name))]
    result = deployed.introspect("import", *locations, timeout=180)
    ids = [uuid.UUID(m) for m in re.findall(r"^([0-9a-f-]{36})  ", result.stderr, flags=re.MULTILINE)]
    assert len(ids) == len(names), result.stderr
    return ids


def finished(catalog: Catalog, ids: list[uuid.UUID]) -> int:
    return sum(status in DONE for status in catalog.statuses(ids).values())


def settle(catalog: Catalog, ids: list[uuid.UUID], since: float, supervisor: Supervisor) -> float:
    """Wait until every image ended active, rejected or error; the seconds since the fault."""

    def settled() -> bool:
        supervisor.watch()
        return finished(catalog, ids) == len(ids)

    try:
        wait_until(settled, timeout=SETTLE, what="every image to settle")
    except AssertionError:
        stuck = {i: s for i, s in catalog.statuses(ids).items() if s not in DONE}
        raise AssertionError(f"{len(stuck)} image(s) stranded after {SETTLE}s: {stuck}") from None
    return time.monotonic() - since


def assert_as_the_library_says(catalog: Catalog, ids: list[uuid.UUID], served: Path) -> None:
    reports = {source: introspect.inspect(served / f"{n}-{source}") for n, source in enumerate(NAMES)}
    for image_id in ids:
        record = catalog.get(image_id)
        report = reports[record.name.split("-", 1)[1]]
        assert record.status == STATUS[report.verdict], (record.name, record.findings)
        assert catalog.introspected(image_id) == report.properties
        assert (record.deliveries, record.claim_token) == (0, None)


def figures(
    fault: str, catalog_url: str, ids: list[uuid.UUID], at_fault: int, took: float, supervisor: Supervisor
) -> None:
    engine = "postgresql" if catalog_url.startswith("postgresql") else "sqlite"
    print(
        f"\n{fault} on {engine}: {len(ids)} images, {at_fault} done at the fault, all settled {took:.1f}s "
        f"after it; workers started again: {supervisor.restarts}"
    )


# -- the faults ---------------------------------------------------------------------------------------


#: A broker fault is the broker's: it runs on the catalog production scale-out uses (PostgreSQL);
#: the sweep, which differs by engine (SKIP LOCKED or not), is run on every engine by the SIGKILL test.
ON_POSTGRESQL = pytest.mark.parametrize("catalog_url", [SQL_URLS[1]], indirect=True)
#: The time limits are the worker's: one engine, the default one.
ON_SQLITE = pytest.mark.parametrize("catalog_url", [SQL_URLS[0]], indirect=True)


@ON_POSTGRESQL
@pytest.mark.parametrize("appendonly", [False, True], ids=["no-persistence", "appendonly"])
def test_a_broker_restart_mid_batch_strands_nothing(
    appendonly: bool,
    private_redis: PrivateRedis,
    catalog_url: str,
    images: dict[str, Path],
    tmp_path: Path,
):
    private_redis.appendonly = appendonly
    private_redis.start()
    deployed, catalog = deploy(private_redis, catalog_url, tmp_path)
    names = copies(images, tmp_path / "served")
    supervisor = Supervisor(deployed, tmp_path)
    worker = supervisor.start()
    try:
        with serve(tmp_path / "served") as served:
            served.on_request = slow
            ids = import_locations(deployed, served, names)
            worker.wait_ready()
            wait_until(lambda: finished(catalog, ids) >= 6, timeout=60, what="the batch to be under way")
            private_redis.kill()
            at_fault, fault = finished(catalog, ids), time.monotonic()
            time.sleep(1)
            private_redis.start()
            took = settle(catalog, ids, fault, supervisor)
        assert at_fault < len(ids)  # the restart really was mid-batch
        persistence = "appendonly" if appendonly else "no persistence"
        figures(f"redis restart ({persistence})", catalog_url, ids, at_fault, took, supervisor)
        assert_as_the_library_says(catalog, ids, tmp_path / "served")
    finally:
        supervisor.stop()


#: The sweep that brings a killed worker's images home differs by engine: PostgreSQL's SKIP LOCKED,
#: SQLite's one writer. MariaDB's claim is the contract's (tests/workers/test_sweep.py runs the
#: sweep on every engine); the suite's time budget keeps this fault to the two.
@pytest.mark.parametrize("catalog_url", [SQL_URLS[0], SQL_URLS[1]], indirect=True)
def test_the_worker_killed_mid_batch_strands_nothing(
    private_redis: PrivateRedis, catalog_url: str, images: dict[str, Path], tmp_path: Path
):
    """Two workers share the batch; SIGKILL of one's main process and of its pool children (its
    machine is gone): the messages it had reserved stay in Redis until the visibility timeout (60 s
    here), and the tasks it was running never finish. The other worker's sweep brings them home
    (and the supervisor starts the killed one again)."""
    private_redis.start()
    deployed, catalog = deploy(private_redis, catalog_url, tmp_path)
    names = copies(images, tmp_path / "served")
    supervisor = Supervisor(deployed, tmp_path)
    worker, other = supervisor.start(), supervisor.start()
    try:
        with serve(tmp_path / "served") as served:
            served.on_request = slow
            ids = import_locations(deployed, served, names)
            worker.wait_ready()
            other.wait_ready()
            wait_until(lambda: finished(catalog, ids) >= 6, timeout=60, what="the batch to be under way")
            children = worker.children()
            os.kill(worker.process.pid, signal.SIGKILL)
            for child in children:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            worker.process.wait()
            at_fault, fault = finished(catalog, ids), time.monotonic()
            took = settle(catalog, ids, fault, supervisor)
        assert at_fault < len(ids)
        figures("SIGKILL of a worker and its children", catalog_url, ids, at_fault, took, supervisor)
        assert_as_the_library_says(catalog, ids, tmp_path / "served")
    finally:
        supervisor.stop()


@ON_SQLITE
def test_a_hanging_location_and_a_dead_task_end_in_a_verdict(
    private_redis: PrivateRedis, catalog_url: str, images: dict[str, Path], tmp_path: Path
):
    """A location that stops answering once the import has sized it: the soft time limit stops
    the inspection, recorded as `pipeline.time_limit` (or the library's internal error when the
    limit strikes inside a parser's read). And an image whose task died holding it (killed by the
    hard time limit: the message acknowledged, the image `importing`, one delivery counted): the
    sweep queues it again and it is inspected."""
    private_redis.start()
    deployed, catalog = deploy(private_redis, catalog_url, tmp_path)
    names = copies(images, tmp_path / "served", count=4)
    hanging = names[0]
    release = threading.Event()

    def hang(method: str, path: str) -> None:
        if path == f"/{hanging}" and (method == "GET" or served.hits(hanging) > 1):
            release.wait(60)

    supervisor = Supervisor(deployed, tmp_path)
    worker = supervisor.start()
    try:
        with serve(tmp_path / "served") as served:
            served.on_request = hang
            ids = import_locations(deployed, served, names)
            worker.wait_ready()
            # the dead task: claimed, never finished, no message anywhere
            dead = catalog.create(name=names[1])
            catalog.start_upload(dead)
            catalog.set_data(dead, location=served.url(names[1]), size=1, checksum=None)
            catalog.claim(dead, token=uuid.uuid4().hex, task_id="killed-by-the-hard-limit")
            fault = time.monotonic()
            try:
                took = settle(catalog, [*ids, dead], fault, supervisor)
            finally:
                release.set()
        figures("a hanging location and a dead task", catalog_url, [*ids, dead], 0, took, supervisor)
        (finding,) = catalog.get(ids[0]).findings
        assert catalog.get(ids[0]).status == Status.ERROR
        assert finding["code"] in ("pipeline.time_limit", "introspect.internal_error"), finding
        message = finding["message"]
        assert "did not finish within 5 s" in message or "SoftTimeLimitExceeded" in message, message
        assert_as_the_library_says(catalog, [ids[1], ids[2], ids[3]], tmp_path / "served")
        record = catalog.get(dead)
        report = introspect.inspect(tmp_path / "served" / names[1])
        assert record.status == STATUS[report.verdict]
        assert (record.deliveries, record.claim_token) == (0, None)
    finally:
        supervisor.stop()
