"""VirtualBox Disk Image, as VirtualBox declares it in VBox/Storage/VDICore.h.

A VDI file starts with VDIPREHEADER (text for eyes only, the signature 0xbeda107f, the version),
followed by the header whose shape the major version picks: VDIHEADER0 for 0.x, VDIHEADER1 for
1.x, and VDIHEADER1PLUS (VDIHEADER1 plus the LCHS geometry) when VDIHEADER1.cbHeader covers it.
Then come the block map (one little-endian 32-bit pointer per block) at offBlocks and the data
blocks at offData. Everything is little-endian; UUIDs are RTUUIDs, stored like Microsoft GUIDs.

qemu (block/vdi.c) opens only version 1.1 with 1 MiB blocks, 512-byte sectors and no link or
parent UUID, and reports the disk size rounded up to a whole sector. The parse reads the headers
only, never the block map, so its reads do not grow with the virtual size.

The guest view reads the block map a page at a time as lookups need it
(`introspect.formats.blockmap`), as VirtualBox's VDI.cpp maps a block: a pointer below
cBlocksAllocated numbers the block's place in the data area, each place cbBlockExtra + cbBlock
bytes with the data after the extra bytes; VDI_IMAGE_BLOCK_FREE and VDI_IMAGE_BLOCK_ZERO read as
zeros.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import ClassVar, Literal

from introspect.decode import MIB, c_string, guid
from introspect.errors import BadField, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.formats.blockmap import BlockMappedView, Span, Table
from introspect.model import Finding, Frozen, Geometry, Severity
from introspect.properties import geometry_properties, header_properties
from introspect.safety import Policy, rule
from introspect.sources import Reader
from introspect.structure import LittleEndianStructure, chars, pad, u32, u64

BAD_HEADER = rule("vdi.bad_header", Severity.REJECT, "the VDI header contradicts VDICore.h")
DIFFERENCING = rule(
    "vdi.differencing", Severity.REJECT, "a differencing (or undo) VDI that needs its parent image"
)
QEMU_UNSUPPORTED = rule(
    "vdi.qemu_unsupported", Severity.REJECT, "a VDI variant that qemu's vdi driver refuses or misreads"
)
OUT_OF_SPEC = rule(
    "vdi.out_of_spec", Severity.WARN, "a VDI header value VirtualBox would not write, that qemu tolerates"
)
BAD_BLOCK_MAP = rule(
    "vdi.bad_block_map", Severity.REJECT, "a block map entry points past the allocated blocks"
)

#: VDI_IMAGE_SIGNATURE.
VDI_IMAGE_SIGNATURE = 0xBEDA107F
#: VDI_GEOMETRY_SECTOR_SIZE: the only sector size VirtualBox and qemu support.
VDI_GEOMETRY_SECTOR_SIZE = 512
#: VDI_IMAGE_DEFAULT_BLOCK_SIZE (VDI.cpp); qemu's DEFAULT_CLUSTER_SIZE, the only block size it opens.
VDI_IMAGE_DEFAULT_BLOCK_SIZE = 1 * MIB
#: qemu's VDI_BLOCKS_IN_IMAGE_MAX: the block map must stay addressable with 32-bit offsets.
VDI_BLOCKS_IN_IMAGE_MAX = 0x3FFFFFFF
#: sizeof(VDIIMAGEBLOCKPOINTER).
VDI_BLOCK_POINTER_SIZE = 4
#: The one version qemu opens (its VDI_VERSION_1_1), as (major, minor).
QEMU_VERSION = (1, 1)


def _version_major(version: int) -> int:
    """VDI_GET_VERSION_MAJOR."""
    return version >> 16


def _version_minor(version: int) -> int:
    """VDI_GET_VERSION_MINOR."""
    return version & 0xFFFF


#: VDIIMAGETYPE, by the words qemu and VBoxManage use for them.
IMAGE_TYPES: dict[int, Literal["dynamic", "static", "undo", "diff"]] = {
    1: "dynamic",  # VDI_IMAGE_TYPE_NORMAL
    2: "static",  # VDI_IMAGE_TYPE_FIXED
    3: "undo",  # VDI_IMAGE_TYPE_UNDO
    4: "diff",  # VDI_IMAGE_TYPE_DIFF
}
#: Image types that hold only changes against another image.
DELTA_TYPES = frozenset({"undo", "diff"})

#: fFlags bit 0 is VD_VDI_IMAGE_FLAGS_ZERO_EXPAND (0x0100) shifted down by 8 (VDICore.h
#: getImageFlags); VirtualBox rejects any other bit (VD_VDI_IMAGE_FLAGS_MASK).
ZERO_EXPAND_BIT = 0
FLAG_ZERO_EXPAND = 1 << ZERO_EXPAND_BIT
KNOWN_FLAGS = FLAG_ZERO_EXPAND


class VdiPreHeader(LittleEndianStructure):
    """VDIPREHEADER (VDICore.h)."""

    OFFSET: ClassVar[int] = 0

    file_info: bytes = chars(64)  # szFileInfo
    signature: int = u32()  # u32Signature
    version: int = u32()  # u32Version


class VdiDiskGeometry(LittleEndianStructure):
    """VDIDISKGEOMETRY (VDICore.h)."""

    cylinders: int = u32()  # cCylinders
    heads: int = u32()  # cHeads
    sectors: int = u32()  # cSectors
    sector_size: int = u32()  # cbSector

    def stated(self) -> Geometry | None:
        """The geometry, or None when VirtualBox marked it "not calculated" (all zero)."""
        if not (self.cylinders and self.heads and self.sectors):
            return None
        return Geometry(cylinders=self.cylinders, heads=self.heads, sectors=self.sectors)


class VdiHeader0(LittleEndianStructure):
    """VDIHEADER0 (VDICore.h), for VDI_IMAGE_VERSION_MAJOR 0; right after the pre-header."""

    OFFSET: ClassVar[int] = VdiPreHeader.SIZE

    type: int = u32()  # u32Type
    flags: int = u32()  # fFlags
    comment: bytes = chars(256)  # szComment
    legacy_geometry: bytes = chars(VdiDiskGeometry.SIZE)  # LegacyGeometry
    disk_size: int = u64()  # cbDisk
    block_size: int = u32()  # cbBlock
    blocks: int = u32()  # cBlocks
    blocks_allocated: int = u32()  # cBlocksAllocated
    uuid_create: bytes = chars(16)  # uuidCreate
    uuid_modify: bytes = chars(16)  # uuidModify
    uuid_linkage: bytes = chars(16)  # uuidLinkage


class VdiHeader1(LittleEndianStructure):
    """VDIHEADER1 (VDICore.h), for VDI_IMAGE_VERSION_MAJOR 1; right after the pre-header."""

    OFFSET: ClassVar[int] = VdiPreHeader.SIZE

    header_size: int = u32()  # cbHeader
    type: int = u32()  # u32Type
    flags: int = u32()  # fFlags
    comment: bytes = chars(256)  # szComment
    offset_blocks: int = u32()  # offBlocks
    offset_data: int = u32()  # offData
    legacy_geometry: bytes = chars(VdiDiskGeometry.SIZE)  # LegacyGeometry
    dummy: None = pad(4)  # u32Dummy, was the BIOS translation mode
    disk_size: int = u64()  # cbDisk
    block_size: int = u32()  # cbBlock
    block_extra: int = u32()  # cbBlockExtra
    blocks: int = u32()  # cBlocks
    blocks_allocated: int = u32()  # cBlocksAllocated
    uuid_create: bytes = chars(16)  # uuidCreate
    uuid_modify: bytes = chars(16)  # uuidModify
    uuid_linkage: bytes = chars(16)  # uuidLinkage
    uuid_parent_modify: bytes = chars(16)  # uuidParentModify


#: VDIHEADER1PLUS is VDIHEADER1 followed by the LCHS geometry (a VDIDISKGEOMETRY), present when
#: cbHeader is at least its size.
LCHS_OFFSET = VdiHeader1.OFFSET + VdiHeader1.SIZE
HEADER1_PLUS_SIZE = VdiHeader1.SIZE + VdiDiskGeometry.SIZE
#: The header after VDIPREHEADER is at least as big as VDIHEADER1 for version 1 (vdiValidateHeader).
V1_HEADER_MIN = VdiHeader1.SIZE
#: Where the block map is for version 0: right after VDIHEADER0 (getImageBlocksOffset).
V0_OFFSET_BLOCKS = VdiHeader0.OFFSET + VdiHeader0.SIZE


class VdiDetails(Frozen):
    """What a VDI header states (VDICore.h); sizes in bytes, UUIDs canonical, None when unset."""

    format: Literal["vdi"] = "vdi"
    version: int
    version_minor: int
    image_type: Literal["dynamic", "static", "undo", "diff"]
    flags: int
    description: str
    header_size: int | None  # cbHeader; version 0 has none
    offset_blocks: int
    offset_data: int
    legacy_geometry: Geometry | None
    lchs_geometry: Geometry | None
    geometry: Geometry | None  # LCHS when stated, else the legacy geometry
    sector_size: int
    disk_size: int
    block_size: int
    block_extra_data: int
    blocks: int
    blocks_allocated: int
    uuid: str | None  # uuidCreate
    uuid_modify: str | None
    uuid_link: str | None  # uuidLinkage: the parent of a differencing image
    uuid_parent: str | None  # uuidParentModify (version 1 only)


def _uuid(raw: bytes) -> str | None:
    """An RTUUID (stored like a Microsoft GUID) in canonical form; None for the null UUID."""
    return None if raw == bytes(16) else guid(raw)


def probe(head: Head) -> bool:
    if len(head.data) < VdiPreHeader.SIZE:
        return False
    return VdiPreHeader.unpack(head.data).signature == VDI_IMAGE_SIGNATURE


def inspect(reader: Reader, policy: Policy) -> Inspection[VdiDetails]:
    pre = VdiPreHeader.read(reader, "VDI pre-header")
    if pre.signature != VDI_IMAGE_SIGNATURE:
        raise BadField(BAD_HEADER, "signature", hex(pre.signature), hex(VDI_IMAGE_SIGNATURE), offset=0)
    major, minor = _version_major(pre.version), _version_minor(pre.version)
    if major == 0:
        details = _version0(reader, pre)
    elif major == 1:
        details = _version1(reader, pre)
    else:
        raise BadField(
            BAD_HEADER,
            "version",
            f"{major}.{minor}",
            "0.x or 1.x",
            offset=0,
            advice="this is not a VDI any VirtualBox release wrote",
        )
    _check_layout(reader, details)
    findings = [*_qemu_findings(details), *_spec_findings(details)]
    # qemu rounds an odd disk size (VBoxManage convertfromraw writes them) up to a whole sector.
    virtual_size = -(-details.disk_size // VDI_GEOMETRY_SECTOR_SIZE) * VDI_GEOMETRY_SECTOR_SIZE
    return Inspection(details=details, virtual_size=virtual_size, findings=findings)


def _version0(reader: Reader, pre: VdiPreHeader) -> VdiDetails:
    """VDIHEADER0: no header size, no offsets (they follow from the header), no parent UUID."""
    header = VdiHeader0.read(reader, "VDI header")
    _check_counts(header.blocks, header.blocks_allocated, header.block_size, header.disk_size)
    legacy = VdiDiskGeometry.unpack(header.legacy_geometry)
    return VdiDetails(
        version=_version_major(pre.version),
        version_minor=_version_minor(pre.version),
        image_type=_image_type(header.type),
        flags=header.flags,
        description=c_string(header.comment),
        header_size=None,
        offset_blocks=V0_OFFSET_BLOCKS,
        offset_data=V0_OFFSET_BLOCKS + header.blocks * VDI_BLOCK_POINTER_SIZE,
        legacy_geometry=legacy.stated(),
        lchs_geometry=None,
        geometry=legacy.stated(),
        sector_size=legacy.sector_size,
        disk_size=header.disk_size,
        block_size=header.block_size,
        block_extra_data=0,
        blocks=header.blocks,
        blocks_allocated=header.blocks_allocated,
        uuid=_uuid(header.uuid_create),
        uuid_modify=_uuid(header.uuid_modify),
        uuid_link=_uuid(header.uuid_linkage),
        uuid_parent=None,
    )


def _version1(reader: Reader, pre: VdiPreHeader) -> VdiDetails:
    """VDIHEADER1, and VDIHEADER1PLUS's LCHS geometry for 1.1 when cbHeader covers it."""
    header = VdiHeader1.read(reader, "VDI header")
    offset = VdiHeader1.OFFSET
    if header.offset_blocks < VdiHeader1.OFFSET + V1_HEADER_MIN:
        raise BadField(
            BAD_HEADER,
            "offBlocks",
            header.offset_blocks,
            f"at least {VdiHeader1.OFFSET + V1_HEADER_MIN}, after the header",
            offset=offset,
        )
    # The header runs from after the pre-header up to the block map, at most.
    header_max = header.offset_blocks - VdiHeader1.OFFSET
    if not V1_HEADER_MIN <= header.header_size <= header_max:
        raise BadField(
            BAD_HEADER,
            "cbHeader",
            header.header_size,
            f"{V1_HEADER_MIN}..{header_max} (from sizeof(VDIHEADER1) to where the block map starts)",
            offset=offset,
        )
    _check_counts(header.blocks, header.blocks_allocated, header.block_size, header.disk_size)
    map_end = header.offset_blocks + header.blocks * VDI_BLOCK_POINTER_SIZE
    if header.offset_data < map_end:
        raise BadField(
            BAD_HEADER,
            "offData",
            header.offset_data,
            f"at least {map_end}, after the block map",
            offset=offset,
        )
    lchs = None
    if _version_minor(pre.version) == 1 and header.header_size >= HEADER1_PLUS_SIZE:
        lchs = VdiDiskGeometry.read(reader, "VDI LCHS geometry", LCHS_OFFSET)
    legacy = VdiDiskGeometry.unpack(header.legacy_geometry)
    lchs_stated = lchs.stated() if lchs else None
    return VdiDetails(
        version=_version_major(pre.version),
        version_minor=_version_minor(pre.version),
        image_type=_image_type(header.type),
        flags=header.flags,
        description=c_string(header.comment),
        header_size=header.header_size,
        offset_blocks=header.offset_blocks,
        offset_data=header.offset_data,
        legacy_geometry=legacy.stated(),
        lchs_geometry=lchs_stated,
        geometry=lchs_stated or legacy.stated(),
        sector_size=legacy.sector_size,
        disk_size=header.disk_size,
        block_size=header.block_size,
        block_extra_data=header.block_extra,
        blocks=header.blocks,
        blocks_allocated=header.blocks_allocated,
        uuid=_uuid(header.uuid_create),
        uuid_modify=_uuid(header.uuid_modify),
        uuid_link=_uuid(header.uuid_linkage),
        uuid_parent=_uuid(header.uuid_parent_modify),
    )


