"""The notification transport configured as Glance's: what oslo.messaging makes of our settings
and of glance-api.conf, and the listener against real Glance API processes whose notifications
are durable, or on quorum queues reached through a transport URL of two hosts, one of which dies
(the real RabbitMQ, in the session's vhost; each API process on an exchange of its own)."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from tests.glance.fixtures import RABBIT, Admin, Running, rabbitmqctl, settle
from tests.glance.peer import ADMIN, Api, Deployment
from tests.glance.proxy import proxies
from tests.workers.services import INTROSPECT, process_env
from workers.errors import MessagingError
from workers.glance.cli import glance_group
from workers.glance.client import GlanceClient, HeaderIdentity
from workers.glance.listener import Listener
from workers.glance.messaging import messaging, transport
from workers.glance.settings import GlanceSettings, get_glance_settings
from workers.pipeline import State

IDENTITY = HeaderIdentity(["admin"], "0" * 31 + "a", "introspect")


def test_a_url_of_two_hosts_with_encoded_credentials_is_oslo_messagings_to_parse() -> None:
    chosen = messaging(
        GlanceSettings(
            transport_url="rabbit://intro%40spect:p%40ss%3Aw%2Crd@127.0.0.1:5999,"
            "other:s%3Acret%40%3A1@localhost:5672/v%2Fhost"
        )
    )
    hosts = [(host.hostname, host.port, host.username, host.password) for host in chosen.url.hosts]
    assert hosts == [
        ("127.0.0.1", 5999, "intro@spect", "p@ss:w,rd"),
        ("localhost", 5672, "other", "s:cret@:1"),
    ]
    assert chosen.url.virtual_host == "v/host"
    assert chosen.masked_url == "rabbit://intro@spect:***@127.0.0.1:5999,other:***@localhost:5672/v/host"


def test_glance_api_conf_gives_the_options_and_settings_override_them(tmp_path: Path) -> None:
    conf = tmp_path / "glance-api.conf"
    conf.write_text(
        "[DEFAULT]\ncontrol_exchange = images\n"
        "[oslo_messaging_notifications]\ntransport_url = rabbit://glance:g@rabbit-1:5672,glance:g@rabbit-2:5672/\n"
        "topics = notifications, notifications_designate\n"
        "[oslo_messaging_rabbit]\namqp_durable_queues = true\nrabbit_quorum_queue = true\n"
        "heartbeat_timeout_threshold = 20\n"
    )
    chosen = messaging(GlanceSettings(messaging_config=conf))
    rabbit = chosen.conf.oslo_messaging_rabbit
    assert (rabbit.amqp_durable_queues, rabbit.rabbit_quorum_queue, rabbit.heartbeat_timeout_threshold) == (
        True,
        True,
        20,
    )
    assert [host.hostname for host in chosen.url.hosts] == ["rabbit-1", "rabbit-2"]
    assert (chosen.exchange, chosen.topic, chosen.pool) == ("images", "notifications", "introspect-glance")
    mine = messaging(
        GlanceSettings(
            messaging_config=conf,
            transport_url="rabbit://introspect:i@rabbit-1:5672/",
            quorum_queues=False,
            topic="notifications_designate",
        ),
        queue="mine",
    )
    rabbit = mine.conf.oslo_messaging_rabbit
    assert (rabbit.amqp_durable_queues, rabbit.rabbit_quorum_queue) == (True, False)
    assert [host.username for host in mine.url.hosts] == ["introspect"]
    assert (mine.topic, mine.pool) == ("notifications_designate", "mine")
    # nothing set: oslo.messaging's defaults and Glance's exchange
    bare = messaging(GlanceSettings())
    assert (bare.exchange, bare.topic, bare.masked_url) == (
        "glance",
        "notifications",
        "rabbit://guest:***@localhost:5672/",
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"messaging_config": "/nonexistent/glance-api.conf"}, "Failed to find some config files"),
        (
            {"messaging_config": "BAD_VALUE"},
            "amqp_durable_queues .* is not valid: Unexpected boolean value 'maybe'",
        ),
        ({"messaging_config": "BAD_SYNTAX"}, "Failed to parse"),
        ({"transport_url": "rabbit://guest:guest@localhost:notaport/"}, "cannot be used: invalid literal"),
        ({"transport_url": "127.0.0.1:5672"}, "cannot be used"),
        ({"transport_url": "amqp://guest:guest@localhost:5672//"}, "no driver 'amqp'.*start with rabbit://"),
        (
            {"transport_url": "rabbit://u:p%2Fq@localhost:5672/"},
            "a `/` in a user name or password cannot be used",
        ),
    ],
)
def test_settings_oslo_messaging_refuses_are_one_line(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    contents = {"BAD_VALUE": "[oslo_messaging_rabbit]\namqp_durable_queues = maybe\n", "BAD_SYNTAX": "[x\n"}
    if settings.get("messaging_config") in contents:
        path = tmp_path / "glance-api.conf"
        path.write_text(contents[settings["messaging_config"]])
        settings = {"messaging_config": str(path)}
    with pytest.raises(MessagingError, match=message) as refused:
        transport(messaging(GlanceSettings(**settings)))  # type: ignore[arg-type]
    assert "\n" not in str(refused.value)


def test_listen_says_what_is_wrong_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "INTROSPECT_GLANCE_MESSAGING_CONFIG": "/nonexistent/glance-api.conf",
        "INTROSPECT_GLANCE_QUORUM_QUEUES": "yes",
    }.items():
        monkeypatch.setenv(name, value)
    get_glance_settings.cache_clear()
    try:
        result = CliRunner().invoke(glance_group, ["listen"])
        assert result.exit_code == 1
        assert result.output.splitlines() == [
            "Error: the notification settings (/nonexistent/glance-api.conf) cannot be used: "
            "Failed to find some config files: /nonexistent/glance-api.conf"
        ]
        monkeypatch.setenv("INTROSPECT_GLANCE_DURABLE_QUEUES", "maybe")
        get_glance_settings.cache_clear()
        result = CliRunner().invoke(glance_group, ["listen"])
        assert result.exit_code == 1
        assert result.output.splitlines() == [
            "Error: INTROSPECT_GLANCE_DURABLE_QUEUES: Input should be a valid boolean, unable to interpret input"
        ]
    finally:
        get_glance_settings.cache_clear()


#: The extra glance-api processes: name -> their `[oslo_messaging_rabbit]` options.
MODES = {"durable": {"amqp_durable_queues": "true"}, "quorum": {"rabbit_quorum_queue": "true"}}


@pytest.fixture(scope="module")
def mode_apis(glance: Deployment, rabbit_vhost: str) -> Iterator[dict[str, Api]]:
    """One more glance-api process of the session's Glance for each of MODES, started together
    (each start is ~2 s of Glance importing itself), each sending its notifications to the
    session's vhost with its options, on an exchange (`glance-NAME`) and topic (`NAME`) of its own
    so that its declarations never meet the other processes'."""

    def start(name: str) -> Api:
        options = "".join(f"{key} = {value}\n" for key, value in MODES[name].items())
        return glance.start_api(
            api_config=f"[DEFAULT]\ncontrol_exchange = glance-{name}\n"
            f"[oslo_messaging_notifications]\ntopics = {name}\n[oslo_messaging_rabbit]\n{options}"
        )

    with ThreadPoolExecutor(len(MODES)) as pool:
        futures = {name: pool.submit(start, name) for name in MODES}
    started = {name: future.result() for name, future in futures.items()}
    try:
        yield started
    finally:
        for api in started.values():
            api.kill()  # nothing in flight: no need to wait for a graceful stop
            glance.apis.remove(api)


