"""A real OpenStack Glance 33.0.0 for the tests: keystone-less, sqlite, one file store, uWSGI.

    venv_dir() / build_venv()   a venv with glance + pyuwsgi (+ introspect's base dependencies,
                                for the import plugin), built once per pin set and cached under
                                ~/.cache/introspect/glance-venv-33.0.0-<hash of the pins>
    Deployment(dir, ...)        one Glance: config, database and stores in DIR
      .start_api() -> Api       one glance-api process (uWSGI) on a free 127.0.0.1 port;
                                start it twice for two endpoints in front of the same Glance
    Deployment(..., authtoken=, tls=)   the same Glance checking keystone tokens (paste flavor
                                `keystone`, keystonemiddleware against tests/glance/keystone's
                                Keystone), each api behind HAProxy terminating TLS (tls.py)
    python -m tests.glance.peer venv | start DIR | stop DIR      (see __main__.py)

Identity (keystone-less): the paste flavor `headerauth` builds the request context from the X-Identity-Status,
X-Roles, X-Project-Id and X-User-Id headers, as keystonemiddleware would after checking a token.
Glance 33 enforces the new policy defaults without implied roles, so a normal user needs both
`member` and `reader`; the service that writes properties back is `admin`.

The templates beside this file (glance-api.conf, glance-api-paste.ini, glance-uwsgi.ini,
property-protections.conf) say in their comments why each setting is there.

Measured on the 2-core test machine: venv build 52-76 s cold (pip downloads), 0 s cached; db_sync
1.9 s; glance-api start to the first GET /versions 1.7-1.9 s; stop 1 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.glance.tls import Authority, Front
from tests.processes import stop_group

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
GLANCE_VERSION = "33.0.0"
PYUWSGI_VERSION = "2.0.30.post1"
CONSTRAINTS = HERE / "constraints.txt"
TEMPLATES = ("glance-api.conf", "glance-api-paste.ini", "glance-uwsgi.ini", "property-protections.conf")
START_TIMEOUT = 60.0
#: The entry point the import plugin is registered under (pyproject's
#: [project.entry-points."glance.image_import.plugins"]).
PLUGIN_GROUP = "glance.image_import.plugins"
PLUGIN_ENTRY = "introspect = workers.glance.plugin:get_flow"

ADMIN = {
    "X-Identity-Status": "Confirmed",
    "X-Roles": "admin,member,reader",
    "X-Project-Id": "0000000000000000000000000000000a",
    "X-User-Id": "introspect-admin",
}
MEMBER = {
    "X-Identity-Status": "Confirmed",
    "X-Roles": "member,reader",
    "X-Project-Id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "X-User-Id": "alice",
}

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"glance-peer: {line}", file=sys.stderr, flush=True)


class PeerError(RuntimeError):
    """The peer could not be built or started; the message says where the log is."""


def plugin_requirements() -> list[str]:
    """introspect's base dependencies (pyproject [project].dependencies): what the import plugin
    imports inside Glance's process besides the code itself, which comes from the work tree."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def venv_dir() -> Path:
    """Where the venv for the current pins lives; INTROSPECT_GLANCE_VENV overrides it."""
    override = os.environ.get("INTROSPECT_GLANCE_VENV")
    if override:
        return Path(override)
    key = hashlib.sha256()
    key.update(CONSTRAINTS.read_bytes())
    key.update("\n".join([GLANCE_VERSION, PYUWSGI_VERSION, *plugin_requirements()]).encode())
    key.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "introspect" / f"glance-venv-{GLANCE_VERSION}-{key.hexdigest()[:12]}"


def _run(command: list[str | os.PathLike[str]], log_file: Path, what: str, **kwargs: object) -> None:
    """Run a build step with its output in `log_file`; on failure show the tail and stop."""
    with log_file.open("ab") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise PeerError(f"{what} failed (exit {result.returncode}); full log: {log_file}\n{tail}")


