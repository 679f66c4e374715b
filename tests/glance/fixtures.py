"""The Glance peers as pytest fixtures, shared by the Glance suite and the catalog contract suite
(tests/conftest.py registers them once, so a whole run starts each peer once):

- `header_peer`: a real keystone-less Glance 33.0.0 (identity in X-* headers), with property
  protections, notifications to a RabbitMQ vhost of its own and the import plugin;
- `keystone_peer`: a real Keystone 30.0.0 (tests/glance/keystone) and a second Glance that checks
  its tokens (keystonemiddleware), served over TLS by HAProxy with a certificate of a CA this
  session made (tests/glance/tls.py); the client under test reads a clouds.yaml whose password is
  in secure.yaml, with the CA as `cacert`, and finds Glance in keystone's catalog.

`peer` is the header peer, unless a test asks for both (`@THROUGH_BOTH`); `glance`, `api`,
`admin`, `member` and `client` are the chosen peer's: its deployment (two API processes on
demand), an admin and a project member that talk to Glance with plain HTTP (never through the
code under test), and the client under test, as the service.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import ssl
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
import yaml

from tests.glance import keystone as ks
from tests.glance.keystone import Account, Keystone
from tests.glance.peer import ADMIN, MEMBER, Api, Deployment, build_venv, deployment
from tests.glance.tls import Authority
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import GlanceClient
from workers.glance.listener import Inline, Listener
from workers.glance.messaging import messaging
from workers.glance.settings import GlanceSettings, get_glance_settings
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


#: Every variable that says where Glance is and who we are: cleared before a peer's are set.
SETTINGS_VARIABLES = (
    "OS_CLOUD", "OS_AUTH_URL", "OS_AUTH_TYPE", "OS_CLIENT_CONFIG_FILE", "OS_CLIENT_SECURE_FILE",
    "OS_CACERT", "OS_INSECURE", "OS_INTERFACE", "OS_REGION_NAME", "OS_USERNAME", "OS_PASSWORD",
    "OS_PROJECT_NAME", "OS_USER_DOMAIN_ID", "OS_PROJECT_DOMAIN_ID", "OS_TOKEN", "OS_ENDPOINT",
    "INTROSPECT_GLANCE_ENDPOINTS", "INTROSPECT_GLANCE_AUTH", "INTROSPECT_GLANCE_PROJECT_ID",
    "INTROSPECT_GLANCE_CACERT", "INTROSPECT_GLANCE_INSECURE", "INTROSPECT_GLANCE_INTERFACE",
    "INTROSPECT_GLANCE_REGION_NAME",
)  # fmt: skip
#: The two peers, by the name tests are parametrized with.
PEERS = ("header", "keystone")
#: Run a test against both peers (each test that asks for `peer`, `api`, `admin`, `client`...).
THROUGH_BOTH = pytest.mark.parametrize("peer", PEERS, indirect=True)


@dataclass
class Peer:
    """One Glance of the session, and who may talk to it."""

    name: str
    glance: Deployment
    admin: Admin
    member: Admin
    #: The member's project (Glance's `owner` of what the member creates).
    member_project: str
    #: The environment that makes the service (`GlanceSettings`, the commands) reach this Glance.
    env: dict[str, str]
    keystone: Keystone | None = None
    authority: Authority | None = None

    @property
    def api(self) -> Api:
        return self.glance.apis[0]


@pytest.fixture(scope="session")
def header_peer(tmp_path_factory: pytest.TempPathFactory, rabbit_vhost: str) -> Iterator[Peer]:
    """The keystone-less Glance: property protections on, notifications to our vhost, the
    introspect import plugin enabled, one API process started (tests may start more)."""
    with deployment(
        tmp_path_factory.mktemp("glance"),
        protections=True,
        transport_url=rabbit_vhost,
        import_plugins=("introspect",),
    ) as glance:
        url = glance.apis[0].url
        env = {"INTROSPECT_GLANCE_ENDPOINTS": url, "INTROSPECT_GLANCE_PROJECT_ID": "0" * 31 + "a"}
        yield Peer(
            "header", glance, Admin(url, dict(ADMIN)), Admin(url, dict(MEMBER)), MEMBER["X-Project-Id"], env
        )


@pytest.fixture(scope="session")
def keystone_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """Keystone, and a Glance that checks its tokens, behind TLS. Keystone starts while Glance's
    database is made; the catalog is then registered through its API."""
    directory = tmp_path_factory.mktemp("keystone-glance")
    authority = Authority.create(directory / "tls")
    keystone = Keystone(directory / "keystone", ks.build_venv())
    keystone.spawn()
    glance = Deployment(
        directory / "glance",
        build_venv(),
        protections=True,
        authtoken=keystone.authtoken_options(),
        tls=authority,
    )
    try:
        glance.configure()
        api = glance.start_api()
        keystone.wait()
        keystone.register({"public": api.url, "internal": api.url.replace("127.0.0.1", "localhost")})
        admin_token, _ = keystone.token(ks.ADMIN)
        member_token, member = keystone.token(ks.ALICE)
        verify = str(authority.ca_cert)
        env = write_cloud(directory / "cloud", keystone, ks.INTROSPECT, cacert=authority.ca_cert)
        yield Peer(
            "keystone",
            glance,
            Admin(api.url, {"X-Auth-Token": admin_token}, verify),
            Admin(api.url, {"X-Auth-Token": member_token}, verify),
            member["project"]["id"],
            env,
            keystone,
            authority,
        )
    finally:
        stopping = threading.Thread(target=keystone.stop)  # both stop at once: a second saved
        stopping.start()
        glance.stop()
        stopping.join()


def write_cloud(
    directory: Path,
    keystone: Keystone,
    account: Account,
    *,
    cacert: Path | None = None,
    **settings: Any,
) -> dict[str, str]:
    """clouds.yaml (cloud `suite`) and secure.yaml (its password, and nothing else) in
    `directory`, as an operator writes them; the environment that names them."""
    directory.mkdir(parents=True, exist_ok=True)
    cloud: dict[str, Any] = {
        "auth_type": "password",
        "auth": {
            "auth_url": keystone.auth_url,
            "username": account.user,
            "project_name": account.project,
            "user_domain_id": "default",
            "project_domain_id": "default",
        },
        "region_name": ks.REGION,
        **settings,
    }
    if cacert is not None:
        cloud["cacert"] = str(cacert)
    clouds, secure = directory / "clouds.yaml", directory / "secure.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"suite": cloud}}))
    secure.write_text(yaml.safe_dump({"clouds": {"suite": {"auth": {"password": account.password}}}}))
    return {"OS_CLOUD": "suite", "OS_CLIENT_CONFIG_FILE": str(clouds), "OS_CLIENT_SECURE_FILE": str(secure)}


@pytest.fixture(scope="session")
def peer(request: pytest.FixtureRequest) -> Peer:
    """The header peer, or the one a test is parametrized with (THROUGH_BOTH)."""
    name = getattr(request, "param", "header")
    chosen: Peer = request.getfixturevalue(f"{name}_peer")
    return chosen


@pytest.fixture(scope="session")
def glance(peer: Peer) -> Deployment:
    return peer.glance


@pytest.fixture(scope="session")
def api(peer: Peer) -> Api:
    return peer.api


def use_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> GlanceSettings:
    """Exactly `env` as the Glance settings of this process (every other such variable cleared)."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_glance_settings.cache_clear()
    return get_glance_settings()