def queues(transport_url: str) -> dict[str, list[str]]:
    """What RabbitMQ says of the queues of a vhost: name -> [durable, type]."""
    vhost = transport_url.rsplit("/", 1)[1]
    listed = rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "durable", "type")
    return {row.split("\t")[0]: row.split("\t")[1:] for row in listed.splitlines() if row.strip()}


@pytest.mark.glance
def test_glance_with_durable_queues(
    mode_apis: dict[str, Api], rabbit_vhost: str, images: dict[str, Path]
) -> None:
    """Glance's amqp_durable_queues: the old listener's mistake (declaring the exchange
    non-durable) is refused with one line saying what to set; with INTROSPECT_GLANCE_DURABLE_QUEUES
    (and the exchange and topic set), the listener sees an upload and writes back."""
    api = mode_apis["durable"]
    admin = Admin(api.url, dict(ADMIN))
    admin.uploaded(images["disk.vhd"])  # Glance declares its exchange on its first notification
    target = {"transport_url": rabbit_vhost, "exchange": "glance-durable", "topic": "durable"}
    with GlanceClient([api.url], IDENTITY) as client:
        with pytest.raises(MessagingError, match=r"PRECONDITION_FAILED.*INTROSPECT_GLANCE_DURABLE_QUEUES"):
            queue = f"introspect-test-{uuid.uuid4().hex[:8]}"
            Listener(client, lambda image_id: None).consume(messaging(GlanceSettings(**target, queue=queue)))
        with Running(client, **target, durable_queues=True) as running:
            image_id = admin.uploaded(images["ide.vmdk"])
            settle(running, lambda: running.outcomes_for(image_id))
            assert running.outcomes_for(image_id) == [State.INSPECTED]
    assert admin.get(image_id)["vmware_adaptertype"] == "ide"
    declared = queues(rabbit_vhost)
    # Glance's default queue and ours, both durable as the exchange (which RabbitMQ's refusal said)
    assert (declared["durable.info"], declared[running.queue]) == (["true", "classic"], ["true", "classic"])


