"""OVF descriptors: what the VM around an OVA's disks was (guest OS, controllers, NICs, firmware).

Specs and sources, cited beside what each gives:

- DMTF DSP0243 "Open Virtualization Format Specification" 1.1.0 and 2.1.1: the `Envelope`, its
  `References/File` (§7.1), `DiskSection/Disk` with `capacity` and `capacityAllocationUnits`
  (§9.1, units as DSP0004 Annex C.1 programmatic units: `byte * 2^30`), `VirtualSystem` and
  `VirtualSystemCollection` (§7.2-7.3), `OperatingSystemSection` (§9.8: `ovf:id` is a
  CIM_OperatingSystem.OsType value, `ovf:version`), `VirtualHardwareSection` (§9.5-9.6) with its
  `Item` (CIM_ResourceAllocationSettingData), and in 2.x `StorageItem` (CIM_StorageAllocation
  SettingData) and `EthernetPortItem` (CIM_EthernetPortAllocationSettingData);
  `ResourceSubType` may list alternatives separated by spaces (§9.6: "virtio lsilogic").
- OVF 0.9 (VMware's pre-standard namespace, still written by old ovftool): the same elements
  inside generic `Section`/`Content` elements told apart by `xsi:type` ("DiskSection_Type").
- VMware's extensions (namespace http://www.vmware.com/schema/ovf, written by ovftool and
  vCenter's export; open-vmdk's templates are public examples): `vmw:osType` on the
  OperatingSystemSection (a vSphere `VirtualMachineGuestOsIdentifier`), `vmw:Config` and
  `vmw:ExtraConfig` key/value pairs (`firmware` = `efi` or `bios`).
- VirtualBox's extension (namespace http://www.virtualbox.org/ovf/machine): `vbox:OSType` in
  the OperatingSystemSection and `vbox:Machine`, the whole VirtualBox machine configuration, of
  which `OSType` and `Hardware/Firmware/@type` (BIOS, EFI, EFI32, EFI64, EFIDUAL) are read.

Safety (STYLE rule 9): the descriptor is at most `MAX_OVF_SIZE` bytes, parsed with defusedxml's
`iterparse` (a DTD, an entity or an external reference is refused: `ova.xml_unsafe`), each
handled element cleared when done, every list capped, every string capped. Nothing it names is
opened: `File/@href` is a name matched against the archive's entries, never a path.

Properties (each only when the descriptor states it, in Nova's words per Glance's metadefs
`operating-system.json`, `compute-libvirt-image.json`, `compute-vmware.json`) are built by
`properties()`; the OS tables below cite where their values come from.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from introspect import vocabulary
from introspect.decode import MIB
from introspect.errors import ImageError
from introspect.formats.vmdk import ADAPTERS as VMDK_ADAPTERS
from introspect.model import Frozen, Severity
from introspect.safety import rule

# The XML parser is imported when a descriptor is parsed: every inspection imports this module.
if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

OVF_SIZE = rule("ova.ovf_size", Severity.REJECT, "the OVF descriptor is larger than introspect reads")
OVF_INVALID = rule("ova.ovf_invalid", Severity.REJECT, "the OVF descriptor is not well-formed OVF XML")
XML_UNSAFE = rule(
    "ova.xml_unsafe", Severity.REJECT, "the OVF descriptor declares a DTD, an entity or an external reference"
)

#: The largest descriptor read. ovftool's descriptors are a few KiB; VirtualBox's, which embed
#: the whole machine configuration, tens of KiB. Anything near this cap is not a descriptor.
MAX_OVF_SIZE = 4 * MIB
#: Caps on what a descriptor may list (loops over on-disk records have an iteration cap).
MAX_FILES = 256
MAX_DISKS = 256
MAX_SYSTEMS = 64
MAX_DEVICES = 1024
MAX_CONFIG = 512
MAX_ELEMENTS = 200_000
#: Strings from the descriptor are kept at most this long.
MAX_TEXT = 1024

#: Envelope namespaces: DSP0243 1.x and 2.x, and VMware's OVF 0.9.
OvfVersion = Literal["0.9", "1.x", "2.x"]
OVF_NAMESPACES: dict[str, OvfVersion] = {
    "http://schemas.dmtf.org/ovf/envelope/1": "1.x",
    "http://schemas.dmtf.org/ovf/envelope/2": "2.x",
    "http://www.vmware.com/schema/ovf/1/envelope": "0.9",
}
#: The VirtualHardwareSection's device elements, by their local name.
DeviceElement = Literal["Item", "StorageItem", "EthernetPortItem"]
DEVICE_ELEMENTS: dict[str, DeviceElement] = {
    "Item": "Item",
    "StorageItem": "StorageItem",
    "EthernetPortItem": "EthernetPortItem",
}
VMW_NS = "http://www.vmware.com/schema/ovf"
VBOX_NS = "http://www.virtualbox.org/ovf/machine"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

#: CIM_ResourceAllocationSettingData.ResourceType (DSP1041/CIM schema ValueMap) values read here.
RESOURCE_PROCESSOR = 3
RESOURCE_MEMORY = 4
RESOURCE_IDE = 5
RESOURCE_SCSI = 6
RESOURCE_ETHERNET = 10
RESOURCE_OTHER_STORAGE = 20
RESOURCE_DISK_DRIVE = 17
CONTROLLER_TYPES = frozenset({RESOURCE_IDE, RESOURCE_SCSI, RESOURCE_OTHER_STORAGE})

ADVICE = "export the VM again (ovftool, VirtualBox) and upload the new OVA"


# --- What a descriptor says -----------------------------------------------------------------


class OvfFile(Frozen):
    """`References/File`: a file of the package, by the name it has in the archive."""

    id: str
    href: str
    size: int | None = None
    compression: str | None = None


class OvfDisk(Frozen):
    """`DiskSection/Disk`: a virtual disk; `capacity` in bytes (the stated number times its units)."""

    disk_id: str
    file_ref: str | None = None
    capacity: int | None = None
    capacity_stated: str | None = None
    capacity_units: str | None = None
    populated_size: int | None = None
    format: str | None = None


class OvfDevice(Frozen):
    """One `Item`, `StorageItem` or `EthernetPortItem` of a VirtualHardwareSection."""

    element: DeviceElement
    instance_id: str | None = None
    resource_type: int | None = None
    resource_subtypes: list[str] = Field(default_factory=list)
    name: str | None = None
    parent: str | None = None
    address_on_parent: str | None = None
    host_resource: str | None = None
    connection: str | None = None
    virtual_quantity: int | None = None
    allocation_units: str | None = None


class OvfOperatingSystem(Frozen):
    """`OperatingSystemSection`: the CIM OsType id, VMware's osType, VirtualBox's OSType."""

    cim_id: int | None = None
    version: str | None = None
    description: str | None = None
    vmw_os_type: str | None = None
    vbox_os_type: str | None = None


class OvfVirtualSystem(Frozen):
    """One `VirtualSystem`: its OS, hardware family, devices, VMware config and VirtualBox machine."""

    id: str | None = None
    name: str | None = None
    operating_system: OvfOperatingSystem | None = None
    system_types: list[str] = Field(default_factory=list)
    devices: list[OvfDevice] = Field(default_factory=list)
    config: dict[str, str] = Field(default_factory=dict)
    vbox_os_type: str | None = None
    vbox_firmware: str | None = None


class OvfDescriptor(Frozen):
    """What the descriptor states; `ovf_version` is told by the Envelope's namespace."""

    ovf_version: OvfVersion
    version_attribute: str | None = None
    files: list[OvfFile] = Field(default_factory=list)
    disks: list[OvfDisk] = Field(default_factory=list)
    virtual_systems: list[OvfVirtualSystem] = Field(default_factory=list)
    collection: bool = False