@pytest.fixture
def client(peer: Peer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GlanceClient]:
    """The client under test, as the service, built from settings as the commands build it: the
    admin role, as Glance's default policies need (headers), or the `introspect` user of the
    clouds.yaml (keystone)."""
    with GlanceClient.from_settings(use_settings(monkeypatch, peer.env)) as made:
        yield made
    get_glance_settings.cache_clear()


def inspect_now(catalog: GlanceCatalog, image_id: str, *, force: bool = False) -> Inspection:
    """What `glance inspect`, the listener and `sync --inline` run: the pipeline's inspection,
    in this process, unforced unless asked."""
    return introspect_image(catalog, image_id, task_id=None, force=force)


@functools.cache
def trusting(cafile: str) -> ssl.SSLContext:
    """An SSL context that trusts `cafile` (httpx takes contexts, not paths)."""
    return ssl.create_default_context(cafile=cafile)


@dataclass
class Admin:
    """A person at Glance's API with curl: plain HTTP, independent of the code under test."""

    url: str
    headers: dict[str, str]
    #: The CA that signed Glance's certificate (the keystone peer's TLS), else the system's.
    verify: bool | str = True

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        verify = trusting(self.verify) if isinstance(self.verify, str) else self.verify
        return httpx.request(
            method, f"{self.url}{path}", headers=headers, timeout=30, verify=verify, **kwargs
        )

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
def admin(peer: Peer) -> Admin:
    return peer.admin


@pytest.fixture
def member(peer: Peer) -> Admin:
    """A project member (member,reader): not an admin."""
    return peer.member


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
