"""The client: round-robin with cool-down, failover when a real glance-api dies mid-run (through
both peers: keystone-less, and keystone with TLS), the keystone identity from OS_* variables and
clouds.yaml as openstacksdk reads them, and refusals with clear messages. The real Keystone's
own cases (secure.yaml, cacert, a renewed token) are in test_keystone.py."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.glance.fixtures import THROUGH_BOTH, Admin, inspect_now, use_settings
from tests.glance.peer import Api, Deployment, free_port
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import (
    Endpoints,
    GlanceClient,
    GlanceConfigError,
    GlanceError,
    GlanceUnavailable,
    HeaderIdentity,
    KeystoneIdentity,
)
from workers.glance.refs import ImageRefError, parse_image_ref
from workers.glance.settings import GlanceSettings
from workers.pipeline import State

IDENTITY = HeaderIdentity(["admin"], "0" * 31 + "a", "introspect")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_round_robin_skips_a_failed_endpoint_until_its_cooldown_ends() -> None:
    clock = Clock()
    endpoints = Endpoints(["http://a", "http://b", "http://c"], cooldown=30, clock=clock)
    assert [endpoints.pick() for _ in range(4)] == ["http://a", "http://b", "http://c", "http://a"]
    endpoints.failed("http://b")
    assert [endpoints.pick() for _ in range(4)] == ["http://c", "http://a", "http://c", "http://a"]
    clock.now += 31
    assert "http://b" in [endpoints.pick() for _ in range(3)]
    for url in endpoints.urls:
        endpoints.failed(url)
    clock.now += 1
    endpoints.failed("http://a")
    assert endpoints.pick() == "http://b"  # all down: the one back first


def test_no_endpoint_is_a_configuration_error() -> None:
    with pytest.raises(GlanceConfigError, match="set INTROSPECT_GLANCE_ENDPOINTS"):
        GlanceClient([], IDENTITY)


def test_settings_split_comma_separated_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    settings = use_settings(
        monkeypatch,
        {
            "INTROSPECT_GLANCE_ENDPOINTS": "http://a:9292, http://b:9292/v2/",
            "INTROSPECT_GLANCE_ROLES": "admin,service",
            "INTROSPECT_GLANCE_CACERT": str(ca),
        },
    )
    assert settings.endpoints == ("http://a:9292", "http://b:9292/v2/")
    assert settings.roles == ("admin", "service")
    assert not settings.uses_keystone
    client = GlanceClient.from_settings(settings)
    assert client.endpoints.urls == ["http://a:9292", "http://b:9292"]
    assert client.identity.headers()["X-Roles"] == "admin,service"
    assert client.session.verify == str(ca)  # every call goes through this session
    assert (
        GlanceClient.from_settings(GlanceSettings(insecure=True, endpoints=("http://a",))).session.verify
        is False
    )
    monkeypatch.delenv("INTROSPECT_GLANCE_CACERT")
    monkeypatch.setenv("OS_CACERT", "/etc/other-ca.pem")
    assert GlanceSettings(endpoints=("http://a",)).verify == "/etc/other-ca.pem"


def test_keystone_identity_from_os_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no clouds.yaml of the working directory's
    use_settings(
        monkeypatch,
        {"OS_AUTH_TYPE": "admin_token", "OS_TOKEN": "tok", "OS_ENDPOINT": "http://glance.example:9292"},
    )
    identity = KeystoneIdentity.from_settings(GlanceSettings())
    assert identity.session.get_auth_headers() == {"X-Auth-Token": "tok"}
    assert identity.endpoint() == "http://glance.example:9292"


def test_keystone_identity_from_clouds_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  lab:\n    auth_type: admin_token\n    auth:\n      token: t2\n"
        "      endpoint: http://glance.lab:9292\n    region_name: RegionTwo\n    interface: internal\n"
        "    cacert: /etc/lab-ca.pem\n"
    )
    use_settings(monkeypatch, {"OS_CLOUD": "lab", "OS_CLIENT_CONFIG_FILE": str(clouds)})
    identity = KeystoneIdentity.from_settings(GlanceSettings())
    assert identity.session.get_auth_headers() == {"X-Auth-Token": "t2"}
    assert (identity.region_name, identity.interface) == ("RegionTwo", "internal")
    assert identity.session.verify == "/etc/lab-ca.pem"
    # our own settings choose the catalog entry over the cloud's
    assert KeystoneIdentity.from_settings(GlanceSettings(interface="admin")).interface == "admin"
    monkeypatch.setenv("OS_CLOUD", "nope")
    with pytest.raises(
        GlanceConfigError,
        match=r"^OS_CLOUD=nope but .*clouds.yaml has no cloud of that name \(it has: lab\)$",
    ):
        KeystoneIdentity.from_settings(GlanceSettings())


def test_href_to_an_unconfigured_endpoint_is_refused() -> None:
    client = GlanceClient(["http://glance-a:9292"], IDENTITY)
    ref = "http://glance-a:9292/v2/images/6c5ac2b3-0d6d-4c2c-8b2a-2b1f8d3f1a11"
    assert client.image_id(parse_image_ref(ref)) == "6c5ac2b3-0d6d-4c2c-8b2a-2b1f8d3f1a11"
    with pytest.raises(ImageRefError, match="not a configured endpoint"):
        client.image_id(parse_image_ref(ref.replace("glance-a", "evil")))


@pytest.mark.glance
@THROUGH_BOTH
def test_dead_endpoint_costs_one_try_then_is_skipped(
    api: Api, admin: Admin, images: dict[str, Path], client: GlanceClient
) -> None:
    dead = f"{api.url.split(':')[0]}://127.0.0.1:{free_port()}"
    image_id = admin.uploaded(images["disk.qcow2"])
    with GlanceClient([dead, api.url], client.identity, cooldown=60) as failing_over:
        for _ in range(5):
            assert failing_over.get_image(image_id)["id"] == image_id
        assert failing_over.stats.failovers == 1
        assert dead in failing_over.endpoints.down()
        assert failing_over.stats.requests == {api.url: 5}


@pytest.mark.glance
def test_all_endpoints_dead_is_transient_with_every_reason() -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with GlanceClient(dead, IDENTITY, attempts=3) as client:
        with pytest.raises(
            GlanceUnavailable,
            match=r"no Glance endpoint answered after 3 tries: http://127.0.0.1:\d+: ConnectFailure: \[Errno 111\] Connection refused; ",
        ):
            client.get_image("6c5ac2b3-0d6d-4c2c-8b2a-2b1f8d3f1a11")


@pytest.fixture
def second_api(glance: Deployment) -> Iterator[Api]:
    """Another glance-api process in front of the same Glance (same database and store)."""
    started = glance.start_api()
    yield started
    started.stop()
    glance.apis.remove(started)


class KillAfter(requests.adapters.HTTPAdapter):
    """Kills one glance-api (SIGKILL, as a crash) once the run has sent `after` requests to
    Glance (the session's transport: a requests adapter, mounted for Glance's URLs only)."""

    def __init__(self, victim: Api, after: int) -> None:
        super().__init__()
        self.victim = victim
        self.after = after
        self.sent = 0

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent += 1
        if self.sent == self.after:
            self.victim.kill()
        return super().send(request, *args, **kwargs)


@pytest.mark.glance
@THROUGH_BOTH
def test_run_completes_when_an_endpoint_dies_mid_run(
    api: Api, second_api: Api, admin: Admin, images: dict[str, Path], client: GlanceClient
) -> None:
    """With TLS, HAProxy stays up as a load balancer does: the dead api's requests get its 503."""
    names = ["lsilogic.vmdk", "disk.qcow2", "disk.vhd", "buslogic.vmdk", "disk.vdi", "ide.vmdk"]
    ids = [admin.uploaded(images[name]) for name in names]
    transport = KillAfter(second_api, after=7)  # inside the third image's reads
    with GlanceClient([second_api.url, api.url], client.identity, cooldown=60) as failing_over:
        for url in failing_over.endpoints.urls:
            failing_over.session.session.mount(url, transport)
        catalog = GlanceCatalog(failing_over)
        outcomes = [inspect_now(catalog, image_id) for image_id in ids]
    assert not second_api.alive
    assert [outcome.state for outcome in outcomes] == [State.INSPECTED] * len(ids)
    assert all(outcome.outcome is not None and outcome.outcome.verdict == "ok" for outcome in outcomes)
    assert failing_over.stats.failovers >= 1
    assert failing_over.stats.requests[second_api.url] >= 3  # it served its share before it died
    for image_id in ids:
        assert admin.get(image_id)["introspect_verdict"] == "ok"