# --- Parsing ----------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[:MAX_TEXT] if value else None


def _int(value: str | None) -> int | None:
    value = _text(value)
    if value is None or not re.fullmatch(r"[0-9]{1,20}", value):
        return None
    return int(value)


#: DSP0004 Annex C.1 programmatic units ("byte * 2^20"), and the names OVF 0.9 and VirtualBox
#: write ("MegaBytes").
_PROGRAMMATIC_UNIT = re.compile(r"byte\s*(?:\*\s*([0-9]{1,2})\s*\^\s*([0-9]{1,2}))?", re.IGNORECASE)
_NAMED_UNITS = {"bytes": 1, "kilobytes": 1 << 10, "megabytes": 1 << 20, "gigabytes": 1 << 30}


def unit_multiplier(units: str | None) -> int | None:
    """Bytes per unit of `units` (None means bytes); None when the units are not bytes at all."""
    if units is None:
        return 1
    units = units.strip()
    if units.lower() in _NAMED_UNITS:
        return _NAMED_UNITS[units.lower()]
    match = _PROGRAMMATIC_UNIT.fullmatch(units)
    if match is None:
        return None
    if match.group(1) is None:
        return 1
    base, exponent = int(match.group(1)), int(match.group(2))
    return int(base**exponent) if base in (2, 10) else None


@dataclass
class _System:
    """A VirtualSystem being read."""

    id: str | None
    name: str | None = None
    operating_system: OvfOperatingSystem | None = None
    system_types: list[str] = field(default_factory=list)
    devices: list[OvfDevice] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    vbox_os_type: str | None = None
    vbox_firmware: str | None = None

    def done(self) -> OvfVirtualSystem:
        return OvfVirtualSystem(
            id=self.id,
            name=self.name,
            operating_system=self.operating_system,
            system_types=self.system_types,
            devices=self.devices,
            config=self.config,
            vbox_os_type=self.vbox_os_type,
            vbox_firmware=self.vbox_firmware,
        )


def _kind(element: Element) -> str:
    """The element's local name; for OVF 0.9's generic `Section`/`Content`, its xsi:type's."""
    name = _local(element.tag)
    if name in ("Section", "Content"):
        declared = element.get(XSI_TYPE)
        if declared:
            return _local(declared.split(":")[-1]).removesuffix("_Type")
    return name


def _too_many(what: str, cap: int) -> ImageError:
    return ImageError(OVF_INVALID, f"the OVF descriptor lists more than {cap} {what}: {ADVICE}")


