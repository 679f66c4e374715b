"""Report -> properties, checked against what the descriptor text and qemu-img say, through the
mapping the issue spells out (written here independently of the formats' own mappings), and the
merge of layers in introspect/properties.py."""

from __future__ import annotations

import re
import shutil

import pytest

import introspect
from introspect.model import Firmware
from introspect.properties import firmware_properties, geometry_properties, header_properties, merge
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded

# The mapping, restated: ddb.adapterType -> (vmware_adaptertype, hw_disk_bus, hw_scsi_model).
# BusLogic has no hw_scsi_model: QEMU has no such controller (see introspect/vocabulary.py).
ADAPTER = {
    "ide": ("ide", "ide", None),
    "buslogic": ("busLogic", "scsi", None),
    "lsilogic": ("lsiLogic", "scsi", "lsilogic"),
    "legacyESX": ("lsiLogic", "scsi", "lsilogic"),
    "lsisas1068": ("lsiLogicsas", "scsi", "lsisas1068"),
    "pvscsi": ("paraVirtual", "scsi", "vmpvscsi"),
}
DISKTYPE = {
    "monolithicSparse": "sparse",
    "streamOptimized": "streamOptimized",
    "monolithicFlat": "preallocated",
    "twoGbMaxExtentFlat": "preallocated",
}


def ddb(text: str, key: str) -> str | None:
    match = re.search(rf'^{re.escape(key)}\s*=\s*"([^"]*)"', text, re.MULTILINE)
    return match.group(1) if match else None


def create_type(text: str) -> str:
    return re.search(r'^createType\s*=\s*"([^"]*)"', text, re.MULTILINE).group(1)


VMDK_WITH_DESCRIPTOR = sorted(
    p.with_name(p.name.removesuffix(".descriptor.txt"))
    for p in fixture_group("vmdk").glob("*.descriptor.txt")
)


@pytest.mark.parametrize("image", VMDK_WITH_DESCRIPTOR, ids=lambda p: p.name)
def test_vmdk_properties_follow_the_descriptor(image):
    text = recorded(image, "descriptor.txt")
    report = introspect.inspect(image)
    props = report.properties
    assert props["disk_format"] == "vmdk"
    adapter = ddb(text, "ddb.adapterType")
    if adapter:
        adaptertype, bus, model = ADAPTER[adapter]
        assert props["vmware_adaptertype"] == adaptertype
        assert props["hw_disk_bus"] == bus
        assert props.get("hw_scsi_model") == model
    else:
        assert "vmware_adaptertype" not in props and "hw_disk_bus" not in props
    kind = create_type(text)
    assert props["introspect_vmdk_create_type"] == kind
    if kind in DISKTYPE:
        # thin or not (ddb.thinProvisioned): Glance's metadefs have no `thin`, Nova reads both alike
        assert props["vmware_disktype"] == DISKTYPE[kind]
    cylinders = ddb(text, "ddb.geometry.cylinders")
    if cylinders:
        assert props["introspect_geometry_cylinders"] == cylinders
        assert props["introspect_geometry_heads"] == ddb(text, "ddb.geometry.heads")
        assert props["introspect_geometry_sectors"] == ddb(text, "ddb.geometry.sectors")
    hw = ddb(text, "ddb.virtualHWVersion")
    if hw:
        assert props["introspect_virtual_hw_version"] == hw
    assert all(isinstance(v, str) for v in props.values())


@pytest.mark.parametrize("adapter", ["lsisas1068", "pvscsi"])
def test_adapters_qemu_img_cannot_write(tmp_path, adapter):
    """qemu-img 7.2 refuses to create these; VMware writes them. Take qemu-img's own lsilogic
    monolithicFlat descriptor and change only its ddb.adapterType line, as VMware would write it."""
    source = fixture_group("vmdk") / "monolithicFlat-lsilogic.vmdk"
    text = source.read_text().rstrip("\0")
    assert ddb(text, "ddb.adapterType") == "lsilogic"
    image = tmp_path / "disk.vmdk"
    image.write_text(text.replace('ddb.adapterType = "lsilogic"', f'ddb.adapterType = "{adapter}"'))
    shutil.copy(source.with_name("monolithicFlat-lsilogic-flat.vmdk"), tmp_path)
    props = introspect.inspect(image).properties
    adaptertype, bus, model = ADAPTER[adapter]
    assert (props["vmware_adaptertype"], props["hw_disk_bus"], props["hw_scsi_model"]) == (
        adaptertype,
        bus,
        model,
    )


@pytest.mark.parametrize(
    ("create_type", "thin"), [("monolithicFlat", True), ("vmfsThin", False), ("vmfsThin", True)]
)
def test_a_thin_flat_disk_is_preallocated(tmp_path, create_type, thin):
    """Glance's metadefs have no `thin`; Nova's VMware driver reads thin and preallocated flat disks
    alike (vmops.py _get_image_callbacks). The flag stays in the details."""
    source = fixture_group("vmdk") / "monolithicFlat-lsilogic.vmdk"
    text = source.read_text().rstrip("\0")
    text = text.replace('createType="monolithicFlat"', f'createType="{create_type}"')
    if thin:
        text += '\nddb.thinProvisioned = "1"\n'
    image = tmp_path / "disk.vmdk"
    image.write_text(text)
    report = introspect.inspect(image)
    assert create_type in text and report.properties["introspect_vmdk_create_type"] == create_type
    assert report.properties["vmware_disktype"] == "preallocated"
    assert report.details.thin_provisioned is (True if thin else None)


def test_a_buslogic_disk_has_no_scsi_model_qemu_lacks():
    props = introspect.inspect(fixture_group("vmdk") / "monolithicSparse-buslogic.vmdk").properties
    assert (props["vmware_adaptertype"], props["hw_disk_bus"]) == ("busLogic", "scsi")
    assert "hw_scsi_model" not in props


