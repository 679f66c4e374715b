"""The client: round-robin with cool-down, failover when a real glance-api dies mid-run,
keystoneauth1 identity from OS_* variables and clouds.yaml, and refusals with clear messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.glance.fixtures import Admin, inspect_now
from tests.glance.peer import Api, Deployment, free_port
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import (
    Endpoints,
    GlanceClient,
    GlanceConfigError,
    GlanceError,
    GlanceUnavailable,
    HeaderIdentity,
    keystone_identity,
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


def test_settings_split_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTROSPECT_GLANCE_ENDPOINTS", "http://a:9292, http://b:9292/v2/")
    monkeypatch.setenv("INTROSPECT_GLANCE_ROLES", "admin,service")
    for name in ("OS_CLOUD", "OS_AUTH_URL", "OS_AUTH_TYPE"):
        monkeypatch.delenv(name, raising=False)
    settings = GlanceSettings()
    assert settings.endpoints == ("http://a:9292", "http://b:9292/v2/")
    assert settings.roles == ("admin", "service")
    assert not settings.uses_keystone
    client = GlanceClient.from_settings(settings)
    assert client.endpoints.urls == ["http://a:9292", "http://b:9292"]
    assert client.identity.headers()["X-Roles"] == "admin,service"


def test_keystone_identity_from_os_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"OS_AUTH_TYPE": "admin_token", "OS_TOKEN": "tok", "OS_ENDPOINT": "http://glance.example:9292"}
    identity = keystone_identity(GlanceSettings(), environ)
    assert identity.headers() == {"X-Auth-Token": "tok"}
    assert identity.endpoint() == "http://glance.example:9292"


def test_keystone_identity_from_clouds_yaml(tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  lab:\n    auth_type: admin_token\n    auth:\n      token: t2\n"
        "      endpoint: http://glance.lab:9292\n    region_name: RegionTwo\n"
    )
    identity = keystone_identity(GlanceSettings(), {"OS_CLOUD": "lab", "OS_CLIENT_CONFIG_FILE": str(clouds)})
    assert identity.headers() == {"X-Auth-Token": "t2"}
    assert identity.region_name == "RegionTwo"
    with pytest.raises(GlanceConfigError, match="has no cloud named 'nope'"):
        keystone_identity(GlanceSettings(), {"OS_CLOUD": "nope", "OS_CLIENT_CONFIG_FILE": str(clouds)})


def test_href_to_an_unconfigured_endpoint_is_refused() -> None:
    client = GlanceClient(["http://glance-a:9292"], IDENTITY)
    ref = "http://glance-a:9292/v2/images/6c5ac2b3-0d6d-4c2c-8b2a-2b1f8d3f1a11"
    assert client.image_id(parse_image_ref(ref)) == "6c5ac2b3-0d6d-4c2c-8b2a-2b1f8d3f1a11"
    with pytest.raises(ImageRefError, match="not a configured endpoint"):
        client.image_id(parse_image_ref(ref.replace("glance-a", "evil")))


@pytest.mark.glance
def test_dead_endpoint_costs_one_try_then_is_skipped(api: Api, admin: Admin, images: dict[str, Path]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    image_id = admin.uploaded(images["disk.qcow2"])
    with GlanceClient([dead, api.url], IDENTITY, cooldown=60) as client:
        for _ in range(5):
            assert client.get_image(image_id)["id"] == image_id
        assert client.stats.failovers == 1
        assert dead in client.endpoints.down()
        assert client.stats.requests == {api.url: 5}


@pytest.mark.glance
def test_all_endpoints_dead_is_transient_with_every_reason() -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with GlanceClient(dead, IDENTITY, attempts=3) as client:
        with pytest.raises(
            GlanceUnavailable, match=r"no Glance endpoint answered after 3 tries: .*ConnectError"
        ):
            client.get_image("6c5ac2b3-0d6d-4c2c-8b2a-2b1f8d3f1a11")


@pytest.fixture
def second_api(glance: Deployment) -> Iterator[Api]:
    """Another glance-api process in front of the same Glance (same database and store)."""
    started = glance.start_api()
    yield started
    started.stop()
    glance.apis.remove(started)


class KillAfter(httpx.HTTPTransport):
    """Kills one glance-api (SIGKILL, as a crash) once the run has sent `after` requests."""

    def __init__(self, victim: Api, after: int) -> None:
        super().__init__()
        self.victim = victim
        self.after = after
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.sent == self.after:
            self.victim.kill()
        return super().handle_request(request)


@pytest.mark.glance
def test_run_completes_when_an_endpoint_dies_mid_run(
    api: Api, second_api: Api, admin: Admin, images: dict[str, Path]
) -> None:
    names = ["lsilogic.vmdk", "disk.qcow2", "disk.vhd", "buslogic.vmdk", "disk.vdi", "ide.vmdk"]
    ids = [admin.uploaded(images[name]) for name in names]
    transport = KillAfter(second_api, after=7)  # inside the third image's reads
    with GlanceClient([second_api.url, api.url], IDENTITY, cooldown=60, transport=transport) as client:
        catalog = GlanceCatalog(client)
        outcomes = [inspect_now(catalog, image_id) for image_id in ids]
    assert not second_api.alive
    assert [outcome.state for outcome in outcomes] == [State.INSPECTED] * len(ids)
    assert all(outcome.outcome is not None and outcome.outcome.verdict == "ok" for outcome in outcomes)
    assert client.stats.failovers >= 1
    assert client.stats.requests[second_api.url] >= 3  # it served its share before it died
    for image_id in ids:
        assert admin.get(image_id)["introspect_verdict"] == "ok"


class Flaky:
    """A transport that answers each request with the next status of a list (then 200)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.hosts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, json={"id": "x"} if status == 200 else None, text=None)


def test_backoff_pauses_only_while_every_endpoint_cools_down(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("workers.glance.client.time.sleep", lambda s: s and pauses.append(s))  # 0: none
    one = Flaky(503, 502, 500)
    with GlanceClient(["http://a"], IDENTITY, attempts=4, transport=httpx.MockTransport(one)) as client:
        assert client.get_image("x") == {"id": "x"}
        assert (pauses, client.stats.failovers) == ([0.2, 0.4, 0.8], 3)
    pauses.clear()
    two = Flaky(503)
    with GlanceClient(["http://a", "http://b"], IDENTITY, transport=httpx.MockTransport(two)) as client:
        assert client.get_image("x") == {"id": "x"}
        assert (two.hosts, pauses) == (["a", "b"], [])  # the other endpoint was up: no pause
    dead = Flaky(*[503] * 9)
    with GlanceClient(["http://a"], IDENTITY, attempts=9, transport=httpx.MockTransport(dead)) as client:
        with pytest.raises(GlanceUnavailable, match=r"after 9 tries: http://a: 503 "):
            client.get_image("x")
    assert max(pauses) == 2.0  # capped


def test_a_refused_token_is_renewed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class Renewing:
        renewed = 0

        def headers(self) -> dict[str, str]:
            return {"X-Auth-Token": f"t{self.renewed}"}

        def invalidate(self) -> bool:
            self.renewed += 1
            return True

        def endpoint(self) -> str | None:
            return None

    identity = Renewing()
    with GlanceClient(["http://a"], identity, transport=httpx.MockTransport(Flaky(401))) as client:
        assert client.get_image("x") == {"id": "x"}
    assert identity.renewed == 1
    with GlanceClient(["http://a"], identity, transport=httpx.MockTransport(Flaky(401, 401))) as client:
        with pytest.raises(GlanceError, match=r"Glance answered 401: .*\(check the credentials\)$"):
            client.get_image("x")
