"""The service's settings as openstacksdk reads them, against the suite's real Keystone and its
Glance behind TLS (the keystone peer, tests/glance/fixtures.py): the password kept in secure.yaml,
the image endpoint found in the catalog (interface and region chosen), the CA applied to every
Glance call, OS_* variables alone, no verification, a token Keystone revoked renewed once; and
the failures an operator can meet (a CA not given, a wrong password, no such cloud), each one
line. The keystone-less client reaches a Glance behind TLS with INTROSPECT_GLANCE_CACERT."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from tests.glance import keystone as ks
from tests.glance.fixtures import Admin, Peer, use_settings, write_cloud
from tests.glance.keystone import REGION, Account, Keystone
from tests.glance.peer import ADMIN, free_port
from tests.glance.tls import Authority, Front
from tests.workers.services import INTROSPECT, process_env
from workers.glance.cli import glance_group
from workers.glance.client import GlanceClient, GlanceConfigError
from workers.glance.settings import get_glance_settings

pytestmark = pytest.mark.glance


@pytest.fixture(scope="module")
def image_id(keystone_peer: Peer, images: dict[str, Path]) -> str:
    return keystone_peer.admin.uploaded(images["disk.qcow2"])


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Sets exactly the given settings in this process (from a directory with no clouds.yaml)."""
    monkeypatch.chdir(tmp_path)
    yield lambda env: use_settings(monkeypatch, env)
    get_glance_settings.cache_clear()


def catalog_endpoints(peer: Peer) -> dict[str, str]:
    """The image endpoints of keystone's catalog by interface, as keystone lists them to the
    user introspect runs as (GET /v3/auth/catalog)."""
    assert peer.keystone is not None
    token, _ = peer.keystone.token(ks.INTROSPECT)
    response = httpx.get(f"{peer.keystone.auth_url}/auth/catalog", headers={"X-Auth-Token": token})
    assert response.status_code == 200, response.text
    (image,) = [service for service in response.json()["catalog"] if service["type"] == "image"]
    return {endpoint["interface"]: endpoint["url"] for endpoint in image["endpoints"]}


def test_the_password_in_secure_yaml_and_glance_from_the_catalog(
    keystone_peer: Peer, image_id: str, settings_env: Any
) -> None:
    clouds = Path(keystone_peer.env["OS_CLIENT_CONFIG_FILE"]).read_text()
    cloud = yaml.safe_load(clouds)["clouds"]["suite"]
    assert "password" not in cloud["auth"] and ks.INTROSPECT.password not in clouds
    assert cloud["cacert"] == str(keystone_peer.authority and keystone_peer.authority.ca_cert)
    with GlanceClient.from_settings(settings_env(keystone_peer.env)) as client:
        assert client.endpoints.urls == [catalog_endpoints(keystone_peer)["public"]]
        assert client.endpoints.urls[0].startswith("https://")
        assert client.get_image(image_id) == keystone_peer.admin.get(image_id)
        size = int(keystone_peer.admin.get(image_id)["size"])
        assert client.read_range(image_id, 0, 4, size) == b"QFI\xfb"  # streamed, through TLS too


