"""`import --wait` tells the truth (the real command, a real Redis and a real worker): it says within
seconds that no worker consumes its queue and which broker it asked, gives the workers a grace to
come back when they go silent mid-run, gives up at `--timeout`, and exits 1 when an image did not
end `active`, as `inspect` does."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workers.httpserver import serve
from tests.workers.services import INTROSPECT, Deployment, RedisDb, deployment_env, start_worker, wait_until
from tests.workers.test_cli import run_cli

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.qemu]


def deployed(tmp: Path, redis_db: RedisDb, **extra: str) -> Deployment:
    env = deployment_env(
        tmp,
        broker_url=redis_db.url,
        prefix=redis_db.prefix,
        queue=f"q-{secrets.token_hex(4)}",
        database_url=None,
        **extra,
    )
    return Deployment(env=env, data_dir=tmp)


def ids_of(stderr: str) -> list[str]:
    return re.findall(r"^([0-9a-f-]{36})  ", stderr, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def with_worker(redis_db: RedisDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = deployed(tmp_path_factory.mktemp("wait"), redis_db)
    worker = start_worker(deployment.env, deployment.data_dir / "worker.log", "--concurrency", "1")
    try:
        yield deployment
    finally:
        worker.stop()


def test_no_worker_is_said_within_seconds(redis_db: RedisDb, tmp_path: Path, images: dict[str, Path]):
    deployment = deployed(tmp_path / "data", redis_db)
    started = time.monotonic()
    result = deployment.introspect("import", "--wait", str(images["small.qcow2"]), check=False, timeout=60)
    assert time.monotonic() - started < 30  # (the command's own start-up is most of it on a busy machine)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    queue = deployment.env["INTROSPECT_QUEUE"]
    assert result.stderr.strip() == (
        f"Error: no worker consumes queue {queue!r} on {redis_db.url} (none answered in 2s): "
        "start one with `introspect worker`, or use --inline"
    )
    assert not (tmp_path / "data" / "images").exists()  # said before uploading anything


def test_workers_gone_mid_run_get_their_grace_then_it_is_said(
    redis_db: RedisDb, tmp_path: Path, images: dict[str, Path]
):
    """A worker silent mid-run may be reconnecting to a restarted broker: the wait says it waits
    for one to come back, and only past INTROSPECT_WORKER_GRACE says nobody will finish."""
    deployment = deployed(
        tmp_path / "data", redis_db, INTROSPECT_STALL_TIMEOUT="1", INTROSPECT_WORKER_GRACE="4"
    )
    worker = start_worker(deployment.env, tmp_path / "worker.log", "--concurrency", "1")
    path = images["disk.vdi"]
    release = threading.Event()
    held = threading.Event()

    def hold_reads(method: str, _path: str) -> None:
        if method == "GET":
            held.set()
            release.wait(60)

    try:
        with serve(path.parent) as served:
            served.on_request = hold_reads
            run = subprocess.Popen(
                [*INTROSPECT, "import", "--wait", "--location", served.url(path.name)],
                env=deployment.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert held.wait(60), "the worker never read the image"
                os.killpg(worker.process.pid, signal.SIGKILL)  # mid-inspection: nobody is left to finish it
                started = time.monotonic()
                _, stderr = run.communicate(timeout=90)
            finally:
                release.set()
                if run.poll() is None:
                    run.kill()
                    run.wait()
    finally:
        worker.stop()
    queue = deployment.env["INTROSPECT_QUEUE"]
    assert run.returncode == 1 and "Traceback" not in stderr, stderr
    assert "no progress for 1s: no worker answered; waiting up to 4s for one to come back" in stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"Error: no worker consumes queue {re.escape(repr(queue))} on {re.escape(redis_db.url)} "
        r"\(none answered in the last \d+s\): start one with `introspect worker`, or use --inline",
        last,
    ), last
    waited = int(re.search(r"the last (\d+)s", last).group(1))  # type: ignore[union-attr]
    assert 4 <= waited and time.monotonic() - started >= 4


def test_an_image_that_does_not_end_active_exits_1(with_worker: Deployment, images: dict[str, Path]):
    result = with_worker.introspect(
        "import", "--wait", "-v", str(images["small.qcow2"]), str(images["backed.qcow2"]), check=False
    )
    assert result.returncode == 1, result.stderr
    good, backed = ids_of(result.stderr)
    assert result.stderr.strip().splitlines()[-1] == f"1 of 2 image(s) did not end active: {backed} rejected"
    assert f"{good}  small.qcow2  active" in result.stdout
    ok = with_worker.introspect("import", "--wait", str(images["disk.vhd"]), check=False)
    assert ok.returncode == 0, ok.stderr


def test_timeout_gives_up_and_names_what_is_left(with_worker: Deployment, images: dict[str, Path]):
    path = images["disk.vdi"]
    release = threading.Event()

    def hold_reads(method: str, _path: str) -> None:
        if method == "GET":
            release.wait(60)  # the inspection is held inside its first read

    with serve(path.parent) as served:
        served.on_request = hold_reads
        try:
            started = time.monotonic()
            result = with_worker.introspect(
                "import", "--wait", "--timeout", "3", "--location", served.url(path.name), check=False
            )
            assert time.monotonic() - started < 40
        finally:
            release.set()
        (image_id,) = ids_of(result.stderr)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"Error: --timeout 3s: 1 of 1 inspection(s) not finished, still queued: {image_id} "
            "(`introspect images show ID` follows one)"
        )
        wait_until(
            lambda: "active" in with_worker.introspect("images", "show", image_id).stdout.splitlines()[0],
            what="the held inspection to finish once released",
        )


def test_inline_import_exits_1_on_a_rejected_image(tmp_path: Path, images: dict[str, Path]):
    result = run_cli(tmp_path, "import", "--inline", str(images["backed.qcow2"]))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (image_id,) = ids_of(result.stderr)
    assert (
        result.stderr.strip().splitlines()[-1] == f"1 of 1 image(s) did not end active: {image_id} rejected"
    )


def test_timeout_needs_wait(tmp_path: Path, images: dict[str, Path]):
    result = run_cli(tmp_path, "import", "--timeout", "3", str(images["small.qcow2"]))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == "Error: --timeout: only with --wait (without it, import does not wait)\n"