@pytest.fixture
def special_user(rabbit_vhost: str) -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of the session's vhost whose name and password hold `@`, `:` and `,`."""
    user, password = f"intro@spect-{uuid.uuid4().hex[:6]}", "p@ss:w,rd:1"
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", rabbit_vhost.rsplit("/", 1)[1], user, ".*", ".*", ".*")
        yield user, password
    finally:
        rabbitmqctl("delete_user", user)


@pytest.mark.glance
def test_listen_as_glance_with_quorum_queues_fails_over_between_two_hosts_and_stops_on_sigterm(
    mode_apis: dict[str, Api], rabbit_vhost: str, images: dict[str, Path], special_user: tuple[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The real `introspect glance listen --inline` beside a Glance with `rabbit_quorum_queue`:
    INTROSPECT_GLANCE_MESSAGING_CONFIG names that Glance's glance-api.conf (the quorum option,
    exchange and topic are Glance's), and INTROSPECT_GLANCE_TRANSPORT_URL a user of our own on
    two hosts (two proxies to the RabbitMQ; name and password percent-encoded). The host it is
    connected to dies (oslo.messaging shuffles the hosts: which one is read from the proxies);
    it reconnects to the other, inspects the next upload, and ends on SIGTERM with status 0."""
    user, password = (quote(part, safe="") for part in special_user)
    vhost = rabbit_vhost.rsplit("/", 1)[1]
    log = tmp_path / "listen.log"
    queue = f"introspect-test-{uuid.uuid4().hex[:8]}"
    api = mode_apis["quorum"]
    with proxies(("127.0.0.1", int(RABBIT.rsplit(":", 1)[1])), 2) as hosts:
        admin = Admin(api.url, dict(ADMIN))
        url = ",".join(f"{user}:{password}@127.0.0.1:{host.port}" for host in hosts)
        env = process_env(
            INTROSPECT_GLANCE_MESSAGING_CONFIG=str(api.etc / "glance-api.conf"),
            INTROSPECT_GLANCE_TRANSPORT_URL=f"rabbit://{url}/{vhost}",
            INTROSPECT_GLANCE_QUEUE=queue,
            INTROSPECT_GLANCE_ENDPOINTS=api.url,
            INTROSPECT_GLANCE_AUTH="headers",
            INTROSPECT_GLANCE_CACHE_MAX_BYTES="0",
        )
        command = [*INTROSPECT, "glance", "listen", "--inline", "--log-file", str(log)]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for(lambda: "listening on" in read(log), process, "the listener did not start")
            [connected] = [host for host in hosts if host.carried]
            connected.down()
            image_id = admin.uploaded(images["sparse.vmdk"])
            wait_for(
                lambda: "introspect_written" in admin.get(image_id), process, "the image was not inspected"
            )
            assert [host.carried for host in hosts if host is not connected] == [1]
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, err
        assert admin.get(image_id)["vmware_disktype"] == "sparse"
    text = read(log)
    assert "exchange glance-quorum key quorum.info" in text
    assert f"rabbit://{special_user[0]}:***@127.0.0.1:" in text and special_user[1] not in text
    assert "stopped listening" in text
    declared = queues(rabbit_vhost)
    # Glance's default queue (declared as it sent the upload's notifications) and ours
    assert (declared["quorum.info"], declared[queue]) == (["true", "quorum"], ["true", "quorum"])


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def wait_for(done: object, process: subprocess.Popen[str], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"{what}: `glance listen` exited {process.returncode}: {err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} in {timeout:.0f} s")
        time.sleep(0.05)
