"""The Glance peer as pytest fixtures, shared by the Glance suite and the catalog contract suite
(tests/conftest.py registers them once, so a whole run starts one Glance): a real Glance 33.0.0
for the session (two API processes on demand), a RabbitMQ vhost of its own for the
notifications, the client under test, and an admin that talks to Glance with plain HTTP (never
through the code under test)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.glance.peer import ADMIN, MEMBER, Api, Deployment, deployment
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import GlanceClient, HeaderIdentity
from workers.glance.listener import Inline, Listener
from workers.glance.messaging import messaging
from workers.glance.settings import GlanceSettings
from workers.pipeline import Inspection, State, introspect_image

RABBIT = "127.0.0.1:5672"
#: (file name, qemu-img -O format, -o options, Glance disk_format)
IMAGES = [
    ("lsilogic.vmdk", "vmdk", "subformat=streamOptimized,adapter_type=lsilogic", "vmdk"),
    ("buslogic.vmdk", "vmdk", "subformat=streamOptimized,adapter_type=buslogic", "vmdk"),
    ("ide.vmdk", "vmdk", "subformat=streamOptimized,adapter_type=ide", "vmdk"),
    ("sparse.vmdk", "vmdk", "subformat=monolithicSparse,adapter_type=lsilogic", "vmdk"),
    ("disk.qcow2", "qcow2", "", "qcow2"),
    ("disk.vhd", "vpc", "subformat=dynamic", "vhd"),
    ("disk.vhdx", "vhdx", "", "vhdx"),
    ("disk.vdi", "vdi", "", "vdi"),
]


def run(*command: str | Path) -> None:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} failed ({result.returncode}): {result.stderr.strip()}")


def disk_format(name: str) -> str:
    return {image[0]: image[3] for image in IMAGES}.get(name, Path(name).suffix.lstrip("."))


def rabbitmqctl(*args: str) -> str:
    """The real rabbitmqctl (quiet); its output."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is missing: the Glance suite needs the RabbitMQ on 127.0.0.1:5672")
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


@contextlib.contextmanager
def private_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of our own (guest may use it), deleted afterwards; yields its name."""
    vhost = f"introspect-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this session's own, deleted afterwards; yields the oslo.messaging
    transport URL."""
    with private_vhost() as vhost:
        yield f"rabbit://guest:guest@{RABBIT}/{vhost}"


@pytest.fixture(scope="session")
def glance(tmp_path_factory: pytest.TempPathFactory, rabbit_vhost: str) -> Iterator[Deployment]:
    """One Glance for the session: property protections on, notifications to our vhost, the
    introspect import plugin enabled, one API process started (tests may start more)."""
    with deployment(
        tmp_path_factory.mktemp("glance"),
        protections=True,
        transport_url=rabbit_vhost,
        import_plugins=("introspect",),
    ) as peer:
        yield peer


@pytest.fixture(scope="session")
def api(glance: Deployment) -> Api:
    return glance.apis[0]


@pytest.fixture
def client(api: Api) -> Iterator[GlanceClient]:
    """The client under test, as the service: admin role, as Glance's default policies need."""
    with GlanceClient([api.url], HeaderIdentity(["admin"], "0" * 31 + "a", "introspect")) as made:
        yield made


def inspect_now(catalog: GlanceCatalog, image_id: str, *, force: bool = False) -> Inspection:
    """What `glance inspect`, the listener and `sync --inline` run: the pipeline's inspection,
    in this process, unforced unless asked."""
    return introspect_image(catalog, image_id, task_id=None, force=force)


@dataclass
class Admin:
    """A person at Glance's API with curl: plain HTTP, independent of the code under test."""

    url: str
    headers: dict[str, str]

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def create(self, name: str, disk_format: str, container_format: str = "bare", **properties: str) -> str:
        body = {"name": name, "disk_format": disk_format, "container_format": container_format, **properties}
        response = self.call("POST", "/v2/images", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def upload(self, image_id: str, path: Path) -> None:
        response = self.call(
            "PUT", f"/v2/images/{image_id}/file", content=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        assert response.status_code == 204, response.text

    def uploaded(
        self, path: Path, name: str | None = None, disk_format_: str | None = None, **props: str
    ) -> str:
        image_id = self.create(name or path.name, disk_format_ or disk_format(path.name), **props)
        self.upload(image_id, path)
        return image_id

    def imported(
        self,
        path: Path,
        name: str | None = None,
        disk_format_: str | None = None,
        container_format: str = "bare",
    ) -> str:
        """glance-direct: stage, import, and wait until the flow is over (lock dropped)."""
        image_id = self.create(name or path.name, disk_format_ or disk_format(path.name), container_format)
        staged = self.call(
            "PUT", f"/v2/images/{image_id}/stage", content=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        assert staged.status_code == 204, staged.text
        started = self.call(
            "POST", f"/v2/images/{image_id}/import", json={"method": {"name": "glance-direct"}}
        )
        assert started.status_code == 202, started.text
        self.wait(
            image_id, lambda image: not image.get("os_glance_import_task") and image["status"] != "importing"
        )
        return image_id

    def get(self, image_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/v2/images/{image_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def patch(self, image_id: str, ops: list[dict[str, str]]) -> httpx.Response:
        return self.call(
            "PATCH", f"/v2/images/{image_id}", json=ops,
            headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
        )  # fmt: skip

    def delete(self, image_id: str) -> None:
        assert self.call("DELETE", f"/v2/images/{image_id}").status_code == 204

    def wait(self, image_id: str, done: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            image = self.get(image_id)
            if done(image):
                return image
            if time.monotonic() > deadline:
                pytest.fail(f"image {image_id} did not get there in {timeout} s: {image}")
            time.sleep(0.05)


@pytest.fixture
def admin(api: Api) -> Admin:
    return Admin(api.url, dict(ADMIN))


@pytest.fixture
def member(api: Api) -> Admin:
    """A project member (member,reader): not an admin."""
    return Admin(api.url, dict(MEMBER))


class Running:
    """A listener consuming in a thread, inspecting inline, until stopped. `settings`: the
    INTROSPECT_GLANCE_* messaging settings (durable_queues=True, messaging_config=path...)."""

    def __init__(self, client: GlanceClient, transport_url: str | None = None, **settings: Any) -> None:
        self.inline = Inline(GlanceCatalog(client))
        self.listener = Listener(client, self.inline)
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.queue = f"introspect-test-{uuid.uuid4().hex[:8]}"
        self.messaging = messaging(GlanceSettings(transport_url=transport_url, queue=self.queue, **settings))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        def idle() -> None:
            self.ready.set()
            self.inline.idle()

        try:
            self.listener.consume(self.messaging, should_stop=self.stop.is_set, idle=idle, poll_seconds=0.05)
        except BaseException as error:  # shown by the test, not lost in the thread
            self.errors.append(error)
            self.ready.set()

    def __enter__(self) -> Running:
        """Started and consuming (its queue declared and bound)."""
        self.thread.start()
        assert self.ready.wait(15), "the listener did not start consuming"
        assert not self.errors, self.errors
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def outcomes_for(self, image_id: str) -> list[State]:
        return [outcome.state for outcome in self.inline.outcomes if outcome.image_id == image_id]


def settle(running: Running, done: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert not running.errors, running.errors
        assert time.monotonic() < deadline, "the listener did not get there in time"
        time.sleep(0.05)
    time.sleep(0.5)  # the events that follow (our own write-back's image.update) arrive too
