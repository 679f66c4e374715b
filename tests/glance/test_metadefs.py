"""The vocabulary against the real Glance 33.0.0: its vendored Glance enums are what the metadefs
files the Glance venv installs say, the namespace `introspect metadefs` prints loads through
Glance's metadefs API and reads back whole, and what introspect writes to a Glance image is in
it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from introspect.cli import main
from introspect.vocabulary import KEYS, PROPERTIES, SOURCES, check
from tests.glance.fixtures import Admin, inspect_now
from tests.glance.peer import build_venv
from workers.glance.catalog import GlanceCatalog
from workers.pipeline import State

pytestmark = pytest.mark.glance

GLANCE_SOURCES = sorted(
    (key, source["file"])
    for key, entry in PROPERTIES.items()
    for source in entry["sources"]
    if source["from"] == "glance"
)


@pytest.fixture(scope="module")
def metadefs() -> Path:
    """The metadefs directory of the Glance venv the harness builds (`make glance-venv`)."""
    venv = build_venv()
    directory = venv / "etc" / "glance" / "metadefs"
    assert directory.is_dir(), f"{venv} has no etc/glance/metadefs: rebuild it with `make glance-venv`"
    return directory


def _glance_property(metadefs: Path, file: str, key: str) -> tuple[str, dict[str, Any]]:
    document = json.loads((metadefs / Path(file).name).read_text())
    properties = dict(document.get("properties", {}))
    for obj in document.get("objects", []):
        properties.update(obj.get("properties", {}))
    assert key in properties, f"{file} no longer describes {key}"
    return document["namespace"], properties[key]


def test_the_glance_venv_is_the_release_the_vocabulary_cites(metadefs: Path) -> None:
    venv = metadefs.parents[2]
    assert SOURCES["glance"]["release"] in venv.name
    assert list(venv.glob(f"lib/python3*/site-packages/glance-{SOURCES['glance']['release']}.dist-info"))


@pytest.mark.parametrize(("key", "file"), GLANCE_SOURCES, ids=lambda item: str(item))
def test_vendored_glance_enums_are_what_the_metadefs_files_say(metadefs: Path, key: str, file: str) -> None:
    source = next(s for s in PROPERTIES[key]["sources"] if s["from"] == "glance" and s["file"] == file)
    namespace, definition = _glance_property(metadefs, file, key)
    assert source["namespace"] == namespace
    assert source["enum"] == definition.get("enum"), f"{file} changed {key}'s enum: update vocabulary.json"


#: Keys whose accepted values go beyond Glance's enum, and why.
BEYOND_GLANCE = {"vmware_ostype": "Nova's VALID_OS_TYPES lists four vSphere guest ids the metadefs lack"}


@pytest.mark.parametrize(
    "key",
    sorted(k for k in KEYS if any(s["from"] == "glance" and s["enum"] for s in PROPERTIES[k]["sources"])),
)
def test_what_introspect_accepts_is_what_glance_lists(key: str) -> None:
    listed = set().union(*(set(s["enum"] or ()) for s in PROPERTIES[key]["sources"] if s["from"] == "glance"))
    if key in BEYOND_GLANCE:
        assert listed < set(PROPERTIES[key]["enum"])
    else:
        assert set(PROPERTIES[key]["enum"]) == listed


def test_nova_guest_ids_are_a_superset_of_glances(metadefs: Path) -> None:
    _, definition = _glance_property(metadefs, "compute-vmware.json", "vmware_ostype")
    assert set(definition["enum"]) < set(PROPERTIES["vmware_ostype"]["enum"])


@pytest.fixture
def loaded(admin: Admin) -> Iterator[tuple[str, dict[str, Any]]]:
    """The printed namespace, under a name of this test's own, loaded by an admin; unprotected
    and deleted afterwards."""
    name = f"OS::Introspect::Test{uuid.uuid4().hex[:8]}"
    printed = CliRunner().invoke(main, ["metadefs", "--namespace", name])
    assert printed.exit_code == 0, printed.output
    document = json.loads(printed.stdout)
    created = admin.call("POST", "/v2/metadefs/namespaces", json=document)
    assert created.status_code == 201, created.text
    try:
        yield name, document
    finally:
        unprotect = admin.call(
            "PUT", f"/v2/metadefs/namespaces/{name}", json={"namespace": name, "protected": False}
        )
        assert unprotect.status_code == 200, unprotect.text
        assert admin.call("DELETE", f"/v2/metadefs/namespaces/{name}").status_code == 204


def test_the_namespace_loads_into_glance_and_reads_back_whole(
    admin: Admin, member: Admin, loaded: tuple[str, dict[str, Any]]
) -> None:
    name, document = loaded
    shown = admin.call("GET", f"/v2/metadefs/namespaces/{name}")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert (body["display_name"], body["visibility"], body["protected"]) == (
        document["display_name"],
        "public",
        True,
    )
    assert [a["name"] for a in body["resource_type_associations"]] == ["OS::Glance::Image"]
    assert set(body["properties"]) == set(document["properties"]) == KEYS - {"disk_format"}
    for key, sent in document["properties"].items():
        stored = body["properties"][key]
        assert {field: stored.get(field) for field in sent} == sent, key
    assert body["properties"]["vmware_disktype"]["enum"] == ["streamOptimized", "sparse", "preallocated"]
    assert "buslogic" not in body["properties"]["hw_scsi_model"]["enum"]
    # one property on its own, and the namespace listed for images, to anyone (it is public)
    one = member.call("GET", f"/v2/metadefs/namespaces/{name}/properties/vmware_adaptertype")
    assert one.status_code == 200, one.text
    assert one.json()["enum"] == PROPERTIES["vmware_adaptertype"]["enum"]
    listed = member.call("GET", "/v2/metadefs/namespaces", params={"resource_types": "OS::Glance::Image"})
    assert listed.status_code == 200, listed.text
    assert name in {n["namespace"] for n in listed.json()["namespaces"]}


def test_a_member_cannot_load_it(member: Admin) -> None:
    document = json.loads(
        CliRunner().invoke(main, ["metadefs", "--namespace", "OS::Introspect::Nope"]).stdout
    )
    assert member.call("POST", "/v2/metadefs/namespaces", json=document).status_code == 403


def test_what_introspect_writes_to_glance_is_in_the_namespace(
    admin: Admin, catalog: GlanceCatalog, images: dict[str, Path], loaded: tuple[str, dict[str, Any]]
) -> None:
    """Inspect real uploads (BusLogic and IDE VMDKs, a qcow2) through the service's Glance path:
    every property introspect wrote passes the vocabulary, and is within the enum Glance stored."""
    name, _ = loaded
    stored = admin.call("GET", f"/v2/metadefs/namespaces/{name}").json()["properties"]
    for file in ("buslogic.vmdk", "ide.vmdk", "sparse.vmdk", "disk.qcow2"):
        image_id = admin.uploaded(images[file])
        assert inspect_now(catalog, image_id).state == State.INSPECTED
        image = admin.get(image_id)
        ours = {key: value for key, value in image.items() if key in KEYS and key != "disk_format"}
        assert ours["introspect_verdict"] == "ok"
        for key, value in ours.items():
            assert check(key, value) is None, check(key, value)
            assert value in stored[key].get("enum", [value]), (key, value)
        if file == "buslogic.vmdk":
            assert (image["vmware_adaptertype"], image["hw_disk_bus"]) == ("busLogic", "scsi")
            assert "hw_scsi_model" not in image
        admin.delete(image_id)
