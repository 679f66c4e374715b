"""Report -> properties, checked against what the descriptor text and qemu-img say, through the
mapping the issue spells out (written here independently of introspect/properties.py)."""

from __future__ import annotations

import re
import shutil

import pytest

import introspect
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded

# The mapping, restated: ddb.adapterType -> (vmware_adaptertype, hw_disk_bus, hw_scsi_model).
ADAPTER = {
    "ide": ("ide", "ide", None),
    "buslogic": ("busLogic", "scsi", "buslogic"),
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
        thin = ddb(text, "ddb.thinProvisioned") == "1"
        assert props["vmware_disktype"] == (
            "thin" if thin and DISKTYPE[kind] == "preallocated" else DISKTYPE[kind]
        )
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