def build_venv(log: Log = _stderr) -> Path:
    """Build the venv if it is not there yet (under a lock: parallel runs build it once)."""
    venv = venv_dir()
    marker = venv / ".complete"
    if marker.exists():
        _drop_old_venvs(venv)
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        build_log = venv.parent / f"{venv.name}.build.log"
        build_log.unlink(missing_ok=True)
        timings: dict[str, float] = {}
        log(f"building {venv} (glance=={GLANCE_VERSION}, pyuwsgi=={PYUWSGI_VERSION}); log in {build_log}")
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", venv], build_log, "python -m venv")
        pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "install", "-q", "-U", "pip"], build_log, "pip install -U pip")
        timings["venv"] = time.monotonic() - started
        _run(
            [
                *pip,
                "install",
                "-q",
                "-c",
                CONSTRAINTS,
                f"glance=={GLANCE_VERSION}",
                f"pyuwsgi=={PYUWSGI_VERSION}",
                *plugin_requirements(),
            ],
            build_log,
            "pip install glance",
        )
        timings["total"] = time.monotonic() - started
        marker.write_text(json.dumps({"seconds": timings, "python": sys.version.split()[0]}) + "\n")
        log(f"venv built in {timings['total']:.1f} s")
    _drop_old_venvs(venv)
    return venv


