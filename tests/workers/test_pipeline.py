"""End to end, with real services and real processes: a real Redis (a database claimed for this
session, keys under a prefix of our own), real `introspect worker` processes, the real command
line. Then the faults: a worker killed mid-task, a broker restarted mid-run, an image that kills
every worker that touches it, and admin overrides racing re-runs on PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import introspect
from introspect.model import Verdict
from tests.workers.httpserver import serve
from tests.workers.services import (
    INTROSPECT,
    Deployment,
    RedisDb,
    Worker,
    claim_redis_db,
    deployment_env,
    start_worker,
    wait_until,
)
from workers import pipeline
from workers.catalog import DONE, Catalog, Source, Status, open_catalog

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.qemu]

STATUS = {Verdict.OK: Status.ACTIVE, Verdict.REJECTED: Status.REJECTED, Verdict.ERROR: Status.ERROR}
NAMES = ("small.qcow2", "stream.vmdk", "disk.vhd", "disk.vdi", "backed.qcow2", "huge.qcow2")


def make_deployment(
    tmp: Path, *, broker_url: str, prefix: str, database_url: str | None = None, **extra: str
) -> Deployment:
    env = deployment_env(
        tmp,
        broker_url=broker_url,
        prefix=prefix,
        queue=f"q-{secrets.token_hex(4)}",
        database_url=database_url,
        **extra,
    )
    return Deployment(env=env, data_dir=tmp)


def catalog_of(deployment: Deployment) -> Catalog:
    return open_catalog(
        deployment.env.get("INTROSPECT_DATABASE_URL") or f"sqlite:///{deployment.data_dir / 'catalog.sqlite'}"
    )


def imported_ids(result: subprocess.CompletedProcess) -> list[uuid.UUID]:
    return [uuid.UUID(m) for m in re.findall(r"^([0-9a-f-]{36})  ", result.stderr, flags=re.MULTILINE)]


def assert_as_the_library_says(catalog: Catalog, image_id: uuid.UUID, path: Path, expect: str | None = None):
    report = introspect.inspect(path, expect=expect)
    record = catalog.get(image_id)
    assert record.status == STATUS[report.verdict], record.findings
    assert catalog.introspected(image_id) == report.properties
    assert record.findings == [f.model_dump(mode="json") for f in report.findings]


# -- the main deployment: shared Redis (claimed db), SQLite, a worker with two processes ---------


@pytest.fixture(scope="module")
def deployment(redis_db: RedisDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("deployment")
    deployed = make_deployment(tmp, broker_url=redis_db.url, prefix=redis_db.prefix)
    worker = start_worker(deployed.env, tmp / "worker.log", "--concurrency", "2")
    try:
        yield deployed
    finally:
        worker.stop()


def test_import_wait_stores_what_the_library_reports(deployment: Deployment, images: dict[str, Path]):
    paths = [images[name] for name in NAMES]
    result = deployment.introspect("import", "--wait", "-v", *map(str, paths), check=False)
    assert result.returncode == 1, result.stderr  # backed.qcow2 is rejected: not every image is active
    ids = imported_ids(result)
    assert len(ids) == len(paths)
    catalog = catalog_of(deployment)
    for image_id, path in zip(ids, paths, strict=True):
        assert_as_the_library_says(catalog, image_id, path)
        assert f"{image_id}  {path.name}  {catalog.get(image_id).status}" in result.stdout


def test_override_survives_rerun_and_unset_restores(deployment: Deployment, images: dict[str, Path]):
    path = images["stream.vmdk"]
    (image_id,) = imported_ids(deployment.introspect("import", "--wait", str(path)))
    catalog = catalog_of(deployment)
    introspected = catalog.introspected(image_id)
    key = next(iter(introspected))  # an introspected key, overridden by the admin
    # --force: "admin-value" is outside the vocabulary; the override semantics are what is tested
    deployment.introspect("images", "set", "--force", str(image_id), f"{key}=admin-value", "extra_key=x")
    result = deployment.introspect("rerun", "--wait", str(image_id))
    assert re.search(r"queued 1 inspection\(s\) \(job [0-9a-f]{32}\)", result.stderr)
    assert catalog.effective(image_id) == introspected | {key: "admin-value", "extra_key": "x"}
    assert catalog.introspected(image_id) == introspected
    assert catalog.get(image_id).inspection_task  # a worker ran it, not this process
    deployment.introspect("images", "unset", str(image_id), key)
    assert catalog.effective(image_id) == introspected | {"extra_key": "x"}
    assert [(c.key, c.source) for c in catalog.history(image_id) if c.source == Source.ADMIN] == [
        (key, Source.ADMIN),
        ("extra_key", Source.ADMIN),
        (key, Source.ADMIN),
    ]


def test_rerun_all_wait_and_the_rerun_task(deployment: Deployment):
    catalog = catalog_of(deployment)
    before = {r.id: r.inspected_at for r in catalog.images()}
    assert before
    result = deployment.introspect("rerun", "--all", "--wait")
    assert f"queued {len(before)} inspection(s)" in result.stderr
    after = {r.id: r.inspected_at for r in catalog.images()}
    assert all(after[i] > before[i] for i in before)
    # the same fan-out, run by a worker: workers.tasks.rerun
    job = secrets.token_hex(8)
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from workers.tasks import rerun; rerun.delay({{'all': True}}, job_id={job!r})",
        ],
        env=deployment.env,
        check=True,
        timeout=60,
    )
    wait_until(
        lambda: sum(catalog.job_progress(job).values()) == len(before), timeout=60, what="the rerun task"
    )


def test_status_sees_the_worker_and_the_catalog(deployment: Deployment):
    result = deployment.introspect("status")
    assert re.search(
        r"^broker   redis://127\.0\.0\.1:6379/\d+: reachable$", result.stdout, flags=re.MULTILINE
    )
    assert re.search(r"^workers  1 alive: introspect-\d+@", result.stdout, flags=re.MULTILINE)
    assert re.search(r"^queue    q-[0-9a-f]{8}: 0 message\(s\) waiting$", result.stdout, flags=re.MULTILINE)
    counts = catalog_of(deployment).counts()
    assert ", ".join(f"{s} {c}" for s, c in sorted(counts.items())) in result.stdout


# -- faults: one worker process, so that the test knows which child to kill ------------------------


@pytest.fixture(scope="module")
def lone_worker(
    redis_db: RedisDb, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, Worker]]:
    tmp = tmp_path_factory.mktemp("lone")
    deployed = make_deployment(
        tmp, broker_url=redis_db.url, prefix=redis_db.prefix, INTROSPECT_DELIVERY_LIMIT="3"
    )
    worker = start_worker(deployed.env, tmp / "worker.log", "--concurrency", "1")
    try:
        yield deployed, worker
    finally:
        worker.stop()


def kill_children(worker: Worker) -> list[int]:
    killed = worker.children()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    return killed


def test_pool_processes_yield_to_the_main_process(lone_worker: tuple[Deployment, Worker]):
    """INTROSPECT_WORKER_NICE (default 10) lowers every pool process, those that replace killed
    ones too, and leaves the main process that hands the tasks out as it was."""
    _, worker = lone_worker
    main = os.getpriority(os.PRIO_PROCESS, worker.process.pid)
    assert main == os.getpriority(os.PRIO_PROCESS, 0)  # the main process is as it was started

    def priorities() -> list[int]:
        try:
            return [os.getpriority(os.PRIO_PROCESS, child) for child in worker.children()]
        except ProcessLookupError:
            return []  # a child that was just replaced

    # a child lowers itself once it has started (worker_process_init), maybe after "ready."
    wait_until(lambda: priorities() == [min(main + 10, 19)], timeout=30, what="a lowered pool process")


def test_a_worker_killed_mid_task_loses_nothing(
    lone_worker: tuple[Deployment, Worker], images: dict[str, Path]
):
    deployed, worker = lone_worker
    path = images["small.qcow2"]
    release = threading.Event()

    def hold_first_read(method: str, _path: str) -> None:
        if method == "GET" and not release.is_set():
            release.wait(30)  # the task is now inside the inspection, provably

    with serve(path.parent) as served:
        served.on_request = hold_first_read
        (image_id,) = imported_ids(deployed.introspect("import", "--location", served.url(path.name)))
        catalog = catalog_of(deployed)
        wait_until(lambda: any(m == "GET" for m, _, _ in served.requests), what="the inspection to start")
        assert catalog.get(image_id).status == Status.IMPORTING
        assert kill_children(worker)
        release.set()
        wait_until(lambda: catalog.get(image_id).status in DONE, what="the redelivered inspection")
        assert served.inspections(path.name) == 2  # the killed delivery, and exactly one more
    record = catalog.get(image_id)
    assert record.deliveries == 0 and record.claim_token is None
    assert_as_the_library_says(catalog, image_id, path)
    assert len(catalog.history(image_id)) == len(catalog.introspected(image_id))  # written once


def test_an_image_that_kills_every_worker_ends_in_error(
    lone_worker: tuple[Deployment, Worker], images: dict[str, Path]
):
    deployed, worker = lone_worker
    path = images["disk.vhd"]

    def kill_whoever_reads(method: str, _path: str) -> None:
        # The first HEAD is `introspect import` sizing the location, before anything is queued;
        # every later one is a worker process starting to inspect the image.
        if method == "HEAD" and served.hits(path.name) > 1:
            kill_children(worker)
            time.sleep(5)  # never answer: the process asking is gone

    with serve(path.parent) as served:
        served.on_request = kill_whoever_reads
        (image_id,) = imported_ids(deployed.introspect("import", "--location", served.url(path.name)))
        catalog = catalog_of(deployed)
        wait_until(
            lambda: catalog.get(image_id).status == Status.ERROR, timeout=90, what="the poison verdict"
        )
        assert served.hits(path.name) - 1 == 3  # the delivery limit, then no more reads
    record = catalog.get(image_id)
    assert [f["code"] for f in record.findings] == ["pipeline.worker_lost"]
    assert "the worker died 3 times inspecting this image (limit 3)" in record.findings[0]["message"]
    # and the worker is still serving other images
    (healthy,) = imported_ids(deployed.introspect("import", "--wait", str(images["small.qcow2"])))
    assert_as_the_library_says(catalog, healthy, images["small.qcow2"])


# -- faults: a private Redis restarted mid-run ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _accepts(port), timeout=10, what=f"redis-server on port {port}")
    return process


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def test_a_broker_restart_mid_run_still_completes(tmp_path: Path, images: dict[str, Path]):
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    db, client = claim_redis_db("127.0.0.1", port)
    client.close()
    deployed = make_deployment(
        tmp_path, broker_url=f"redis://127.0.0.1:{port}/{db}", prefix="restart:", INTROSPECT_STALL_TIMEOUT="3"
    )
    worker = start_worker(deployed.env, tmp_path / "worker.log", "--concurrency", "2")
    copies = tmp_path / "served"
    copies.mkdir()
    names = []
    for n in range(24):
        name = NAMES[n % 4]
        shutil.copyfile(images[name], copies / f"{n}-{name}")
        names.append(f"{n}-{name}")

    def slow(_method: str, _path: str) -> None:
        time.sleep(0.05)  # a store that takes its time, so the run lasts a few seconds

    try:
        with serve(copies) as served:
            served.on_request = slow
            run = subprocess.Popen(
                [
                    *INTROSPECT,
                    "import",
                    "--wait",
                    *(arg for name in names for arg in ("--location", served.url(name))),
                ],
                env=deployed.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            catalog = catalog_of(deployed)
            wait_until(
                lambda: catalog.counts().get("active", 0) >= 3, timeout=60, what="the run to be under way"
            )
            redis_process.kill()
            redis_process.wait()
            done_at_restart = sum(catalog.counts().get(s, 0) for s in DONE)
            time.sleep(1)
            redis_process = start_redis(port, tmp_path)
            _, stderr = run.communicate(timeout=120)
            assert run.returncode == 0, stderr
            assert "no progress for 3s: publishing the unfinished inspections again" in stderr
        assert done_at_restart < len(names)  # the restart really was mid-run
        records = list(catalog.images())
        assert len(records) == len(names)
        for record in records:
            assert_as_the_library_says(catalog, record.id, copies / record.name)
    finally:
        worker.stop()
        redis_process.kill()
        redis_process.wait()


# -- admin overrides racing re-runs, on PostgreSQL and MariaDB ---------------------------------------


def test_admin_overrides_made_during_reruns_are_never_lost(server_catalog: Catalog, images: dict[str, Path]):
    """Many concurrent pairs: a re-run and an admin write of the same image and key, released
    together by a barrier, in both orders; then the same again with an unset."""
    catalog = server_catalog
    pairs = 40
    path = images["stream.vmdk"]
    ids = []
    for _ in range(pairs):
        image_id = catalog.create()
        catalog.start_upload(image_id)
        catalog.set_data(image_id, location=path.as_uri(), size=path.stat().st_size, checksum=None)
        pipeline.introspect_image(catalog, image_id, task_id="first")
        ids.append(image_id)
    introspected = catalog.introspected(ids[0])
    key = next(iter(introspected))
    errors: list[BaseException] = []

    def race(image_id: uuid.UUID, barrier: threading.Barrier, admin: dict[str, str] | None) -> None:
        def rerun() -> None:
            barrier.wait()
            pipeline.introspect_image(catalog, image_id, task_id=f"rerun-{image_id}")

        def override() -> None:
            barrier.wait()
            if admin is None:
                catalog.unset_admin(image_id, [key], actor="admin")
            else:
                catalog.set_admin(image_id, admin, actor="admin")

        threads = [threading.Thread(target=guarded(f)) for f in (rerun, override)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def guarded(function):
        def run() -> None:
            try:
                function()
            except BaseException as error:
                errors.append(error)

        return run

    for admin in ({key: "admin-value", "os_distro": "debian"}, None):
        racers = []
        for image_id in ids:
            barrier = threading.Barrier(2)
            racers.append(threading.Thread(target=race, args=(image_id, barrier, admin)))
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert errors == []
        for image_id in ids:
            expected = introspected | (
                {key: "admin-value", "os_distro": "debian"} if admin else {"os_distro": "debian"}
            )
            assert catalog.effective(image_id) == expected
            assert catalog.introspected(image_id) == introspected
            assert catalog.get(image_id).status == Status.ACTIVE
