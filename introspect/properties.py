"""Report -> image properties, with Glance/Nova names where they exist; string values only.

A property is written only when the image states it: no defaults, no guesses (peers' silent
`lsiLogic` and BIOS defaults left VMs unbootable). Properties come out most useful first, so a
catalog with a property quota keeps the ones that decide how a VM boots.

- disk_format: the detected format (Glance's word).
- vmware_disktype: from the VMDK createType (monolithicSparse, twoGbMaxExtentSparse -> sparse;
  streamOptimized -> streamOptimized; monolithicFlat, twoGbMaxExtentFlat, vmfs* -> preallocated;
  vmfsThin, or a preallocated type with ddb.thinProvisioned = 1 -> thin).
- vmware_adaptertype, hw_disk_bus, hw_scsi_model: from ddb.adapterType (see ADAPTERS).
- hw_firmware_type: uefi or bios, only when the partition table or El Torito points one way.
- introspect_geometry_cylinders/heads/sectors: VMDK ddb.geometry.*, VHD CHS, VDI geometry
  (not ploop's, whose tracks are clusters).
- introspect_vmdk_create_type, introspect_virtual_hw_version: the VMDK descriptor.
- introspect_format_version, introspect_cluster_size, introspect_block_size: the header.
- introspect_encryption: qcow2's encryption method, or luks.
"""

from __future__ import annotations

from pydantic import BaseModel

from introspect.formats.luks import LuksDetails
from introspect.formats.parallels import ParallelsDetails
from introspect.formats.qcow2 import Qcow2Details
from introspect.formats.vmdk import VmdkDetails
from introspect.model import Firmware, Geometry

#: VMDK createType -> Nova's vmware_disktype (nova/virt/vmwareapi/constants.py DISK_TYPE_*).
VMWARE_DISKTYPE = {
    "monolithicsparse": "sparse",
    "twogbmaxextentsparse": "sparse",
    "streamoptimized": "streamOptimized",
    "monolithicflat": "preallocated",
    "twogbmaxextentflat": "preallocated",
    "vmfs": "preallocated",
    "vmfspreallocated": "preallocated",
    "vmfseagerzeroedthick": "preallocated",
    "vmfsthin": "thin",
}
#: Types whose disks can be thin: ddb.thinProvisioned = 1 makes them `thin`.
CAN_BE_THIN = {"preallocated"}

#: ddb.adapterType -> (vmware_adaptertype, hw_disk_bus, hw_scsi_model or None).
ADAPTERS: dict[str, tuple[str, str, str | None]] = {
    "ide": ("ide", "ide", None),
    "buslogic": ("busLogic", "scsi", "buslogic"),
    "lsilogic": ("lsiLogic", "scsi", "lsilogic"),
    "legacyesx": ("lsiLogic", "scsi", "lsilogic"),
    "lsisas1068": ("lsiLogicsas", "scsi", "lsisas1068"),
    "pvscsi": ("paraVirtual", "scsi", "vmpvscsi"),
}


def properties_of(format_name: str, details: BaseModel, virtual_size: int | None) -> dict[str, str]:
    """The properties an image with these details gets; `virtual_size` stays a catalog column."""
    properties = {"disk_format": format_name}
    if isinstance(details, VmdkDetails):
        properties.update(vmdk_properties(details))
    fields = vars(details)  # a model's field values (getattr on a missing one is slow in pydantic)
    firmware = fields.get("firmware")
    if isinstance(firmware, Firmware) and firmware.hw_firmware_type:
        properties["hw_firmware_type"] = firmware.hw_firmware_type
    geometry = fields.get("geometry")
    # ploop's "geometry" counts cluster-sized tracks, not a disk's CHS: nothing a guest would use.
    if isinstance(geometry, Geometry) and not isinstance(details, ParallelsDetails):
        properties["introspect_geometry_cylinders"] = str(geometry.cylinders)
        properties["introspect_geometry_heads"] = str(geometry.heads)
        properties["introspect_geometry_sectors"] = str(geometry.sectors)
    if isinstance(details, VmdkDetails):
        if details.create_type:
            properties["introspect_vmdk_create_type"] = details.create_type
        if details.virtual_hw_version is not None:
            properties["introspect_virtual_hw_version"] = str(details.virtual_hw_version)
    for field, key in (
        ("version", "introspect_format_version"),
        ("cluster_size", "introspect_cluster_size"),
        ("block_size", "introspect_block_size"),
    ):
        value = fields.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            properties[key] = str(value)
    if isinstance(details, Qcow2Details) and details.encryption != "none":
        properties["introspect_encryption"] = details.encryption
    if isinstance(details, LuksDetails):
        properties["introspect_encryption"] = "luks"
    return properties


def vmdk_properties(details: VmdkDetails) -> dict[str, str]:
    """Nova's vmware_* and hw_* names, from the descriptor, when it states them."""
    properties = {}
    disktype = VMWARE_DISKTYPE.get((details.create_type or "").lower())
    if disktype in CAN_BE_THIN and details.thin_provisioned:
        disktype = "thin"
    if disktype:
        properties["vmware_disktype"] = disktype
    adapter = ADAPTERS.get((details.adapter_type or "").lower())
    if adapter:
        adaptertype, bus, scsi_model = adapter
        properties["vmware_adaptertype"] = adaptertype
        properties["hw_disk_bus"] = bus
        if scsi_model:
            properties["hw_scsi_model"] = scsi_model
    return properties
