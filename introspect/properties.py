"""Image properties: each layer states its own, this module merges them; string values only.

A property is written only when the image states it: no defaults, no guesses (peers' silent
`lsiLogic` and BIOS defaults left VMs unbootable). Properties come out most useful first, so a
catalog with a property quota keeps the ones that decide how a VM boots.

Layers, merged in this order (their keys come out in it too):

- `format`: `disk_format` (the detected format, Glance's word), then the format's own mapping,
  `Format.properties`, declared in the format's module beside its parser and details model (the
  VMDK descriptor's vmware_disktype, vmware_adaptertype, hw_disk_bus, hw_scsi_model, create type
  and hardware version in `formats/vmdk.py`; qcow2's and LUKS's introspect_encryption...).
- `container`: `introspect_container_format`, the wrapper the image came in (gzip, xz, zstd, bz2,
  ova), added by the inspector's container path; for an OVA, first what its OVF descriptor states
  (`introspect.containers.ovf.properties`: os_type, os_distro, vmware_ostype, hw_firmware_type,
  the boot disk's controller, hw_vif_model, introspect_ovf_*), which replaces the VMDK's own
  controller words (`Unpacked.replaces`: ddb.adapterType cannot say SAS, PVSCSI, SATA or NVMe).
- `guest`: what the guest's own files say (`introspect.guest.inspection.properties`: os_type,
  os_distro, os_version, architecture, hw_firmware_type from the partition types and the ESP's
  loaders, hw_qemu_guest_agent, introspect_os_id, introspect_osinfo...), only when the image
  holds exactly one system; it comes last, so the guest's files outrank an OVF's declarations.

A later layer's value for a key replaces an earlier one's, in the earlier one's place; `Merged`
records which layer gave each key and what was replaced, for the audit (and the finding) a
disagreement between layers will need. The Report carries only the values.

Mappings several formats share are the helpers below, called by the formats' own mappings:

- hw_firmware_type: uefi or bios, only when the partition table or El Torito points one way
  (`firmware_properties`; raw, ISO).
- introspect_geometry_cylinders/heads/sectors: VMDK ddb.geometry.*, VHD CHS, VDI geometry (not
  ploop's, whose tracks are clusters) (`geometry_properties`).
- introspect_format_version, introspect_cluster_size, introspect_block_size: the header
  (`header_properties`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from introspect.model import Firmware, Geometry

if TYPE_CHECKING:
    from introspect.formats.base import Format

Layer = Literal["format", "container", "guest"]


class Merged(NamedTuple):
    """Merged properties: the values (what the catalog gets) and the layers they came from, which
    say (worked out when asked, off the hot path) which layer gave each key and what was replaced."""

    values: dict[str, str]
    layers: tuple[tuple[Layer, Mapping[str, str]], ...]

    @property
    def origin(self) -> dict[str, Layer]:
        """The layer that gave each key its value."""
        return {key: layer for layer, properties in self.layers for key in properties}

    @property
    def replaced(self) -> list[tuple[str, Layer, str]]:
        """Values a later layer replaced with another, as (key, layer, value)."""
        replaced = []
        given: dict[str, tuple[Layer, str]] = {}
        for layer, properties in self.layers:
            for key, value in properties.items():
                if key in given and given[key][1] != value:
                    replaced.append((key, *given[key]))
                given[key] = (layer, value)
        return replaced


def merge(*layers: tuple[Layer, Mapping[str, str]]) -> Merged:
    """The layers' properties in order; a later layer's value for a key replaces an earlier one's."""
    values: dict[str, str] = {}
    for _, properties in layers:
        values.update(properties)
    return Merged(values, layers)


def format_layer(fmt: Format[Any], details: Any) -> dict[str, str]:
    """The format layer: `disk_format`, then what the format's own mapping says of its details."""
    return {"disk_format": fmt.name, **fmt.properties(details)}


def firmware_properties(firmware: Firmware | None) -> dict[str, str]:
    """Nova's hw_firmware_type, only when the evidence points one way (see `Firmware`)."""
    kind = firmware.hw_firmware_type if firmware is not None else None
    return {"hw_firmware_type": kind} if kind else {}


def geometry_properties(geometry: Geometry | None) -> dict[str, str]:
    """The cylinders/heads/sectors the image states, for a guest that needs its disk's CHS."""
    if geometry is None:
        return {}
    return {
        "introspect_geometry_cylinders": str(geometry.cylinders),
        "introspect_geometry_heads": str(geometry.heads),
        "introspect_geometry_sectors": str(geometry.sectors),
    }


def header_properties(
    *, version: int | None = None, cluster_size: int | None = None, block_size: int | None = None
) -> dict[str, str]:
    """The header's format version, cluster size and block size, those the format has."""
    properties = {}
    if version is not None:
        properties["introspect_format_version"] = str(version)
    if cluster_size is not None:
        properties["introspect_cluster_size"] = str(cluster_size)
    if block_size is not None:
        properties["introspect_block_size"] = str(block_size)
    return properties