def _image_type(value: int) -> Literal["dynamic", "static", "undo", "diff"]:
    if value not in IMAGE_TYPES:
        raise BadField(
            BAD_HEADER,
            "u32Type",
            value,
            "1 (dynamic), 2 (static), 3 (undo) or 4 (diff)",
            offset=VdiPreHeader.SIZE,
        )
    return IMAGE_TYPES[value]


def _check_counts(blocks: int, allocated: int, block_size: int, disk_size: int) -> None:
    """What both VirtualBox (vdiValidateHeader) and qemu (vdi_open) refuse."""
    offset = VdiPreHeader.SIZE
    if blocks > VDI_BLOCKS_IN_IMAGE_MAX:
        raise BadField(BAD_HEADER, "cBlocks", blocks, f"at most {VDI_BLOCKS_IN_IMAGE_MAX}", offset=offset)
    if allocated > blocks:
        raise BadField(
            BAD_HEADER, "cBlocksAllocated", allocated, f"at most cBlocks ({blocks})", offset=offset
        )
    if block_size == 0 or block_size & (block_size - 1):
        raise BadField(BAD_HEADER, "cbBlock", block_size, "a power of two", offset=offset)
    if disk_size > blocks * block_size:
        raise BadField(
            BAD_HEADER,
            "cbDisk",
            disk_size,
            f"at most cBlocks * cbBlock = {blocks * block_size}, what the block map can hold",
            offset=offset,
        )