#: defusedxml's refusals, in words.
_UNSAFE = {
    "DTDForbidden": "a DTD",
    "EntitiesForbidden": "an entity",
    "ExternalReferenceForbidden": "an external reference",
}


def parse_ovf(data: bytes) -> OvfDescriptor:
    """The descriptor's facts. Raises ImageError: OVF_SIZE past `MAX_OVF_SIZE`, XML_UNSAFE for a
    DTD or entity, OVF_INVALID for anything that is not well-formed OVF."""
    if len(data) > MAX_OVF_SIZE:
        raise ImageError(
            OVF_SIZE,
            f"the OVF descriptor is {len(data)} bytes, more than the {MAX_OVF_SIZE} introspect reads: "
            f"a real descriptor is a few KiB; {ADVICE}",
        )
    from xml.etree.ElementTree import ParseError

    import defusedxml

    try:
        return _parse(data)
    except defusedxml.DefusedXmlException as error:
        raise ImageError(
            XML_UNSAFE,
            f"the OVF descriptor declares {_UNSAFE.get(type(error).__name__, 'a DTD or an entity')} "
            f"({error}): OVF needs none, and XML parsers that honour them can be made to read files or "
            f"expand without bound; {ADVICE}",
        ) from None
    except ParseError as error:
        raise ImageError(
            OVF_INVALID, f"the OVF descriptor is not well-formed XML ({error}): {ADVICE}"
        ) from None
    except UnicodeError as error:
        raise ImageError(
            OVF_INVALID, f"the OVF descriptor's text cannot be decoded ({error}): {ADVICE}"
        ) from None


def _events(data: bytes) -> Iterator[tuple[str, Element]]:
    import defusedxml
    import defusedxml.ElementTree

    try:
        yield from defusedxml.ElementTree.iterparse(
            io.BytesIO(data),
            events=("start", "end"),
            forbid_dtd=True,
            forbid_entities=True,
            forbid_external=True,
        )
    except defusedxml.DefusedXmlException:
        raise  # a ValueError too, and the caller's to name: ova.xml_unsafe
    except (LookupError, ValueError) as error:
        # the XML declaration names an encoding Python does not know (LookupError) or expat cannot
        # read (ValueError: "multi-byte encodings are not supported"); raised by the parser only
        raise ImageError(
            OVF_INVALID, f"the OVF descriptor's encoding cannot be read ({error}): {ADVICE}"
        ) from None


def _parse(data: bytes) -> OvfDescriptor:
    ovf_ns = ""
    version: OvfVersion | None = None
    version_attribute: str | None = None
    files: list[OvfFile] = []
    disks: list[OvfDisk] = []
    systems: list[OvfVirtualSystem] = []
    open_systems: list[_System] = []
    collection = False
    vbox_depth = 0  # > 0 inside vbox:Machine, whose elements are VirtualBox's, not OVF's
    count = 0

    def attr(element: Element, name: str) -> str | None:
        return _attr(element, ovf_ns, name)

    for event, element in _events(data):
        count += 1
        if count > MAX_ELEMENTS:
            raise _too_many("XML elements", MAX_ELEMENTS)
        kind = _kind(element)
        if version is None:
            namespace = _namespace(element.tag)
            if event != "start" or kind != "Envelope" or namespace not in OVF_NAMESPACES:
                raise ImageError(
                    OVF_INVALID,
                    f"the descriptor's root element is {literal_tag(element.tag)}, not an OVF Envelope "
                    f"(namespaces: {', '.join(OVF_NAMESPACES)}): {ADVICE}",
                )
            ovf_ns, version = namespace, OVF_NAMESPACES[namespace]
            version_attribute = attr(element, "version")
            continue
        in_vbox = vbox_depth > 0
        if _namespace(element.tag) == VBOX_NS and kind == "Machine":
            if event == "start":
                vbox_depth += 1
                if open_systems and vbox_depth == 1:
                    open_systems[-1].vbox_os_type = _text(element.get("OSType"))
            else:
                vbox_depth -= 1
                element.clear()
            continue
        if event == "start":
            if kind == "VirtualSystem" and not in_vbox:
                if len(systems) + len(open_systems) >= MAX_SYSTEMS:
                    raise _too_many("virtual systems", MAX_SYSTEMS)
                open_systems.append(_System(id=attr(element, "id")))
            elif kind == "VirtualSystemCollection" and not in_vbox:
                collection = True
            continue
        system = open_systems[-1] if open_systems else None
        if in_vbox:
            if kind == "Firmware" and system is not None:
                system.vbox_firmware = _text(element.get("type"))
            continue
        if kind == "File":
            if len(files) >= MAX_FILES:
                raise _too_many("files", MAX_FILES)
            file_id, href = attr(element, "id"), attr(element, "href")
            if file_id and href:
                files.append(
                    OvfFile(
                        id=file_id,
                        href=href,
                        size=_int(attr(element, "size")),
                        compression=attr(element, "compression"),
                    )
                )
            element.clear()
        elif kind == "Disk":
            if len(disks) >= MAX_DISKS:
                raise _too_many("disks", MAX_DISKS)
            disks.append(_disk(element, ovf_ns))
            element.clear()
        elif kind == "OperatingSystemSection" and system is not None:
            children = {_local(child.tag): child for child in element}
            vbox_type = next(
                (c for c in element if _namespace(c.tag) == VBOX_NS and _local(c.tag) == "OSType"), None
            )
            system.operating_system = OvfOperatingSystem(
                cim_id=_int(attr(element, "id")),
                version=attr(element, "version"),
                description=_text(children["Description"].text) if "Description" in children else None,
                vmw_os_type=_text(element.get(f"{{{VMW_NS}}}osType")),
                vbox_os_type=_text(vbox_type.text) if vbox_type is not None else None,
            )
            element.clear()
        elif kind == "System" and system is not None:
            for child in element:
                if _local(child.tag) == "VirtualSystemType" and child.text:
                    system.system_types = [t[:MAX_TEXT] for t in child.text.split()][:16]
            element.clear()
        elif kind in DEVICE_ELEMENTS and system is not None:
            if len(system.devices) >= MAX_DEVICES:
                raise _too_many("hardware items", MAX_DEVICES)
            system.devices.append(_device(DEVICE_ELEMENTS[kind], element))
            element.clear()
        elif kind in ("Config", "ExtraConfig") and _namespace(element.tag) == VMW_NS and system is not None:
            key, value = _text(element.get(f"{{{VMW_NS}}}key")), _text(element.get(f"{{{VMW_NS}}}value"))
            if key is not None and len(system.config) < MAX_CONFIG:
                system.config[key] = value or ""
        elif kind == "Name" and system is not None and system.name is None:
            system.name = _text(element.text)
        elif kind == "VirtualSystem":
            if open_systems:
                systems.append(open_systems.pop().done())
            element.clear()
    if version is None:
        raise ImageError(OVF_INVALID, f"the OVF descriptor is empty: {ADVICE}")
    return OvfDescriptor(
        ovf_version=version,
        version_attribute=version_attribute,
        files=files,
        disks=disks,
        virtual_systems=systems,
        collection=collection,
    )