@dataclass
class Served:
    """What a local server (`serving`) sent: the status of each answer, and body bytes sent."""

    statuses: list[int] = field(default_factory=list)
    body_bytes: int = 0


@contextmanager
def serving(answer: Callable[[BaseHTTPRequestHandler, Served], None]) -> Iterator[tuple[str, Served]]:
    """A local HTTP server whose every answer `answer` writes: Glance as it misbehaves on
    demand, reached through the client's real session. Yields its URL and what it sent."""
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            try:
                answer(self, served)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what a bounded read does

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def send(handler: BaseHTTPRequestHandler, served: Served, status: int, body: bytes, **headers: str) -> None:
    served.statuses.append(status)
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(name, value)
    handler.end_headers()
    for start in range(0, len(body), 64 * 1024):
        handler.wfile.write(body[start : start + 64 * 1024])
        handler.wfile.flush()
        served.body_bytes += len(body[start : start + 64 * 1024])


@contextmanager
def answering(*statuses: int) -> Iterator[tuple[str, list[int]]]:
    """A server answering each request with the next status of `statuses` (then 200 and an
    image's JSON): a Glance failing as it does under load. Yields its URL and the statuses sent."""
    pending = list(statuses)

    def answer(handler: BaseHTTPRequestHandler, served: Served) -> None:
        status = pending.pop(0) if pending else 200
        send(handler, served, status, b'{"id": "x"}' if status == 200 else b"<html><h1>busy</h1></html>")

    with serving(answer) as (url, served):
        yield url, served.statuses


