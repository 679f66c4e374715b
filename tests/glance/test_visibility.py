"""Every image an admin may see is reached: `glance sync`, the Glance catalog's re-run selection
and the audit list public images, other projects' private, shared and community images, and
hidden ones (`os_hidden`), each once; a plain `GET /v2/images` shows an admin neither of the last
two kinds, which is why the client lists with `visibility=all`, hidden and not."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.glance.fixtures import THROUGH_BOTH, Admin, Peer, inspect_now
from workers.catalog import Selection
from workers.glance.catalog import GlanceCatalog
from workers.glance.client import GlanceClient
from workers.glance.sync import sync_pass

pytestmark = [pytest.mark.glance, THROUGH_BOTH]

#: A project that is neither the admin's nor the member's: the shared image's invited member.
OTHER_PROJECT = "b" * 32

#: kind -> (who creates it: admin or member, what the create request says besides name and formats)
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "public": ("admin", {"visibility": "public"}),
    "private": ("member", {"visibility": "private"}),
    "shared": ("member", {"visibility": "shared"}),
    "community": ("member", {"visibility": "community"}),
    "hidden": ("member", {"visibility": "private", "os_hidden": True}),
    "hidden-community": ("member", {"visibility": "community", "os_hidden": True}),
}


@dataclass
class Made:
    since: str
    ids: dict[str, str]  # kind -> image id


def create(person: Admin, name: str, body: dict[str, Any]) -> str:
    # declared raw, with qcow2 data: Glance accepts it, and the audit must list it
    response = person.call(
        "POST", "/v2/images", json={"name": name, "disk_format": "raw", "container_format": "bare", **body}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def made(peer: Peer, images: dict[str, Path]) -> Made:
    """One image of each kind, with data; `since` is a second before the first was made."""
    people = {"admin": peer.admin, "member": peer.member}
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.1)  # Glance's updated_at has one-second resolution
    ids = {}
    for kind, (who, body) in KINDS.items():
        person = people[who]
        image_id = create(person, f"visibility-{kind}-{uuid.uuid4().hex[:6]}", body)
        person.upload(image_id, images["disk.qcow2"])
        ids[kind] = image_id
    invited = people["member"].call(
        "POST", f"/v2/images/{ids['shared']}/members", json={"member": OTHER_PROJECT}
    )
    assert invited.status_code == 200, invited.text  # pending: not even accepted
    return Made(since, ids)


def test_a_plain_listing_hides_hidden_and_other_projects_community_images(admin: Admin, made: Made) -> None:
    """What Glance 33 does, and the reason for the client's listings."""
    listed = admin.call("GET", "/v2/images", params={"limit": "1000", "created_at": f"gte:{made.since}"})
    assert listed.status_code == 200, listed.text
    plain = {image["id"] for image in listed.json()["images"]}
    assert {kind for kind, image_id in made.ids.items() if image_id in plain} == {
        "public",
        "private",
        "shared",
    }


def test_the_client_lists_every_image_of_every_visibility_once(client: GlanceClient, made: Made) -> None:
    listed = [image["id"] for image in client.iter_images(created_at=f"gte:{made.since}")]
    assert len(listed) == len(set(listed))
    assert set(made.ids.values()) <= set(listed)
    hidden = {image["id"] for image in client.iter_images(os_hidden="true", created_at=f"gte:{made.since}")}
    assert {kind for kind, image_id in made.ids.items() if image_id in hidden} == {
        "hidden",
        "hidden-community",
    }


def test_sync_dispatches_every_kind(client: GlanceClient, made: Made) -> None:
    dispatched: list[str] = []
    result = sync_pass(client, lambda image: dispatched.append(str(image["id"])), since=made.since)
    assert set(made.ids.values()) <= set(dispatched)
    assert len(dispatched) == len(set(dispatched)) == result.dispatched


def test_reruns_and_the_audit_reach_every_kind(client: GlanceClient, made: Made) -> None:
    catalog = GlanceCatalog(client)
    wanted = {uuid.UUID(image_id) for image_id in made.ids.values()}
    selected = [image_id for page in catalog.select_ids(Selection(all=True), batch=50) for image_id in page]
    assert wanted <= set(selected) and len(selected) == len(set(selected))
    assert wanted <= {
        image_id for page in catalog.select_ids(Selection(formats=["raw"])) for image_id in page
    }
    for image_id in made.ids.values():
        inspect_now(catalog, image_id)
    audited = {record.id: record.mismatches for record in catalog.mismatched()}
    for kind, image_id in made.ids.items():
        assert "disk_format raw but the content is qcow2" in audited.get(uuid.UUID(image_id), []), kind
