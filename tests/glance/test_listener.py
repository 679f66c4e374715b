"""The listener on Glance's real notifications (RabbitMQ, a vhost of this session's own): each
image is inspected once per change of its data, however many events arrive."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import introspect
from tests.glance.fixtures import Admin, Running, settle
from workers.glance.client import GlanceClient
from workers.glance.listener import BadNotification, Event, amqp_url, decode, mask, trigger
from workers.glance.ownership import Marker, desired_properties
from workers.pipeline import State


def envelope(event_type: str, payload: dict[str, object]) -> bytes:
    """The oslo.messaging v2 envelope, as Glance's messagingv2 driver sends it."""
    message = {"message_id": "m", "publisher_id": "image.localhost", "event_type": event_type,
               "priority": "INFO", "payload": payload, "timestamp": "2026-11-29 15:46:30.453491"}  # fmt: skip
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


def test_decode_the_envelope() -> None:
    event = decode(envelope("image.update", {"id": "i", "status": "active"}))
    assert event == Event("image.update", {"id": "i", "status": "active"})
    assert (
        decode({"event_type": "image.create", "payload": {}}).event_type == "image.create"
    )  # v1, no envelope
    for bad, message in [(b"[1]", "not a JSON object"), (b"{", "not JSON"), (b'{"oslo.message": "{"}', "not JSON text"),
                         (b"{}", "no event_type")]:  # fmt: skip
        with pytest.raises(BadNotification, match=message):
            decode(bad)


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


def test_transport_url_and_mask() -> None:
    assert amqp_url("rabbit://guest:guest@127.0.0.1:5672/v") == "amqp://guest:guest@127.0.0.1:5672/v"
    assert mask("amqp://guest:secret@host:5672/v") == "amqp://guest:***@host:5672/v"


@pytest.fixture
def running(api: object, client: GlanceClient, rabbit_vhost: str, glance: object) -> Iterator[Running]:
    started = Running(client, rabbit_vhost)
    started.thread.start()
    assert started.ready.wait(10), "the listener did not start consuming"
    assert not started.errors, started.errors
    yield started
    started.stop.set()
    started.thread.join(10)
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