def literal_tag(tag: str) -> str:
    return repr(tag[:MAX_TEXT])


def _attr(element: Element, ovf_ns: str, name: str) -> str | None:
    """An `ovf:` attribute (some writers leave attributes unqualified)."""
    return _text(element.get(f"{{{ovf_ns}}}{name}", element.get(name)))


def _disk(element: Element, ovf_ns: str) -> OvfDisk:
    stated = _attr(element, ovf_ns, "capacity")
    units = _attr(element, ovf_ns, "capacityAllocationUnits")
    multiplier = unit_multiplier(units)
    number = _int(stated)
    return OvfDisk(
        disk_id=_attr(element, ovf_ns, "diskId") or "",
        file_ref=_attr(element, ovf_ns, "fileRef"),
        capacity=number * multiplier if number is not None and multiplier is not None else None,
        capacity_stated=stated,
        capacity_units=units,
        populated_size=_int(_attr(element, ovf_ns, "populatedSize")),
        format=_attr(element, ovf_ns, "format"),
    )


def _device(kind: DeviceElement, element: Element) -> OvfDevice:
    fields: dict[str, str] = {}
    for child in element:
        name = _local(child.tag)
        if name not in fields and child.text is not None:
            fields[name] = child.text
    subtypes = (fields.get("ResourceSubType") or "").split()
    return OvfDevice(
        element=kind,
        instance_id=_text(fields.get("InstanceID", fields.get("InstanceId"))),
        resource_type=_int(fields.get("ResourceType")),
        resource_subtypes=[s[:MAX_TEXT] for s in subtypes][:16],
        name=_text(fields.get("ElementName", fields.get("Caption"))),
        parent=_text(fields.get("Parent")),
        address_on_parent=_text(fields.get("AddressOnParent")),
        host_resource=_text(fields.get("HostResource")),
        connection=_text(fields.get("Connection")),
        virtual_quantity=_int(fields.get("VirtualQuantity")),
        allocation_units=_text(fields.get("AllocationUnits")),
    )


# --- The boot disk and its controller ----------------------------------------------------------


class Controller(Frozen):
    """A disk controller as the descriptor states it, and Nova's words for it where Nova has them.

    `bus` is the controller's kind (ide, scsi, sata, nvme); `hw_disk_bus`, `hw_scsi_model` and
    `vmware_adaptertype` are set only where Nova has a word: the VMDK mapping's for what
    ddb.adapterType can name, Glance's metadefs' for the rest (NVMe has none)."""

    resource_type: int | None
    resource_subtypes: list[str]
    chosen_subtype: str | None = None
    bus: str
    hw_disk_bus: str | None = None
    hw_scsi_model: str | None = None
    vmware_adaptertype: str | None = None