def _drop_old_venvs(current: Path, pattern: str = "glance-venv-*") -> None:
    """Venvs of older pin sets (250 MB each) go once a new one is built; one in use by another
    run (its lock held) stays."""
    for old in current.parent.glob(pattern):
        if old == current or not old.is_dir():
            continue
        with (old.parent / f"{old.name}.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(old, ignore_errors=True)
            (old.parent / f"{old.name}.build.log").unlink(missing_ok=True)
        (old.parent / f"{old.name}.lock").unlink(missing_ok=True)


def spawn_uwsgi(venv: Path, ini: Path, env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """`uwsgi --ini INI` from `venv`, its output appended to `log_file`, leading a process group of
    its own (the tests stop the master and its workers together: `stop_group`)."""
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [venv / "bin" / "uwsgi", "--ini", ini],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def wait_answering(
    url: str,
    statuses: tuple[int, ...],
    *,
    what: str,
    process: subprocess.Popen[bytes],
    log_file: Path,
    give_up: Callable[[], None],
    timeout: float = START_TIMEOUT,
) -> None:
    """Until GET `url` answers with one of `statuses`. The server exiting first, or `timeout`
    seconds passing (then `give_up()` stops it), is one PeerError that names its log."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise PeerError(f"{what} exited during start-up (exit {process.returncode}): see {log_file}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code in statuses:
                return
        if time.monotonic() > deadline:
            give_up()
            raise PeerError(f"{what} did not answer {url} in {timeout:.0f} s: see {log_file}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Api:
    """One glance-api process (a uWSGI master and its worker, in a process group of their own),
    and the HAProxy in front of it when the deployment serves TLS (`url` is then HAProxy's)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path
    #: The config directory this process read (its own copy when started with options of its own).
    etc: Path
    front: Front | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Gone at once, as a crashed server: SIGKILL to the group we started (master and worker).
        A TLS front stays, as a load balancer whose backend died: it answers 503."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM (die-on-term), then SIGKILL after 10 s; then the front."""
        stop_group(self.process)
        if self.front is not None:
            self.front.stop()


@dataclass
class Deployment:
    """One Glance deployment in `directory`. Several Apis started from it share its database and
    stores, as several glance-api hosts behind a load balancer share theirs."""

    directory: Path
    venv: Path
    protections: bool = False
    transport_url: str | None = None
    import_plugins: tuple[str, ...] = ()
    #: [keystone_authtoken] options: tokens checked by keystonemiddleware (paste flavor keystone).
    authtoken: dict[str, str] | None = None
    #: Serve each api through HAProxy with a certificate of this authority.
    tls: Authority | None = None
    log: Log = _stderr
    apis: list[Api] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def etc(self) -> Path:
        return self.directory / "etc"

    def configure(self) -> None:
        """Write the config from the templates, then the database schema (db_sync)."""
        for sub in ("etc", "images", "staging", "tasks", "locks", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        for name in TEMPLATES:
            text = (HERE / name).read_text().replace("@RUN_DIR@", str(self.directory))
            (self.etc / name).write_text(text)
        conf = self.etc / "glance-api.conf"
        extra: list[str] = []
        if self.protections:
            extra += [
                "[DEFAULT]",
                f"property_protection_file = {self.etc / 'property-protections.conf'}",
                "property_protection_rule_format = roles",
            ]
        if self.authtoken is not None:
            extra += ["[paste_deploy]", "flavor = keystone", "[keystone_authtoken]"]
            extra += [f"{key} = {value}" for key, value in self.authtoken.items()]
        if self.tls is not None:
            # HAProxy says the scheme in X-Forwarded-Proto: Glance's links are then https
            extra += ["[oslo_middleware]", "enable_proxy_headers_parsing = true"]
        if self.transport_url:
            extra += [
                "[oslo_messaging_notifications]",
                "driver = messagingv2",
                f"transport_url = {self.transport_url}",
            ]
        if self.import_plugins:
            names = ", ".join(f"'{name}'" for name in self.import_plugins)
            (self.etc / "glance-image-import.conf").write_text(
                f"[image_import_opts]\nimage_import_plugins = [{names}]\n"
            )
            self._plugin_site()
        # oslo.config merges repeated sections, so the additions can simply follow the template.
        with conf.open("a") as out:
            out.write("\n" + "\n".join(extra) + "\n")
        started = time.monotonic()
        _run(
            [self.venv / "bin" / "glance-manage", "--config-file", conf, "db_sync"],
            self.directory / "log" / "db_sync.log",
            "glance-manage db_sync",
        )
        self.timings["db_sync"] = time.monotonic() - started

    def _plugin_site(self) -> None:
        """Make the import plugin importable in Glance's process: the work tree on the path, and
        a dist-info that registers its entry point, read from pyproject when it declares one."""
        site = self.directory / "plugin-site"
        info = site / "introspect_glance_peer-0.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: introspect-glance-peer\nVersion: 0\n")
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        declared = project.get("entry-points", {}).get(PLUGIN_GROUP, {})
        lines = [f"{name} = {target}" for name, target in declared.items()] or [PLUGIN_ENTRY]
        (info / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\n" + "\n".join(lines) + "\n")

    def start_api(
        self, port: int = 0, *, plugin_options: dict[str, str] | None = None, api_config: str | None = None
    ) -> Api:
        """Start one glance-api and wait until GET /versions answers. For this process alone (a
        copy of etc/ of its own, `Api.etc`; the database and stores stay shared):
        `plugin_options`, the introspect import plugin's `[introspect]` options, e.g.
        {"enforce": "true"}; `api_config`, sections appended to its glance-api.conf (a later
        value of an option wins), e.g. its own notification transport."""
        port = port or free_port()
        etc = self.etc
        if plugin_options is not None or api_config is not None:
            etc = self.directory / f"etc-{port}"
            shutil.copytree(self.etc, etc, dirs_exist_ok=True)
        if plugin_options is not None:
            options = "".join(f"{key} = {value}\n" for key, value in plugin_options.items())
            with (etc / "glance-image-import.conf").open("a") as out:
                out.write(f"[introspect]\n{options}")
        if api_config is not None:
            with (etc / "glance-api.conf").open("a") as out:
                out.write(f"\n{api_config}\n")
        ini = etc / f"glance-uwsgi-{port}.ini"
        ini.write_text((self.etc / "glance-uwsgi.ini").read_text().replace("@PORT@", str(port)))
        env = {**os.environ, "OS_GLANCE_CONFIG_DIR": str(etc)}
        env.pop("PYTHONPATH", None)
        if self.import_plugins:
            env["PYTHONPATH"] = f"{self.directory / 'plugin-site'}{os.pathsep}{ROOT}"
        log_file = self.directory / "log" / f"uwsgi-{port}.log"
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        process = spawn_uwsgi(self.venv, ini, env, log_file)
        api = Api(url=url, port=port, process=process, log_file=log_file, etc=etc)
        self.apis.append(api)
        wait_answering(
            f"{url}/versions",
            (200, 300),
            what="glance-api",
            process=process,
            log_file=log_file,
            give_up=api.kill,
        )
        if self.tls is not None:
            api.front = Front.start(self.directory / "log", free_port(), port, self.tls.server_pem)
            api.url = api.front.url
        self.timings.setdefault("api_start", time.monotonic() - started)
        return api

    def stop(self) -> None:
        for api in self.apis:
            api.stop()

    def glance_log(self) -> str:
        path = self.directory / "log" / "glance-api.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def deployment(directory: Path, **options: object) -> Iterator[Deployment]:
    """A configured deployment with one api started; everything stopped on the way out."""
    venv = build_venv()
    peer = Deployment(directory, venv, **options)  # type: ignore[arg-type]
    peer.configure()
    try:
        peer.start_api()
        yield peer
    finally:
        peer.stop()
