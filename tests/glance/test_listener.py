"""The listener on Glance's real notifications (RabbitMQ, a vhost of this session's own): each
image is inspected once per change of its data, however many events arrive."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

import introspect
from tests.glance.fixtures import Admin, Running, settle
from tests.glance.peer import Api
from tests.glance.proxy import Proxy, proxies
from workers.glance.client import GlanceClient, HeaderIdentity
from workers.glance.listener import BadNotification, Event, event, trigger
from workers.glance.ownership import Marker, desired_properties
from workers.pipeline import State


def envelope(event_type: object, payload: object, message: str | None = None) -> bytes:
    """The oslo.messaging v2 envelope, as Glance's messagingv2 driver sends it (`message`: an
    inner message of one's own)."""
    inner = {"message_id": "m", "publisher_id": "image.localhost", "event_type": event_type,
             "priority": "INFO", "payload": payload, "timestamp": "2026-11-29 15:46:30.453491"}  # fmt: skip
    return json.dumps({"oslo.version": "2.0", "oslo.message": message or json.dumps(inner)}).encode()


def test_event_from_what_oslo_messaging_hands_the_endpoint() -> None:
    assert event("image.update", {"id": "i", "status": "active"}) == Event(
        "image.update", {"id": "i", "status": "active"}
    )
    assert event("image.send", ["not", "an", "object"]) == Event("image.send", {})
    for bad in (None, "", 3):
        with pytest.raises(BadNotification, match="no event type"):
            event(bad, {})


@pytest.mark.parametrize(
    ("event_type", "payload", "wanted"),
    [
        ("image.update", {"id": "i", "status": "active", "checksum": "c", "properties": {}}, ("i", "c")),
        ("image.update", {"id": "i", "status": "saving", "properties": {}}, None),
        # an import still holds the image: its last updates carry the lock
        ("image.update", {"id": "i", "status": "active", "properties": {"os_glance_import_task": "t"}}, None),
        (
            "image.update",
            {"id": "i", "status": "active", "properties": {"os_glance_importing_to_stores": "fs"}},
            None,
        ),
        # sent before Glance saves the image as active: never acted on
        ("image.activate", {"id": "i", "status": "active"}, None),
        ("image.upload", {"id": "i", "status": "active"}, None),
        ("task.success", {"id": "t", "type": "api_image_import"}, "t"),
        ("task.run", {"id": "t", "type": "api_image_import"}, "t"),
        ("task.failure", {"id": "t", "type": "api_image_import"}, None),
        ("image.send", {"image_id": "i", "bytes_sent": 512}, None),
    ],
)
def test_which_events_trigger(event_type: str, payload: dict[str, object], wanted: object) -> None:
    found = trigger(Event(event_type, payload))
    if wanted is None:
        assert found is None
    elif isinstance(wanted, tuple):
        assert found is not None and (found.image_id, found.checksum) == wanted
    else:
        assert found is not None and found.task_id == wanted


@pytest.fixture(scope="module")
def glance_proxy(api: Api) -> Iterator[Proxy]:
    """The way from the module's listener to Glance's API, which a test can take down."""
    with proxies(("127.0.0.1", api.port), 1) as [proxy]:
        yield proxy


@pytest.fixture(scope="module")
def running(glance_proxy: Proxy, rabbit_vhost: str, glance: object) -> Iterator[Running]:
    """One listener for the tests of this module (each stop waits for oslo.messaging's poll,
    ~1.4 s; and a second listener would see the same notifications), its client as the service's
    (admin role, two tries of each request) through `glance_proxy`."""
    identity = HeaderIdentity(["admin"], "0" * 31 + "a", "introspect")
    endpoint = f"http://127.0.0.1:{glance_proxy.port}"
    with GlanceClient([endpoint], identity, attempts=2) as client, Running(client, rabbit_vhost) as started:
        yield started
    assert not started.errors, started.errors