#: ResourceSubType (lower-cased) of a controller the VMDK descriptor's ddb.adapterType can also
#: name -> that ddb.adapterType: `introspect.formats.vmdk.ADAPTERS` gives Nova's words for both, so
#: an OVA and its bare VMDK say the same thing. VMware's words as ovftool writes them (`lsilogic`,
#: `buslogic`, `lsilogicsas`, `VirtualSCSI`: open-vmdk's templates, COT's vmware.ovf), VirtualBox's
#: (`PIIX3`, `PIIX4`, `ICH6`, `LsiLogicSas`: its OVF exports).
SAME_AS_DDB = {
    "lsilogic": "lsilogic",
    "buslogic": "buslogic",
    "lsilogicsas": "lsisas1068",
    "virtualscsi": "pvscsi",
    "piix3": "ide",
    "piix4": "ide",
    "ich6": "ide",
}
#: ...and those it cannot name -> (hw_disk_bus, hw_scsi_model), Nova's words (Glance metadefs
#: `compute-libvirt-image.json`); SATA and NVMe have no vmware_adaptertype, NVMe no hw_disk_bus.
#: `vmware.sata.ahci` and `vmware.nvme.controller` are VMware's (ResourceType 20), `AHCI`, `NVMe`
#: and `VirtioSCSI` VirtualBox's, `virtio` a SCSI controller's alternative (DSP0243 §9.6).
BEYOND_DDB: dict[str, tuple[str, str | None, str | None]] = {
    "virtioscsi": ("scsi", "scsi", "virtio-scsi"),
    "virtio-scsi": ("scsi", "scsi", "virtio-scsi"),
    "virtio": ("scsi", "scsi", "virtio-scsi"),
    "vmware.sata.ahci": ("sata", "sata", None),
    "ahci": ("sata", "sata", None),
    "vmware.nvme.controller": ("nvme", None, None),
    "nvme": ("nvme", None, None),
}
#: A controller's ResourceType alone (no subtype we know): an IDE controller is IDE.
RESOURCE_TYPES_AS_DDB = {RESOURCE_IDE: "ide"}


def _known(
    subtype: str | None, resource_type: int | None
) -> tuple[str, str | None, str | None, str | None] | None:
    """(bus, hw_disk_bus, hw_scsi_model, vmware_adaptertype) for a subtype, or a bare ResourceType."""
    ddb = SAME_AS_DDB.get(subtype.lower()) if subtype else RESOURCE_TYPES_AS_DDB.get(resource_type or -1)
    if ddb is not None and ddb in VMDK_ADAPTERS:
        adaptertype, disk_bus, scsi_model = VMDK_ADAPTERS[ddb]
        return disk_bus, disk_bus, scsi_model, adaptertype
    beyond = BEYOND_DDB.get(subtype.lower()) if subtype else None
    return (*beyond, None) if beyond is not None else None


def controller_of(device: OvfDevice) -> Controller | None:
    """What `device` (a controller item) is; the first alternative of its ResourceSubType that
    names a known controller wins (DSP0243 lists alternatives in the writer's order), else its
    ResourceType alone."""
    for subtype in (*device.resource_subtypes, None):
        known = _known(subtype, device.resource_type)
        if known is not None:
            bus, disk_bus, scsi_model, adaptertype = known
            return Controller(
                resource_type=device.resource_type,
                resource_subtypes=device.resource_subtypes,
                chosen_subtype=subtype,
                bus=bus,
                hw_disk_bus=disk_bus,
                hw_scsi_model=scsi_model,
                vmware_adaptertype=adaptertype,
            )
    return None


class BootDisk(Frozen):
    """The disk the VM boots from: the first disk drive of the (single) virtual system, else the
    first disk of the DiskSection; its file in the archive, and its controller when stated."""

    disk_id: str
    file_href: str | None
    capacity: int | None
    controller: Controller | None = None


#: `HostResource` of a disk drive: "ovf:/disk/<diskId>" (1.x/2.x), "/disk/<diskId>" (0.9).
_DISK_RESOURCE = re.compile(r"(?:ovf:)?/disk/(.+)")


def _disk_drives(system: OvfVirtualSystem) -> Iterator[tuple[OvfDevice, str]]:
    for device in system.devices:
        if device.resource_type == RESOURCE_DISK_DRIVE and device.host_resource:
            match = _DISK_RESOURCE.fullmatch(device.host_resource)
            if match:
                yield device, match.group(1)


def boot_disk(descriptor: OvfDescriptor) -> BootDisk | None:
    """The boot disk, or None when the descriptor lists no disk."""
    by_id = {disk.disk_id: disk for disk in descriptor.disks}
    files = {file.id: file.href for file in descriptor.files}
    system = descriptor.virtual_systems[0] if descriptor.virtual_systems else None
    disk, drive = None, None
    if system is not None:
        for device, disk_id in _disk_drives(system):
            if disk_id in by_id:
                disk, drive = by_id[disk_id], device
                break
    if disk is None and descriptor.disks:
        disk = descriptor.disks[0]
    if disk is None:
        return None
    controller = None
    if drive is not None and drive.parent is not None and system is not None:
        parent = next((d for d in system.devices if d.instance_id == drive.parent), None)
        controller = controller_of(parent) if parent is not None else None
    return BootDisk(
        disk_id=disk.disk_id,
        file_href=files.get(disk.file_ref or ""),
        capacity=disk.capacity,
        controller=controller,
    )


# --- Operating system tables -----------------------------------------------------------------