def _check_layout(reader: Reader, details: VdiDetails) -> None:
    """The block map and every allocated block must lie inside the file (no read needed)."""
    map_length = details.blocks * VDI_BLOCK_POINTER_SIZE
    if details.offset_blocks + map_length > reader.size:
        raise TruncatedImage(
            "VDI block map", offset=details.offset_blocks, length=map_length, size=reader.size
        )
    data_length = details.blocks_allocated * (details.block_size + details.block_extra_data)
    if details.offset_data + data_length > reader.size:
        raise TruncatedImage(
            f"VDI data area of {details.blocks_allocated} allocated blocks",
            offset=details.offset_data,
            length=data_length,
            size=reader.size,
        )


def _qemu_findings(details: VdiDetails) -> Iterator[Finding]:
    """What qemu's vdi_open refuses (or, for cbBlockExtra, silently misreads)."""
    reasons = []
    if (details.version, details.version_minor) != QEMU_VERSION:
        reasons.append(f"version {details.version}.{details.version_minor}, qemu opens 1.1 only")
    if details.block_size != VDI_IMAGE_DEFAULT_BLOCK_SIZE:
        reasons.append(f"block size {details.block_size}, qemu needs {VDI_IMAGE_DEFAULT_BLOCK_SIZE}")
    if details.block_extra_data:
        reasons.append(f"{details.block_extra_data} extra bytes per block, which qemu would read as data")
    if details.sector_size != VDI_GEOMETRY_SECTOR_SIZE:
        reasons.append(f"sector size {details.sector_size}, qemu needs {VDI_GEOMETRY_SECTOR_SIZE}")
    if details.offset_blocks % VDI_GEOMETRY_SECTOR_SIZE or details.offset_data % VDI_GEOMETRY_SECTOR_SIZE:
        reasons.append("block map or data offset not on a sector boundary")
    if reasons:
        yield QEMU_UNSUPPORTED.finding(
            f"qemu cannot use this VDI ({'; '.join(reasons)}): clone it with VirtualBox "
            "(`VBoxManage clonemedium disk IN.vdi OUT.vdi`, which writes version 1.1 with 1 MiB blocks) "
            "and upload the clone"
        )