@pytest.mark.glance
def test_upload_is_inspected_once(running: Running, images: dict[str, Path], admin: Admin) -> None:
    path = images["sparse.vmdk"]
    image_id = admin.uploaded(path)
    settle(running, lambda: running.outcomes_for(image_id))
    assert running.outcomes_for(image_id) == [State.INSPECTED]
    image = admin.get(image_id)
    want = desired_properties(introspect.inspect(path))
    assert {key: image.get(key) for key in want} == want
    # an admin's edits send image.update events with the same data: nothing is inspected again
    for value in ("ide", "buslogic"):
        assert (
            admin.patch(image_id, [{"op": "add", "path": "/vmware_adaptertype", "value": value}]).status_code
            == 200
        )
    assert admin.call("PUT", f"/v2/images/{image_id}/tags/x").status_code == 204
    time.sleep(0.5)
    assert running.outcomes_for(image_id) == [State.INSPECTED]
    assert admin.get(image_id)["vmware_adaptertype"] == "buslogic"


@pytest.mark.glance
def test_import_is_inspected_once_after_the_flow_ends(
    running: Running, images: dict[str, Path], admin: Admin
) -> None:
    image_id = admin.imported(images["ide.vmdk"])
    settle(
        running,
        lambda: (
            State.INSPECTED in running.outcomes_for(image_id)
            or State.SKIPPED in running.outcomes_for(image_id)
        ),
    )
    states = running.outcomes_for(image_id)
    assert states.count(State.INSPECTED) == 1, states  # task.success and task.run: one inspection
    image = admin.get(image_id)
    assert Marker.read(image).data == image["checksum"]  # type: ignore[union-attr]
    assert image["vmware_adaptertype"] == "ide"
    assert running.inline.pending == 0


def publish(transport_url: str, *bodies: bytes) -> None:
    """Raw messages on Glance's exchange with Glance's routing key, as any publisher on the broker
    could send them (kombu, beside the code under test)."""
    with kombu.Connection("amqp://" + transport_url.removeprefix("rabbit://")) as connection:
        producer = connection.Producer()
        for body in bodies:
            producer.publish(
                body,
                exchange="glance",
                routing_key="notifications.info",
                content_type="application/json",
                content_encoding="utf-8",
            )


@pytest.mark.glance
def test_bad_messages_are_dropped_and_the_listener_goes_on(
    running: Running,
    rabbit_vhost: str,
    images: dict[str, Path],
    admin: Admin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publish(
        rabbit_vhost,
        b"{not JSON",  # oslo.messaging cannot decode it: it logs and rejects it
        envelope("image.update", {}, message="{not JSON either"),
        envelope(None, {"id": "x"}),  # decoded, but no event type: our endpoint drops it
        envelope("image.update", ["a", "list"]),  # a payload that is not an object: no trigger
    )
    image_id = admin.uploaded(images["lsilogic.vmdk"])
    settle(running, lambda: running.outcomes_for(image_id))
    assert running.outcomes_for(image_id) == [State.INSPECTED]
    assert admin.get(image_id)["vmware_adaptertype"] == "lsiLogic"
    dropped = [r.getMessage() for r in caplog.records if r.name == "workers.glance.listener"]
    assert any("dropped a notification" in line and "no event type" in line for line in dropped), dropped
    rejected = [r for r in caplog.records if r.name.startswith("oslo.messaging") and r.levelname == "ERROR"]
    assert len(rejected) == 2, [r.getMessage() for r in rejected]  # the two it could not decode
    assert not running.errors and running.thread.is_alive()


@pytest.mark.glance
def test_a_change_that_cannot_be_acted_on_comes_back(
    running: Running,
    glance_proxy: Proxy,
    images: dict[str, Path],
    admin: Admin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Glance unreachable from the listener when the upload's notification arrives: the message
    goes back to the queue, and once Glance answers again the image is inspected, once."""
    glance_proxy.down()
    try:
        image_id = admin.uploaded(images["buslogic.vmdk"])

        def requeued() -> bool:
            return any("goes back to the queue" in r.getMessage() for r in caplog.records)

        settle(running, requeued)
        assert running.outcomes_for(image_id) == []
    finally:
        glance_proxy.up = True
    settle(running, lambda: running.outcomes_for(image_id))
    assert running.outcomes_for(image_id) == [State.INSPECTED]
    assert admin.get(image_id)["vmware_adaptertype"] == "busLogic"