def test_backoff_pauses_only_while_every_endpoint_cools_down(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("workers.glance.client.time.sleep", lambda s: s and pauses.append(s))  # 0: none
    with answering(503, 502, 500) as (url, sent), GlanceClient([url], IDENTITY, attempts=4) as client:
        assert client.get_image("x") == {"id": "x"}
        assert (pauses, client.stats.failovers, sent) == ([0.2, 0.4, 0.8], 3, [503, 502, 500, 200])
    pauses.clear()
    with (
        answering(503) as (busy, _),
        answering() as (idle, sent),
        GlanceClient([busy, idle], IDENTITY) as client,
    ):
        assert client.get_image("x") == {"id": "x"}
        assert (sent, pauses) == ([200], [])  # the other endpoint was up: no pause
    with answering(*[503] * 9) as (url, _), GlanceClient([url], IDENTITY, attempts=9) as client:
        with pytest.raises(GlanceUnavailable, match=rf"after 9 tries: {url}: 503 busy"):
            client.get_image("x")
    assert max(pauses) == 2.0  # capped


def test_a_redirect_is_not_followed() -> None:
    """Credentials go where the operator pointed them, never where an answer sends them."""

    def answer(handler: BaseHTTPRequestHandler, served: Served) -> None:
        send(handler, served, 302, b"", Location="http://elsewhere:9292/v2/images/x")

    with serving(answer) as (url, served), GlanceClient([url], IDENTITY) as client:
        with pytest.raises(
            GlanceError,
            match=r"^GET image x: Glance answered 302: a redirect to 'http://elsewhere:9292/v2/images/x', not followed$",
        ):
            client.get_image("x")
    assert served.statuses == [302]


def test_a_range_answered_with_the_whole_image_is_read_only_as_far_as_asked() -> None:
    """A server that ignores Range sends the whole image: the client stops reading at the
    length it asked for and drops the connection."""
    image = random.Random(3).randbytes(64 << 20)

    def answer(handler: BaseHTTPRequestHandler, served: Served) -> None:
        send(handler, served, 200, image, **{"Content-Type": "application/octet-stream"})

    with serving(answer) as (url, served), GlanceClient([url], IDENTITY) as client:
        assert client.read_range("x", 0, 1000, len(image)) == image[:1000]
        assert client.stats.data_bytes == 1000
    assert served.body_bytes < 16 << 20, served.body_bytes  # what socket buffers took, not 64 MiB


def test_an_answer_slower_than_the_read_timeout_is_a_failed_try() -> None:
    """The read timeout reaches the session: a Glance that takes 2 s to answer costs 0.3 s a try."""

    def answer(handler: BaseHTTPRequestHandler, served: Served) -> None:
        time.sleep(2)
        send(handler, served, 200, b'{"id": "x"}')

    with serving(answer) as (url, _), GlanceClient([url], IDENTITY, attempts=2, read_timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(
            GlanceUnavailable,
            match=rf"after 2 tries: {url}: ConnectTimeout: Request to {url}/v2/images/x timed out; ",
        ):
            client.get_image("x")
        assert time.monotonic() - started < 1.5