#: Glance metadefs `operating-system.json`: the os_distro values Nova knows (libosinfo short ids).
#: Each entry: Glance's os_type (linux, windows; other systems get none) and os_distro.
_LINUX = "linux"
_WINDOWS = "windows"


class GuestOs(Frozen):
    """What one of the OS identifiers says: each part only when it says it."""

    os_type: str | None = None
    os_distro: str | None = None
    os_version: str | None = None
    architecture: str | None = None


#: CIM_OperatingSystem.OSType (DMTF CIM Schema, CIM_OperatingSystem.mof, OSType ValueMap/Values;
#: DSP0243 §9.8 uses it as OperatingSystemSection/@ovf:id), the ids with a Nova meaning.
#: value -> (os_type, os_distro, architecture); 64-bit entries are the ones the CIM name says
#: "64-Bit", the others name no architecture.
CIM_OS_TYPES: dict[int, tuple[str | None, str | None, str | None]] = {
    14: (None, "msdos", None),  # MSDOS
    18: (_WINDOWS, "windows", None),  # WINNT
    21: (None, "netware", None),  # NetWare
    36: (_LINUX, None, None),  # LINUX
    42: (None, "freebsd", None),  # FreeBSD
    43: (None, "netbsd", None),  # NetBSD
    58: (_WINDOWS, "windows", None),  # Windows 2000
    65: (None, "openbsd", None),  # OpenBSD
    67: (_WINDOWS, "windows", None),  # Windows XP
    69: (_WINDOWS, "windows", None),  # Microsoft Windows Server 2003
    70: (_WINDOWS, "windows", "x86_64"),  # Microsoft Windows Server 2003 64-Bit
    71: (_WINDOWS, "windows", "x86_64"),  # Windows XP 64-Bit
    73: (_WINDOWS, "windows", None),  # Windows Vista
    74: (_WINDOWS, "windows", "x86_64"),  # Windows Vista 64-Bit
    76: (_WINDOWS, "windows", None),  # Microsoft Windows Server 2008
    77: (_WINDOWS, "windows", "x86_64"),  # Microsoft Windows Server 2008 64-Bit
    78: (None, "freebsd", "x86_64"),  # FreeBSD 64-Bit
    79: (_LINUX, "rhel", None),  # RedHat Enterprise Linux
    80: (_LINUX, "rhel", "x86_64"),  # RedHat Enterprise Linux 64-Bit
    84: (_LINUX, None, None),  # SLES
    85: (_LINUX, None, "x86_64"),  # SLES 64-Bit
    89: (_LINUX, "mandriva", None),  # Mandriva
    90: (_LINUX, "mandriva", "x86_64"),  # Mandriva 64-Bit
    93: (_LINUX, "ubuntu", None),  # Ubuntu
    94: (_LINUX, "ubuntu", "x86_64"),  # Ubuntu 64-Bit
    95: (_LINUX, "debian", None),  # Debian
    96: (_LINUX, "debian", "x86_64"),  # Debian 64-Bit
    97: (_LINUX, None, None),  # Linux 2.4.x
    98: (_LINUX, None, "x86_64"),  # Linux 2.4.x 64-Bit
    99: (_LINUX, None, None),  # Linux 2.6.x
    100: (_LINUX, None, "x86_64"),  # Linux 2.6.x 64-Bit
    101: (_LINUX, None, "x86_64"),  # Linux 64-Bit
    103: (_WINDOWS, "windows", "x86_64"),  # Microsoft Windows Server 2008 R2
    105: (_WINDOWS, "windows", None),  # Microsoft Windows 7
    106: (_LINUX, "centos", None),  # CentOS 32-bit
    107: (_LINUX, "centos", "x86_64"),  # CentOS 64-bit
    108: (_LINUX, None, None),  # Oracle Linux 32-bit
    109: (_LINUX, None, "x86_64"),  # Oracle Linux 64-bit
    111: (_WINDOWS, "windows", None),  # Microsoft Windows Server 2011
    112: (_WINDOWS, "windows", "x86_64"),  # Microsoft Windows Server 2012
    113: (_WINDOWS, "windows", None),  # Microsoft Windows 8
    114: (_WINDOWS, "windows", "x86_64"),  # Microsoft Windows 8 64-bit
    115: (_WINDOWS, "windows", "x86_64"),  # Microsoft Windows Server 2012 R2
}