def test_clouds_yaml_and_secure_yaml_where_openstack_looks(
    keystone_peer: Peer, image_id: str, tmp_path: Path
) -> None:
    """Both files in the working directory (one of openstacksdk's places, fixed when it is first
    imported: hence a process of its own), OS_CLOUD alone set: the command shows the image."""
    assert keystone_peer.keystone is not None and keystone_peer.authority is not None
    write_cloud(tmp_path, keystone_peer.keystone, ks.INTROSPECT, cacert=keystone_peer.authority.ca_cert)
    done = subprocess.run(
        [*INTROSPECT, "glance", "show", "-f", "json", image_id],
        env=process_env(OS_CLOUD="suite"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    image = keystone_peer.admin.get(image_id)
    assert (shown["id"], shown["status"]) == (image_id, image["status"]), shown


def test_interface_and_region_choose_the_catalog_entry(
    keystone_peer: Peer, image_id: str, settings_env: Any, tmp_path: Path
) -> None:
    internal = catalog_endpoints(keystone_peer)["internal"]
    assert internal.startswith("https://localhost:")
    settings = settings_env({**keystone_peer.env, "INTROSPECT_GLANCE_INTERFACE": "internal"})
    with GlanceClient.from_settings(settings) as client:
        assert client.endpoints.urls == [internal]
        assert client.get_image(image_id)["id"] == image_id
    assert keystone_peer.keystone is not None and keystone_peer.authority is not None
    in_clouds_yaml = write_cloud(
        tmp_path / "internal",
        keystone_peer.keystone,
        ks.INTROSPECT,
        cacert=keystone_peer.authority.ca_cert,
        interface="internal",
    )
    with GlanceClient.from_settings(settings_env(in_clouds_yaml)) as client:
        assert client.endpoints.urls == [internal]
    elsewhere = settings_env({**keystone_peer.env, "INTROSPECT_GLANCE_REGION_NAME": "RegionTwo"})
    with pytest.raises(GlanceConfigError, match=rf"Region RegionTwo is not a valid region name .*{REGION}"):
        GlanceClient.from_settings(elsewhere)


def test_os_variables_alone(keystone_peer: Peer, image_id: str, settings_env: Any) -> None:
    assert keystone_peer.keystone is not None and keystone_peer.authority is not None
    account = ks.INTROSPECT
    env = {
        "OS_AUTH_URL": keystone_peer.keystone.auth_url,
        "OS_USERNAME": account.user,
        "OS_PASSWORD": account.password,
        "OS_PROJECT_NAME": account.project,
        "OS_USER_DOMAIN_ID": "default",
        "OS_PROJECT_DOMAIN_ID": "default",
        "OS_REGION_NAME": REGION,
        "OS_CACERT": str(keystone_peer.authority.ca_cert),
    }
    with GlanceClient.from_settings(settings_env(env)) as client:
        assert client.endpoints.urls == [catalog_endpoints(keystone_peer)["public"]]
        assert client.get_image(image_id)["checksum"] == keystone_peer.admin.get(image_id)["checksum"]
    del env["OS_CACERT"]
    with GlanceClient.from_settings(settings_env({**env, "OS_INSECURE": "true"})) as client:
        assert client.session.verify is False
        assert client.get_image(image_id)["id"] == image_id


def test_no_verification_when_the_cloud_says_so(
    keystone_peer: Peer, image_id: str, settings_env: Any, tmp_path: Path
) -> None:
    assert keystone_peer.keystone is not None
    env = write_cloud(tmp_path, keystone_peer.keystone, ks.INTROSPECT, verify=False)
    with GlanceClient.from_settings(settings_env(env)) as client:
        assert client.session.verify is False
        assert client.get_image(image_id)["id"] == image_id


def test_a_token_keystone_revoked_is_renewed_once(
    keystone_peer: Peer, image_id: str, settings_env: Any
) -> None:
    assert keystone_peer.keystone is not None
    with GlanceClient.from_settings(settings_env(keystone_peer.env)) as client:
        revoked = client.session.get_token()
        gone = keystone_peer.keystone.call("DELETE", "/auth/tokens", headers={"X-Subject-Token": revoked})
        assert gone.status_code == 204, gone.text
        # what Glance says to that token now
        refused = Admin(client.endpoints.urls[0], {"X-Auth-Token": str(revoked)}, keystone_peer.admin.verify)
        assert refused.call("GET", f"/v2/images/{image_id}").status_code == 401
        assert client.get_image(image_id)["id"] == image_id
        assert client.session.get_token() != revoked


def test_an_untrusted_certificate_is_one_line_from_the_command(
    keystone_peer: Peer, image_id: str, tmp_path: Path
) -> None:
    """A cloud without the CA that signed Glance's certificate: the command (a real process)
    says so in one line and exits 1; keystone, over plain HTTP, gave the token and the catalog."""
    assert keystone_peer.keystone is not None
    no_ca = write_cloud(tmp_path, keystone_peer.keystone, ks.INTROSPECT)
    done = subprocess.run(
        [*INTROSPECT, "glance", "show", image_id],
        env=process_env(**no_ca),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    glance = catalog_endpoints(keystone_peer)["public"]
    assert (done.returncode, done.stdout) == (1, "")
    assert re.fullmatch(
        rf"Error: {glance}: TLS certificate verify failed \(unable to get local issuer certificate\): give "
        r"the CA that signed it as `cacert` in clouds.yaml or OS_CACERT \(INTROSPECT_GLANCE_CACERT without "
        r"keystone\)\n",
        done.stderr,
    ), done.stderr


def test_refused_settings_are_one_line(
    keystone_peer: Peer, image_id: str, tmp_path: Path, settings_env: Any
) -> None:
    """A wrong password (secure.yaml), a cloud clouds.yaml does not have, keystone not there, no
    clouds.yaml at all: what `introspect glance show` says, one line each, exit status 1."""
    assert keystone_peer.keystone is not None
    account = ks.INTROSPECT
    wrong = write_cloud(
        tmp_path / "wrong",
        keystone_peer.keystone,
        Account(account.user, "not-the-password", account.project, account.role),
    )
    cases = {
        "wrong-password": (
            wrong,
            r"Error: keystone refused us: The request you have made requires authentication\. \(HTTP 401\)"
            r".* \(check the credentials\)\n",
        ),
        "no-such-cloud": (
            {**keystone_peer.env, "OS_CLOUD": "elsewhere"},
            r"Error: OS_CLOUD=elsewhere but .*/clouds.yaml has no cloud of that name \(it has: suite\)\n",
        ),
        "keystone-down": (
            write_cloud(tmp_path / "down", Keystone(tmp_path, tmp_path, port=free_port()), ks.INTROSPECT),
            r"Error: keystone did not answer at http://127\.0\.0\.1:\d+/v3/auth/tokens: ConnectFailure: "
            r"\[Errno 111\] Connection refused\n",
        ),
        "no-clouds-yaml": (
            {"OS_CLOUD": "suite"},
            r"Error: OS_CLOUD=suite but no clouds.yaml was found \(looked in \./clouds.yaml, .*\)\n",
        ),
    }
    for name, (env, said) in cases.items():
        settings_env(env)
        done = CliRunner().invoke(glance_group, ["show", image_id])
        assert (done.exit_code, done.stdout) == (1, ""), (name, done.output)
        assert re.fullmatch(said, done.stderr), (name, done.stderr)


@pytest.fixture(scope="module")
def tls_header_glance(
    header_peer: Peer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The keystone-less Glance behind a TLS front of its own: its URL, and the CA that signed it."""
    directory = tmp_path_factory.mktemp("tls-headers")
    authority = Authority.create(directory)
    front = Front.start(directory, free_port(), header_peer.api.port, authority.server_pem)
    yield front.url, authority.ca_cert
    front.stop()


def test_without_keystone_the_cacert_setting_applies(
    tls_header_glance: tuple[str, Path], header_peer: Peer, images: dict[str, Path], settings_env: Any
) -> None:
    url, ca = tls_header_glance
    image_id = Admin(url, dict(ADMIN), str(ca)).uploaded(images["disk.vhd"])
    env = {
        "INTROSPECT_GLANCE_ENDPOINTS": url,
        "INTROSPECT_GLANCE_PROJECT_ID": header_peer.env["INTROSPECT_GLANCE_PROJECT_ID"],
    }
    with GlanceClient.from_settings(settings_env({**env, "INTROSPECT_GLANCE_CACERT": str(ca)})) as client:
        assert client.get_image(image_id) == header_peer.admin.get(image_id)
    with GlanceClient.from_settings(settings_env({**env, "OS_CACERT": str(ca)})) as client:
        assert client.get_image(image_id)["id"] == image_id
    with GlanceClient.from_settings(settings_env({**env, "INTROSPECT_GLANCE_INSECURE": "true"})) as client:
        assert client.get_image(image_id)["id"] == image_id
    with GlanceClient.from_settings(settings_env(env)) as client:
        with pytest.raises(
            GlanceConfigError,
            match=rf"^{url}: TLS certificate verify failed \(unable to get local issuer certificate\)",
        ):
            client.get_image(image_id)
