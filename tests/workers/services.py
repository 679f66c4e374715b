"""Real services for the pipeline tests and the benchmark: images made by qemu-img, a claimed
Redis database, the `introspect` command and `introspect worker` processes in a deployment of
their own."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]


def _console_script() -> list[str]:
    """This checkout's `introspect` command, as its pyproject declares it, run by this interpreter
    (the venv's console script is whatever checkout the venv was last installed from)."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["introspect"]
    module, _, function = target.partition(":")
    launch = (
        f"import sys; sys.argv[0] = 'introspect'; from {module} import {function}; sys.exit({function}())"
    )
    return [sys.executable, "-c", launch]


INTROSPECT = _console_script()
CLAIM_KEY = "introspect-tests:claim"

#: name -> qemu-img create arguments (odd virtual sizes; each format the parsers may know).
IMAGE_RECIPES: dict[str, list[str]] = {
    "small.qcow2": ["-f", "qcow2", "{path}", "7M"],
    "huge.qcow2": ["-f", "qcow2", "-o", "cluster_size=65536", "{path}", "1T"],
    "stream.vmdk": ["-f", "vmdk", "-o", "adapter_type=lsilogic,subformat=streamOptimized", "{path}", "129M"],
    "sparse.vmdk": ["-f", "vmdk", "{path}", "1027M"],
    "disk.vhd": ["-f", "vpc", "{path}", "7M"],
    "disk.vhdx": ["-f", "vhdx", "{path}", "7M"],
    "disk.vdi": ["-f", "vdi", "{path}", "7M"],
    "disk.qed": ["-f", "qed", "{path}", "7M"],
    "backed.qcow2": ["-f", "qcow2", "-b", "small.qcow2", "-F", "qcow2", "{path}"],
}


def make_images(directory: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Small real images (sparse, a few hundred KiB each) made by qemu-img in `directory`: those
    of IMAGE_RECIPES named (all by default; backed.qcow2 needs small.qcow2 made before it)."""
    made = {}
    for name in names or list(IMAGE_RECIPES):
        path = directory / name
        args = [arg.format(path=path) for arg in IMAGE_RECIPES[name]]
        subprocess.run(["qemu-img", "create", "-q", *args], check=True, cwd=directory)
        made[name] = path
    return made


# -- Redis ----------------------------------------------------------------------------------------


@dataclass
class RedisDb:
    """A Redis database this session claimed, and the key prefix everything it creates carries."""

    host: str
    port: int
    db: int
    prefix: str
    client: redis.Redis = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    def cleanup(self) -> None:
        """Delete the keys this session created, and nothing else."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)


def claim_redis_db(host: str, port: int) -> tuple[int, redis.Redis]:
    """Claim an empty database 1..15 with a SET NX key, as rq's tests find an empty one."""
    token = secrets.token_hex(8)
    for db in range(1, 16):
        client = redis.Redis(host=host, port=port, db=db)
        if client.dbsize() != 0:
            continue
        if client.set(CLAIM_KEY, token, nx=True, ex=3600) and client.dbsize() == 1:
            return db, client
        if client.get(CLAIM_KEY) == token.encode():
            client.delete(CLAIM_KEY)
    raise RuntimeError(f"no empty Redis database among 1..15 on {host}:{port}")


# -- workers and the command line -----------------------------------------------------------------


@dataclass
class Deployment:
    """One pipeline: its environment (broker, queue, catalog, store) and the commands run in it."""

    env: dict[str, str]
    data_dir: Path

    def introspect(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the real `introspect` command in this deployment."""
        result = subprocess.run(
            [*INTROSPECT, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"introspect {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result


def process_env(**extra: str) -> dict[str, str]:
    """This environment without INTROSPECT_* settings, and with this checkout first on the path:
    the venv's `introspect` may be an editable install of another checkout, whose code the
    processes would otherwise run instead of the code under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTROSPECT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env | extra


def deployment_env(
    data_dir: Path, *, broker_url: str, prefix: str, queue: str, database_url: str | None, **extra: str
) -> dict[str, str]:
    env = process_env()
    env |= {
        "INTROSPECT_BROKER_URL": broker_url,
        "INTROSPECT_BROKER_KEY_PREFIX": prefix,
        "INTROSPECT_QUEUE": queue,
        "INTROSPECT_DATA_DIR": str(data_dir),
        "INTROSPECT_STALL_TIMEOUT": "5",
        "COLUMNS": "200",
        **extra,
    }
    if database_url:
        env["INTROSPECT_DATABASE_URL"] = database_url
    return env


@dataclass
class Worker:
    """A running `introspect worker`, its log, and its prefork children."""

    process: subprocess.Popen[bytes]
    log: Path

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:
            return []

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the worker did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # children it forked and that outlived it (killed parents leave orphans)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_worker(env: dict[str, str], log: Path, *args: str) -> Worker:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*INTROSPECT, "worker", "--loglevel", "INFO", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(process, log)
    worker.wait_ready()
    return worker


def wait_until(predicate: Callable[[], object], *, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