#: vSphere API `VirtualMachineGuestOsIdentifier` (the values of vmw:osType: "ubuntu64Guest",
#: "rhel8_64Guest", "windows2019srv_64Guest", "other4xLinux64Guest"): the family is the leading
#: word, the version the digits after it, "64" before "Guest" a 64-bit x86 guest. Leading word ->
#: (os_type, os_distro, whether the digits are the distribution's version).
VMW_FAMILIES: dict[str, tuple[str | None, str | None, bool]] = {
    "ubuntu": (_LINUX, "ubuntu", False),
    "debian": (_LINUX, "debian", True),
    "rhel": (_LINUX, "rhel", True),
    "centos": (_LINUX, "centos", True),
    "rockylinux": (_LINUX, "rocky", False),
    "fedora": (_LINUX, "fedora", False),
    "opensuse": (_LINUX, "opensuse", False),
    "sles": (_LINUX, None, False),
    "oraclelinux": (_LINUX, None, False),
    "almalinux": (_LINUX, None, False),
    "photon": (_LINUX, None, False),
    "coreos": (_LINUX, None, False),
    "asianux": (_LINUX, None, False),
    "mandrake": (_LINUX, "mandrake", False),
    "mandriva": (_LINUX, "mandriva", False),
    "genericlinux": (_LINUX, None, False),
    "other": (None, None, False),  # other24xLinux, other3xLinux, other4xLinux, otherLinux: below
    "freebsd": (None, "freebsd", True),
    "netware": (None, "netware", False),
    "solaris": (None, None, False),
    "dos": (None, "msdos", False),
    "win": (_WINDOWS, "windows", False),
    "windows": (_WINDOWS, "windows", False),
}
_VMW_OS_TYPE = re.compile(r"([a-zA-Z]+)([0-9]*)[a-zA-Z0-9_-]*")

#: VirtualBox's guest OS type ids (its `Global::sOSTypes`: "Ubuntu_64", "Debian", "RedHat_64",
#: "Windows10_64"...): the family before the digits and "_64" (a 64-bit x86 guest).
VBOX_FAMILIES: dict[str, tuple[str | None, str | None]] = {
    "ubuntu": (_LINUX, "ubuntu"),
    "debian": (_LINUX, "debian"),
    "redhat": (_LINUX, "rhel"),
    "fedora": (_LINUX, "fedora"),
    "opensuse": (_LINUX, "opensuse"),
    "archlinux": (_LINUX, "arch"),
    "gentoo": (_LINUX, "gentoo"),
    "mandriva": (_LINUX, "mandriva"),
    "oracle": (_LINUX, None),
    "linux": (_LINUX, None),
    "freebsd": (None, "freebsd"),
    "openbsd": (None, "openbsd"),
    "netbsd": (None, "netbsd"),
    "opensolaris": (None, "opensolaris"),
    "dos": (None, "msdos"),
    "windows": (_WINDOWS, "windows"),
}
_VBOX_OS_TYPE = re.compile(r"([A-Za-z]+?)([0-9]*)(_64)?")


def from_cim(cim_id: int | None) -> GuestOs:
    known = CIM_OS_TYPES.get(cim_id) if cim_id is not None else None
    if known is None:
        return GuestOs()
    os_type, distro, arch = known
    return GuestOs(os_type=os_type, os_distro=distro, architecture=arch)


def from_vmw(os_type: str | None) -> GuestOs:
    name = os_type or ""
    is64 = name.endswith(("64Guest", "Guest64"))
    stem = re.sub(r"_?(?:64Guest|Guest64|Guest)$", "", name)
    match = _VMW_OS_TYPE.fullmatch(stem)
    if match is None or stem == name:
        return GuestOs()
    family, digits = match.group(1).lower(), match.group(2)
    architecture = "x86_64" if is64 else "i686"
    if family.startswith("other") and "linux" in name.lower():
        return GuestOs(os_type=_LINUX, architecture=architecture)
    if family.startswith("win"):
        family = "win"
    known = VMW_FAMILIES.get(family)
    if known is None or family == "other":
        return GuestOs()
    kind, distro, versioned = known
    return GuestOs(
        os_type=kind,
        os_distro=distro,
        os_version=digits if versioned and digits else None,
        architecture=architecture,
    )


def from_vbox(os_type: str | None) -> GuestOs:
    match = _VBOX_OS_TYPE.fullmatch(os_type or "")
    if match is None:
        return GuestOs()
    family = match.group(1).lower()
    if family.startswith("win"):
        family = "windows"
    known = VBOX_FAMILIES.get(family)
    if known is None:
        return GuestOs()
    kind, distro = known
    return GuestOs(os_type=kind, os_distro=distro, architecture="x86_64" if match.group(3) else "i686")


def guest_os(operating_system: OvfOperatingSystem | None, vbox_os_type: str | None) -> GuestOs:
    """The guest OS, VMware's osType first, then VirtualBox's OSType, then the CIM id (the least
    specific); each part from the first that states it. `ovf:version` is the stated version."""
    if operating_system is None and vbox_os_type is None:
        return GuestOs()
    os = operating_system or OvfOperatingSystem()
    sources = [from_vmw(os.vmw_os_type), from_vbox(os.vbox_os_type or vbox_os_type), from_cim(os.cim_id)]
    return GuestOs(
        os_type=next((s.os_type for s in sources if s.os_type), None),
        os_distro=next((s.os_distro for s in sources if s.os_distro), None),
        os_version=os.version or next((s.os_version for s in sources if s.os_version), None),
        architecture=next((s.architecture for s in sources if s.architecture), None),
    )


# --- Firmware, NICs, CPUs, memory --------------------------------------------------------------

#: vmw:Config key="firmware" (vSphere `VirtualMachineConfigSpec.firmware`: bios, efi), and
#: VirtualBox's `Firmware/@type` (BIOS, EFI, EFI32, EFI64, EFIDUAL) -> Nova's hw_firmware_type.
VMW_FIRMWARE = {"efi": "uefi", "bios": "bios"}
VBOX_FIRMWARE = {"bios": "bios", "efi": "uefi", "efi32": "uefi", "efi64": "uefi", "efidual": "uefi"}


