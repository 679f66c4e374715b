"""A real OpenStack Keystone 30.0.0 for the tests: sqlite, fernet tokens, uWSGI, 127.0.0.1.

    venv_dir() / build_venv()   keystone + pyuwsgi, built once per pin set and cached under
                                ~/.cache/introspect/keystone-venv-30.0.0-<hash of the pins>, with
                                a bootstrapped state in it (template/), made once rather than in
                                every run: `keystone-manage db_sync`, `fernet_setup`,
                                `credential_setup`, `bootstrap` (the admin user and project, the
                                roles, RegionOne), and `bootstrap` again for each account (glance's
                                service user, the user introspect runs as, a project member), which
                                makes a user, its project and its role there (and grants the role
                                on the system scope too, which project-scoped tokens do not carry)
    Keystone(dir, venv).spawn() a copy of that state in DIR, served by uWSGI on a free port
      .wait(), .register(...)   up; then the catalog, as an operator's `openstack service create`
                                and `endpoint create`: the identity and image services and their
                                endpoints (Glance's ports are the run's)
    python -m tests.glance.keystone venv      (`make keystone-venv`)

Keystone's own certificate is not the point here, so it speaks plain HTTP; Glance is the one
behind TLS (tests/glance/tls.py), and the catalog's image endpoints are https.

Measured on the 2-core test machine (shared, load 2-4): the venv and its template 45 s once per
pin set (pip 23 s, then seven keystone-manage runs of 2-4 s each); in a run, start to the first
GET /v3 5-6 s (Glance's db_sync and start, about as long, run meanwhile), the catalog 0.9 s: the
keystone peer is up 6 s after it was asked for.
"""

from __future__ import annotations

import fcntl
import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.glance.peer import Log, PeerError, _drop_old_venvs, _run, free_port, spawn_uwsgi, wait_answering
from tests.processes import stop_group

HERE = Path(__file__).resolve().parent
KEYSTONE_VERSION = "30.0.0"
PYUWSGI_VERSION = "2.0.30.post1"
CONSTRAINTS = HERE / "constraints.txt"
CONF = HERE / "keystone.conf"
UWSGI_INI = HERE / "keystone-uwsgi.ini"
START_TIMEOUT = 60.0
REGION = "RegionOne"
DOMAIN = "default"
#: The bootstrap admin's password (the template's; tests only).
ADMIN_PASSWORD = "keystone-admin-for-tests"
#: The state `keystone-manage` leaves: the database and the two key repositories.
STATE = ("keystone.sqlite", "fernet-keys", "credential-keys")


@dataclass(frozen=True)
class Account:
    """A keystone user, its password, the project it works in and its role there."""

    user: str
    password: str
    project: str
    role: str


#: The bootstrap admin (the `admin` project's admin).
ADMIN = Account("admin", ADMIN_PASSWORD, "admin", "admin")
#: glance's service user: keystonemiddleware validates tokens with it (the `service` role).
GLANCE = Account("glance", "glance-service-for-tests", "service", "service")
#: The user introspect runs as: `admin`, as Glance's policies need for the write-back.
INTROSPECT = Account("introspect", "introspect-for-tests", "service", "admin")
#: A project member (keystone's implied roles give it `reader` too).
ALICE = Account("alice", "alice-for-tests", "alice", "member")
#: Made by `keystone-manage bootstrap` in the template, each with its project and its role.
ACCOUNTS = (GLANCE, INTROSPECT, ALICE)


def _stderr(line: str) -> None:
    print(f"keystone-peer: {line}", file=sys.stderr, flush=True)


def venv_dir() -> Path:
    """Where the venv for the current pins lives; INTROSPECT_KEYSTONE_VENV overrides it."""
    override = os.environ.get("INTROSPECT_KEYSTONE_VENV")
    if override:
        return Path(override)
    key = hashlib.sha256()
    for pinned in (CONSTRAINTS, CONF):
        key.update(pinned.read_bytes())
    key.update(
        "\n".join([KEYSTONE_VERSION, PYUWSGI_VERSION, REGION, *map(repr, (ADMIN, *ACCOUNTS))]).encode()
    )
    key.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "introspect" / f"keystone-venv-{KEYSTONE_VERSION}-{key.hexdigest()[:12]}"


def build_venv(log: Log = _stderr) -> Path:
    """Build the venv and its bootstrapped template if they are not there yet (under a lock:
    parallel runs build them once)."""
    venv = venv_dir()
    marker = venv / ".complete"
    if not marker.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        with (venv.parent / f"{venv.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                _build(venv, marker, log)
    _drop_old_venvs(venv, "keystone-venv-*")
    return venv


def _build(venv: Path, marker: Path, log: Log) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    build_log = venv.parent / f"{venv.name}.build.log"
    build_log.unlink(missing_ok=True)
    log(f"building {venv} (keystone=={KEYSTONE_VERSION}, pyuwsgi=={PYUWSGI_VERSION}); log in {build_log}")
    started = time.monotonic()
    timings: dict[str, float] = {}
    _run([sys.executable, "-m", "venv", venv], build_log, "python -m venv")
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "-q", "-U", "pip"], build_log, "pip install -U pip")
    _run(
        [
            *pip,
            "install",
            "-q",
            "-c",
            CONSTRAINTS,
            f"keystone=={KEYSTONE_VERSION}",
            f"pyuwsgi=={PYUWSGI_VERSION}",
        ],
        build_log,
        "pip install keystone",
    )
    timings["pip"] = time.monotonic() - started
    template = venv / "template"
    for sub in ("etc", "log"):
        (template / sub).mkdir(parents=True, exist_ok=True)
    conf = template / "etc" / "keystone.conf"
    conf.write_text(CONF.read_text().replace("@RUN_DIR@", str(template)))
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    manage = [venv / "bin" / "keystone-manage", "--config-file", conf]
    owner = ["--keystone-user", user, "--keystone-group", group]
    _run([*manage, "db_sync"], build_log, "keystone-manage db_sync")
    _run([*manage, "fernet_setup", *owner], build_log, "keystone-manage fernet_setup")
    _run([*manage, "credential_setup", *owner], build_log, "keystone-manage credential_setup")
    _run(
        [*manage, "bootstrap", "--bootstrap-password", ADMIN.password, "--bootstrap-region-id", REGION],
        build_log,
        "keystone-manage bootstrap",
    )
    for account in ACCOUNTS:  # bootstrap again: a user, its project and its role there, at once
        _run(
            [
                *manage,
                "bootstrap",
                "--bootstrap-username", account.user,
                "--bootstrap-password", account.password,
                "--bootstrap-project-name", account.project,
                "--bootstrap-role-name", account.role,
            ],
            build_log,
            f"keystone-manage bootstrap ({account.user})",
        )  # fmt: skip
    timings["total"] = time.monotonic() - started
    marker.write_text(json.dumps({"seconds": timings, "python": sys.version.split()[0]}) + "\n")
    log(f"keystone venv and bootstrapped template built in {timings['total']:.1f} s")