def _spec_findings(details: VdiDetails) -> Iterator[Finding]:
    """Values VirtualBox's vdiValidateHeader refuses but qemu reads past, and needless blocks."""
    if details.flags & ~KNOWN_FLAGS:
        yield OUT_OF_SPEC.finding(
            f"image flags {details.flags:#x} carry bits VirtualBox does not define: "
            "VirtualBox will refuse the image; clone it with `qemu-img convert -O vdi`"
        )
    needed = -(-details.disk_size // details.block_size)
    if details.blocks != needed:
        yield OUT_OF_SPEC.finding(
            f"the header declares {details.blocks} blocks where a {details.disk_size}-byte disk needs "
            f"{needed}: VirtualBox and qemu never write this; re-create it with `qemu-img convert -O vdi`"
        )
    if details.uuid is None or details.uuid_modify is None:
        yield OUT_OF_SPEC.finding(
            "the creation or modification UUID is null: VirtualBox will refuse the image; "
            "give it UUIDs with `VBoxManage internalcommands sethduuid` or re-create it with "
            "`qemu-img convert -O vdi`"
        )


def check_parent(details: VdiDetails, policy: Policy) -> Iterator[Finding]:
    """A differencing or undo image holds only changes: without its parent it is not a disk."""
    if details.image_type in DELTA_TYPES or details.uuid_link or details.uuid_parent:
        parent = details.uuid_link or details.uuid_parent or "not named"
        yield DIFFERENCING.finding(
            f"this is a {details.image_type} VDI whose parent image is {parent}: it holds only changes; "
            "merge it into its parent with VirtualBox (`VBoxManage clonemedium` on the child) and upload "
            "the result"
        )


def properties(details: VdiDetails) -> dict[str, str]:
    """The geometry (LCHS, else legacy), the header's major version and the block size."""
    return {
        **geometry_properties(details.geometry),
        **header_properties(version=details.version, block_size=details.block_size),
    }


# --- The guest view (VDICore.h block map; VDI.cpp vdiRead) --------------------------------------

#: The block map is a flat array of little-endian VDIIMAGEBLOCKPOINTERs, looked up one at a time.
BLOCK_POINTER = struct.Struct("<I")
#: VDI_IMAGE_BLOCK_FREE (never written: reads as zeros, or the parent's data in a differencing
#: image) and VDI_IMAGE_BLOCK_ZERO (discarded: reads as zeros).
VDI_IMAGE_BLOCK_FREE = 0xFFFFFFFF
VDI_IMAGE_BLOCK_ZERO = 0xFFFFFFFE


class VdiGuestView(BlockMappedView):
    """The guest's disk through the block map (see the module docstring)."""

    def __init__(self, reader: Reader, details: VdiDetails) -> None:
        parent = None
        if details.image_type in DELTA_TYPES or details.uuid_link or details.uuid_parent:
            parent = f"the parent image {details.uuid_link or details.uuid_parent or '(not named)'}"
        super().__init__(
            reader,
            # qemu rounds an odd disk size up to a whole sector, as `inspect` reports it.
            size=-(-details.disk_size // VDI_GEOMETRY_SECTOR_SIZE) * VDI_GEOMETRY_SECTOR_SIZE,
            unit=details.block_size,
            what="VDI data block",
            incomplete=parent,
        )
        self.block_map = Table(details.offset_blocks, details.blocks, BLOCK_POINTER, "VDI block map")
        self.blocks_allocated = details.blocks_allocated
        self.offset_data = details.offset_data
        self.block_extra = details.block_extra_data

    def spans(self, block: int, start: int, end: int) -> list[Span]:
        if block >= self.block_map.count:
            return []  # the last sector's tail past cBlocks * cbBlock (the size rounds up)
        (pointer,) = self.block_map.get(self.pages, block)
        if pointer in (VDI_IMAGE_BLOCK_FREE, VDI_IMAGE_BLOCK_ZERO):
            return []
        if pointer >= self.blocks_allocated:
            raise BadField(
                BAD_BLOCK_MAP,
                f"block map entry {block}",
                pointer,
                f"below cBlocksAllocated ({self.blocks_allocated}), or free or zero",
                offset=self.block_map.offset + block * VDI_BLOCK_POINTER_SIZE,
                advice="`qemu-img check -f vdi` reports such an entry; re-export the disk from its source",
            )
        return [
            Span(file_offset=self.offset_data + pointer * (self.block_extra + self.unit) + self.block_extra)
        ]


def guest_view(reader: Reader, details: VdiDetails) -> VdiGuestView:
    """The guest's disk, static or dynamic; a differencing image's free blocks read as zeros."""
    return VdiGuestView(reader, details)


FORMAT = Format(
    name="vdi",
    qemu_name="vdi",
    probe=probe,
    inspect=inspect,
    checks=(check_parent,),
    details=VdiDetails,
    properties=properties,
    guest=guest_view,
)