def firmware(system: OvfVirtualSystem) -> str | None:
    stated = system.config.get("firmware")
    if stated is not None:
        return VMW_FIRMWARE.get(stated.lower())
    if system.vbox_firmware is not None:
        return VBOX_FIRMWARE.get(system.vbox_firmware.lower())
    return None


#: NIC ResourceSubType (lower-cased) -> Nova's hw_vif_model (Glance metadefs
#: `compute-libvirt-image.json`: e1000, e1000e, vmxnet3, pcnet, virtio...). VMware's words:
#: E1000, E1000e, VmxNet3, PCNet32; VirtualBox's: E1000, PCNet32, virtio. VmxNet2 and Vlance have
#: no Nova word: nothing is written for them.
NIC_MODELS = {
    "e1000": "e1000",
    "e1000e": "e1000e",
    "vmxnet3": "vmxnet3",
    "pcnet32": "pcnet",
    "virtio": "virtio",
}


def nics(system: OvfVirtualSystem) -> list[OvfDevice]:
    return [d for d in system.devices if d.resource_type == RESOURCE_ETHERNET]


def vif_model(nic: OvfDevice) -> str | None:
    return next((NIC_MODELS[s.lower()] for s in nic.resource_subtypes if s.lower() in NIC_MODELS), None)


def quantity(system: OvfVirtualSystem, resource_type: int) -> OvfDevice | None:
    return next((d for d in system.devices if d.resource_type == resource_type), None)


def memory_mib(system: OvfVirtualSystem) -> int | None:
    item = quantity(system, RESOURCE_MEMORY)
    if item is None or item.virtual_quantity is None:
        return None
    multiplier = unit_multiplier(item.allocation_units or "byte * 2^20")
    return item.virtual_quantity * multiplier // (1 << 20) if multiplier else None


#: What a disk's own header says of its controller (the VMDK descriptor's ddb.adapterType), which
#: the descriptor's controller, when it states one, replaces.
CONTROLLER_PROPERTIES = frozenset({"vmware_adaptertype", "hw_disk_bus", "hw_scsi_model"})


def replaced(descriptor: OvfDescriptor, boot: BootDisk | None) -> frozenset[str]:
    """The boot disk's own properties the descriptor replaces: its controller's, when stated."""
    single = len(descriptor.virtual_systems) == 1
    return (
        CONTROLLER_PROPERTIES if single and boot is not None and boot.controller is not None else frozenset()
    )


def properties(descriptor: OvfDescriptor, boot: BootDisk | None) -> dict[str, str]:
    """The container layer's properties: Nova's names first, then `introspect_ovf_*`. A descriptor
    with several virtual systems gives only what is not one system's (the disk count)."""
    out: dict[str, str] = {}
    single = descriptor.virtual_systems[0] if len(descriptor.virtual_systems) == 1 else None
    if single is not None:
        os = guest_os(single.operating_system, single.vbox_os_type)
        for key, value in (
            ("os_type", os.os_type),
            ("os_distro", os.os_distro),
            ("os_version", os.os_version),
            ("architecture", os.architecture),
        ):
            if value:
                out[key] = value
        vmw_os_type = single.operating_system.vmw_os_type if single.operating_system else None
        if vmw_os_type and vocabulary.check("vmware_ostype", vmw_os_type) is None:
            out["vmware_ostype"] = vmw_os_type  # only a guest id Nova's VMware driver knows
        kind = firmware(single)
        if kind:
            out["hw_firmware_type"] = kind
    controller = boot.controller if boot is not None and single is not None else None
    if controller is not None:
        if controller.vmware_adaptertype:
            out["vmware_adaptertype"] = controller.vmware_adaptertype
        if controller.hw_disk_bus:
            out["hw_disk_bus"] = controller.hw_disk_bus
        if controller.hw_scsi_model:
            out["hw_scsi_model"] = controller.hw_scsi_model
    if single is not None:
        first_nics = nics(single)
        model = vif_model(first_nics[0]) if first_nics else None
        if model:
            out["hw_vif_model"] = model
        cpus = quantity(single, RESOURCE_PROCESSOR)
        if cpus is not None and cpus.virtual_quantity is not None:
            out["introspect_ovf_vcpus"] = str(cpus.virtual_quantity)
        memory = memory_mib(single)
        if memory is not None:
            out["introspect_ovf_memory_mib"] = str(memory)
        if single.system_types:
            out["introspect_ovf_hardware_version"] = " ".join(single.system_types)
        if controller is not None:
            out["introspect_ovf_disk_bus"] = controller.bus
        out["introspect_ovf_nics"] = str(len(first_nics))
        if vmw_os_type:
            out["introspect_ovf_vmware_ostype"] = vmw_os_type  # verbatim, known to Nova or not
    out["introspect_ovf_disks"] = str(len(descriptor.disks))
    if len(descriptor.virtual_systems) > 1:
        out["introspect_ovf_virtual_systems"] = str(len(descriptor.virtual_systems))
    return out