def test_a_create_type_that_is_not_a_word_is_not_written(tmp_path):
    source = fixture_group("vmdk") / "monolithicFlat-lsilogic.vmdk"
    text = source.read_text().rstrip("\0").replace('createType="monolithicFlat"', 'createType="mono flat;x"')
    image = tmp_path / "disk.vmdk"
    image.write_text(text)
    report = introspect.inspect(image)
    assert report.details.create_type == "mono flat;x"
    assert "introspect_vmdk_create_type" not in report.properties
    assert "vmdk.create_type" in {f.code for f in report.findings}


def test_qcow2_properties_follow_qemu_img():
    for image in sorted(fixture_group("qcow").glob("*.qcow2")):
        info = qemu_info(image) if image.with_name(image.name + ".qemu-img.json").exists() else None
        if info is None:
            continue
        props = introspect.inspect(image).properties
        assert props["disk_format"] == "qcow2"
        assert props["introspect_cluster_size"] == str(info["cluster-size"])
        compat = info["format-specific"]["data"]["compat"]
        assert props["introspect_format_version"] == {"0.10": "2", "1.1": "3"}[compat]


def test_nothing_is_guessed_for_a_descriptor_without_adapter(tmp_path):
    source = fixture_group("vmdk") / "monolithicFlat-lsilogic.vmdk"
    text = source.read_text().rstrip("\0")
    image = tmp_path / "disk.vmdk"
    image.write_text("\n".join(line for line in text.splitlines() if not line.startswith("ddb.adapterType")))
    props = introspect.inspect(image).properties
    assert not {"vmware_adaptertype", "hw_disk_bus", "hw_scsi_model"} & props.keys()


#: qemu-img's "cluster-size" is the header's cluster size for these formats...
CLUSTER_SIZED = {"qcow": "qcow", "qed": "qed"}
#: ...and the block size (the unit a dynamic disk allocates in) for these.
BLOCK_SIZED = {"vdi": "vdi", "vpc": "vhd", "vhdx": "vhdx"}


def recorded_by_qemu(*groups: str) -> list:
    return sorted(
        p.with_name(p.name.removesuffix(".qemu-img.json"))
        for group in groups
        for p in fixture_group(group).glob("*.qemu-img.json")
    )


@pytest.mark.parametrize("image", recorded_by_qemu("qcow", "vdi", "vhd"), ids=lambda p: p.name)
def test_header_numbers_follow_qemu_img(image):
    """Each format's own mapping says what qemu-img says of its cluster or block size."""
    info = qemu_info(image)
    props = introspect.inspect(image).properties
    if info["format"] in CLUSTER_SIZED:
        assert props["disk_format"] == CLUSTER_SIZED[info["format"]]
        assert props["introspect_cluster_size"] == str(info["cluster-size"])
    elif info["format"] in BLOCK_SIZED:
        assert props["disk_format"] == BLOCK_SIZED[info["format"]]
        if "cluster-size" in info:  # a fixed VHD has no blocks
            assert props["introspect_block_size"] == str(info["cluster-size"])
        else:
            assert "introspect_block_size" not in props


@pytest.mark.parametrize("image", ["aes.qcow2", "luks.qcow2", "base.qcow2"])
def test_qcow2_encryption_follows_qemu_img(image):
    path = fixture_group("qcow") / image
    info = qemu_info(path)
    props = introspect.inspect(path).properties
    if info.get("encrypted"):
        assert props["introspect_encryption"] == info["format-specific"]["data"]["encrypt"]["format"]
    else:
        assert "introspect_encryption" not in props


def test_luks_is_encrypted_with_luks():
    path = fixture_group("luks") / "qemu-aes-xts-7m.luks"
    assert qemu_info(path)["encrypted"]
    props = introspect.inspect(path).properties
    assert (props["disk_format"], props["introspect_encryption"]) == ("luks", "luks")


def test_ploop_tracks_are_not_a_geometry():
    """ploop's header calls its cluster size in sectors "tracks": nothing a guest's CHS would use."""
    props = introspect.inspect(fixture_group("parallels") / "p-1g3m-256k.hds").properties
    assert props["introspect_cluster_size"] == str(256 << 10)
    assert not any(key.startswith("introspect_geometry_") for key in props)


def test_merge_keeps_order_and_says_which_layer_gave_each_key():
    merged = merge(
        ("format", {"disk_format": "qcow2", "introspect_cluster_size": "65536"}),
        ("container", {"introspect_container_format": "gzip"}),
        ("guest", {"introspect_cluster_size": "4096", "os_distro": "debian"}),
    )
    assert list(merged.values.items()) == [
        ("disk_format", "qcow2"),
        ("introspect_cluster_size", "4096"),
        ("introspect_container_format", "gzip"),
        ("os_distro", "debian"),
    ]
    assert merged.origin == {
        "disk_format": "format",
        "introspect_cluster_size": "guest",
        "introspect_container_format": "container",
        "os_distro": "guest",
    }
    assert merged.replaced == [("introspect_cluster_size", "format", "65536")]


def test_shared_helpers_say_nothing_without_evidence():
    assert firmware_properties(None) == {}
    assert firmware_properties(Firmware(bios=True, uefi=True, evidence=["both"])) == {}
    assert firmware_properties(Firmware(bios=False, uefi=True, evidence=["ESP"])) == {
        "hw_firmware_type": "uefi"
    }
    assert geometry_properties(None) == {}
    assert header_properties() == {}
    assert list(header_properties(block_size=1, version=2)) == [
        "introspect_format_version",
        "introspect_block_size",
    ]