@dataclass
class Keystone:
    """One Keystone in `directory`, from the venv's bootstrapped template."""

    directory: Path
    venv: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _admin_token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/v3"

    @property
    def log_file(self) -> Path:
        return self.directory / "log" / "uwsgi.log"

    def spawn(self) -> None:
        """Copy the template's state, write the config and start uWSGI (without waiting)."""
        started = time.monotonic()
        template = self.venv / "template"
        for sub in ("etc", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        for name in STATE:
            source = template / name
            if source.is_dir():
                shutil.copytree(source, self.directory / name, dirs_exist_ok=True)
            else:
                shutil.copy2(source, self.directory / name)
        etc = self.directory / "etc"
        (etc / "keystone.conf").write_text(CONF.read_text().replace("@RUN_DIR@", str(self.directory)))
        self.port = self.port or free_port()
        ini = etc / "keystone-uwsgi.ini"
        ini.write_text(
            UWSGI_INI.read_text().replace("@RUN_DIR@", str(self.directory)).replace("@PORT@", str(self.port))
        )
        env = {**os.environ, "OS_KEYSTONE_CONFIG_DIR": str(etc)}
        env.pop("PYTHONPATH", None)
        self.process = spawn_uwsgi(self.venv, ini, env, self.log_file)
        self.timings["spawn"] = time.monotonic() - started
        self._started = started

    def wait(self) -> None:
        """Until GET /v3 answers."""
        assert self.process is not None, "spawn() first"
        wait_answering(
            self.auth_url,
            (200,),
            what="keystone",
            process=self.process,
            log_file=self.log_file,
            give_up=self.stop,
            timeout=START_TIMEOUT,
        )
        self.timings["start"] = time.monotonic() - self._started

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)

    # -- the API, as an operator uses it ---------------------------------------------------------

    def token(self, account: Account) -> tuple[str, dict[str, Any]]:
        """A project-scoped token for `account` (POST /v3/auth/tokens) and the token's body."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": account.user, "domain": {"id": DOMAIN}, "password": account.password}
                    },
                },
                "scope": {"project": {"name": account.project, "domain": {"id": DOMAIN}}},
            }
        }
        response = httpx.post(f"{self.auth_url}/auth/tokens", json=body, timeout=30)
        if response.status_code != 201:
            raise PeerError(
                f"keystone refused a token to {account.user}: {response.status_code} {response.text}"
            )
        token: dict[str, Any] = response.json()["token"]
        return response.headers["X-Subject-Token"], token

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call as the bootstrap admin."""
        if self._admin_token is None:
            self._admin_token, _ = self.token(ADMIN)
        headers = {"X-Auth-Token": self._admin_token, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.auth_url}{path}", headers=headers, timeout=30, **kwargs)

    def create(self, kind: str, body: dict[str, Any]) -> str:
        """POST /v3/<kind>s; the new object's id."""
        response = self.call("POST", f"/{kind}s", json={kind: body})
        if response.status_code != 201:
            raise PeerError(f"keystone refused to create a {kind}: {response.status_code} {response.text}")
        return str(response.json()[kind]["id"])

    def register(self, image_endpoints: dict[str, str]) -> None:
        """The catalog, through the API: the identity service, and the image service with
        `image_endpoints` (interface -> URL)."""
        started = time.monotonic()
        identity = self.create("service", {"type": "identity", "name": "keystone"})
        for interface in ("public", "internal"):  # keystonemiddleware looks for the internal one
            self.create(
                "endpoint",
                {"service_id": identity, "interface": interface, "url": self.auth_url, "region_id": REGION},
            )
        image = self.create("service", {"type": "image", "name": "glance"})
        for interface, url in image_endpoints.items():
            self.create(
                "endpoint", {"service_id": image, "interface": interface, "url": url, "region_id": REGION}
            )
        self.timings["register"] = time.monotonic() - started

    def authtoken_options(self) -> dict[str, str]:
        """glance-api.conf's [keystone_authtoken]: tokens checked as the glance service user."""
        return {
            "www_authenticate_uri": self.url,
            "auth_url": self.url,
            "auth_type": "password",
            "username": GLANCE.user,
            "password": GLANCE.password,
            "project_name": GLANCE.project,
            "user_domain_id": DOMAIN,
            "project_domain_id": DOMAIN,
            "service_token_roles_required": "true",
        }
