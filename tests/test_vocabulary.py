"""The vocabulary: every value introspect writes passes it (every fixture, every layer), its
vendored lists agree with the registries they come from, its reasons say what to write, and
`introspect metadefs` prints the namespace. Against the real Glance: tests/glance/test_metadefs.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import introspect
from introspect import vocabulary
from introspect.cli import main
from introspect.containers import BY_NAME as CONTAINERS
from introspect.formats import BY_NAME as FORMATS
from introspect.formats.qcow2 import CRYPT_METHODS
from introspect.formats.vmdk import ADAPTERS, VMWARE_DISKTYPE
from introspect.model import Verdict
from introspect.policyfile import known_rules
from introspect.vocabulary import KEYS, PROPERTIES, check, check_override, check_overrides
from tests.conftest import FIXTURES
from workers.glance.catalog import CLAIM
from workers.glance.ownership import MARKER, desired_properties

EVERY_FIXTURE = sorted(
    path for path in FIXTURES.rglob("*") if path.is_file() and not path.name.startswith(".")
)
#: Nova's VIFModel.LEGACY_VALUES (nova/objects/fields.py), restated: VMware's names it accepts.
NOVA_VIF_LEGACY = {
    "virtuale1000": "e1000",
    "virtuale1000e": "e1000e",
    "virtualpcnet32": "pcnet",
    "virtualsriovethernetcard": "sriov",
    "virtualvmxnet": "vmxnet",
    "virtualvmxnet3": "vmxnet3",
}


def test_there_are_fixtures():
    assert len(EVERY_FIXTURE) > 300, "fixtures/build is missing: run `make fixtures`"


def test_every_value_written_for_every_fixture_is_in_the_vocabulary():
    """inspect() over every file under fixtures/build (images, hostile ones, the tools' records),
    and what the pipeline adds to it: each key known, each value valid."""
    seen: dict[str, set[str]] = {}
    for path in EVERY_FIXTURE:
        report = introspect.inspect(path)
        for key, value in {**report.properties, **desired_properties(report)}.items():
            assert key in KEYS, f"{path}: {key} is not in the vocabulary"
            assert check(key, value) is None, f"{path}: {check(key, value)}"
            seen.setdefault(key, set()).add(value)
    # the fixtures exercise the mappings this file is about
    assert seen["vmware_adaptertype"] >= {"busLogic", "lsiLogic", "ide"}
    assert seen["vmware_disktype"] == {"sparse", "streamOptimized", "preallocated"}
    assert {"introspect_verdict", "introspect_findings", "introspect_container_format"} <= seen.keys()


def test_every_mapping_table_writes_only_vocabulary_values():
    for disktype in VMWARE_DISKTYPE.values():
        assert check("vmware_disktype", disktype) is None
    for adaptertype, bus, model in ADAPTERS.values():
        assert check("vmware_adaptertype", adaptertype) is None
        assert check("hw_disk_bus", bus) is None
        assert model is None or check("hw_scsi_model", model) is None


def test_introspect_lists_agree_with_the_registries():
    assert PROPERTIES["disk_format"]["enum"] == sorted(FORMATS)
    assert PROPERTIES["introspect_format"]["enum"] == sorted(FORMATS)
    assert set(PROPERTIES["introspect_container_format"]["enum"]) == set(CONTAINERS)
    assert PROPERTIES["introspect_verdict"]["enum"] == [v.value for v in Verdict]
    encrypted = set(CRYPT_METHODS.values()) - {"none"}  # and a LUKS image is `luks`
    assert set(PROPERTIES["introspect_encryption"]["enum"]) == encrypted | {"luks"}
    for code in known_rules():
        assert check("introspect_findings", code) is None
    assert check("introspect_findings", ",".join(sorted(known_rules())[:20])) is None
    assert {MARKER, CLAIM} <= KEYS
    assert {PROPERTIES[key]["written_by"] for key in (MARKER, CLAIM)} == {"bookkeeping"}


def test_the_keys_the_guest_layer_will_write_are_there():
    assert {
        "os_type",
        "os_distro",
        "os_version",
        "architecture",
        "hw_qemu_guest_agent",
        "hw_vif_model",
        "vmware_ostype",
        "hw_firmware_type",
    } <= KEYS


@pytest.mark.parametrize("key", sorted(KEYS))
def test_each_entry_is_whole_and_its_values_come_from_its_sources(key):
    entry = PROPERTIES[key]
    assert entry["title"] and entry["description"] and entry["type"] == "string"
    assert entry["written_by"] in {"format", "container", "guest", "pipeline", "bookkeeping"}
    assert ("enum" in entry) != ("pattern" in entry), "an enum or a pattern, one of them"
    assert entry["sources"], "every entry cites where its values come from"
    for source in entry["sources"]:
        assert source["from"] in vocabulary.SOURCES and source["file"]
    enum = entry.get("enum", [])
    assert len(set(enum)) == len(enum)
    assert not set(enum) & set(entry.get("aliases", {})), "an alias is a spelling to replace"
    assert not set(enum) & set(entry.get("refused", {}))
    for alias, word in entry.get("aliases", {}).items():
        assert word in enum
        assert check(key, alias) == f"{key}={alias}: write {word}, the word every reader accepts"
    for value in enum:
        assert check(key, value) is None
    # every value is one Nova (and libvirt's QEMU driver) accepts, where they list values
    for source in entry["sources"]:
        if source["from"] in ("nova", "libvirt") and source["enum"] is not None:
            accepted = {value.lower() for value in source["enum"]}
            for value in enum:
                word = NOVA_VIF_LEGACY.get(value.lower(), value.lower()) if key == "hw_vif_model" else value
                assert (word.lower() if key == "vmware_adaptertype" else word) in (
                    accepted if key == "vmware_adaptertype" else set(source["enum"])
                ), f"{key}={value} is not in {source['file']} {source['name']}"
    # a refused value is one some reader accepts (else it would be plain invalid): say which
    for value in entry.get("refused", {}):
        assert any(
            value in (source.get("enum") or []) for source in entry["sources"] if source["from"] == "nova"
        )


def test_the_two_decisions():
    thin = check("vmware_disktype", "thin")
    assert thin is not None
    assert thin.startswith("vmware_disktype=thin is refused: ")
    assert "SUPPORTED_FLAT_VARIANTS" in thin and "write preallocated" in thin
    buslogic = check("hw_scsi_model", "buslogic")
    assert buslogic is not None
    assert "QEMU does not emulate a BusLogic controller" in buslogic
    assert "vmware_adaptertype=busLogic" in buslogic
    assert check("vmware_adaptertype", "busLogic") is None
    assert check("vmware_disktype", "preallocated") is None


def test_reasons_name_what_is_accepted():
    assert check("hw_firmware_type", "efi") == "hw_firmware_type='efi' is not one of bios, uefi"
    many = check("vmware_ostype", "ubuntuGuest64")
    assert many is not None
    assert "(148 values: `introspect metadefs` lists them)" in many
    assert check("architecture", "amd64") == "architecture=amd64: write x86_64, the word every reader accepts"
    assert (
        check("introspect_cluster_size", "64k")
        == r"introspect_cluster_size='64k' does not match ^(0|[1-9][0-9]{0,19})$"
    )
    assert check("introspect_geometry_heads", "255") is None
    assert check("os_version", "24.04") is None
    assert check("os_version", "24.04 LTS") is not None
    long = check("introspect_findings", ",".join(["vmdk.extent_path"] * 100))
    assert long == "introspect_findings: the value is longer than 1024 characters"
    shown = check("os_distro", "x" * 200)
    assert shown is not None and "'" + "x" * 64 + "...'" in shown


def test_keys_outside_the_vocabulary():
    assert check("hw_video_model", "anything") is None, "not introspect's to judge"
    assert check("introspect_nonsense", "1") == (
        "introspect_nonsense is not a property introspect knows (`introspect metadefs` lists them)"
    )
    assert check("k" * 256, "v") == "the key is longer than Glance's 255 characters"


def test_admin_overrides():
    assert check_override("hw_disk_bus", "virtio") is None
    assert check_override("hw_scsi_model", "virtio-scsi") is None
    assert check_override("introspect_written", "{}") == (
        "introspect_written is introspect's bookkeeping, not a property to override"
    )
    assert check_overrides({"hw_disk_bus": "sata", "vmware_disktype": "thin", "os_type": "Windows"}) == {
        "vmware_disktype": check("vmware_disktype", "thin"),
        "os_type": "os_type=Windows: write windows, the word every reader accepts",
    }
    assert check_overrides({"os_distro": "debian", "hw_video_model": "virtio"}) == {}


#: What Glance's metadefs property schema allows (glance/api/v2/metadef_namespaces.py
#: get_schema_definitions, "property"); title and type are required.
GLANCE_PROPERTY_FIELDS = {
    "name", "title", "description", "operators", "type", "required", "minimum", "maximum", "maxLength",
    "minLength", "pattern", "enum", "readonly", "default", "items", "maxItems", "minItems",
    "uniqueItems", "additionalItems",
}  # fmt: skip


def test_the_metadefs_namespace_describes_every_property_written():
    document = vocabulary.metadefs_namespace()
    assert document["namespace"] == "OS::Introspect"
    assert document["resource_type_associations"] == [{"name": "OS::Glance::Image"}]
    properties = document["properties"]
    assert set(properties) == KEYS - {"disk_format"}, "disk_format is an attribute, not a property"
    for key, definition in properties.items():
        assert set(definition) <= GLANCE_PROPERTY_FIELDS and {"title", "type"} <= set(definition)
        assert definition.get("enum") == PROPERTIES[key].get("enum")
        assert definition.get("pattern") == PROPERTIES[key].get("pattern")
    assert properties["vmware_disktype"]["enum"] == ["streamOptimized", "sparse", "preallocated"]
    assert properties["introspect_written"]["readonly"] is True
    assert vocabulary.metadefs_namespace("OS::Elsewhere")["namespace"] == "OS::Elsewhere"


def test_the_metadefs_command(tmp_path):
    runner = CliRunner()
    printed = runner.invoke(main, ["metadefs"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == vocabulary.metadefs_namespace()
    target = tmp_path / "introspect.json"
    written = runner.invoke(main, ["metadefs", "--output", str(target), "--namespace", "OS::Mine"])
    assert written.exit_code == 0 and written.stdout == ""
    assert json.loads(target.read_text()) == vocabulary.metadefs_namespace("OS::Mine")
    refused = runner.invoke(main, ["metadefs", "--output", str(tmp_path / "missing" / "x.json")])
    assert refused.exit_code == 2, "a usage error, like every path that cannot be used"
    assert "x.json: No such file or directory" in refused.output
