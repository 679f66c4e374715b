"""LVM2 physical volumes and the logical volumes their volume groups hold.

Spec: LVM2's own sources, as they write the disk: `lib/label/label.h` (`struct label_header`, the
LABELONE sector in one of the first 4 sectors, its CRC), `lib/format_text/layout.h` (`struct
pv_header` with its two NULL-terminated lists of `disk_locn`, data areas then metadata areas;
`struct mda_header` and its `raw_locn`s, the metadata area as a circular buffer),
`lib/misc/crc.c` (`calc_crc`: CRC-32 from INITIAL_CRC, without the final inversion) and
`lib/format_text/import_vsn1.c` with `lib/config/config.c` (the metadata text: nested
`name { key = value }` sections, values that are numbers, strings or flat lists).

What is read: linear LVs (segments of type "striped" with one stripe, possibly several segments on
several PVs), through `LogicalVolumeDisk`, which maps an LV's offsets to its extents on the PVs of
this disk. Everything else (striped, mirror, raid*, thin, thin-pool, cache, snapshot, vdo...) is
named, with a note and a `guest.unsupported_volume` finding, and not read; so is an LV that needs
a PV this disk does not hold (`guest.unreadable`). The metadata text is parsed by a small parser
with caps on its size, its nesting and its number of items.
"""

from __future__ import annotations

import bisect
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from introspect.decode import MIB
from introspect.errors import BudgetExceeded, ImageError
from introspect.guest.disk import BlockCache, Disk
from introspect.guest.model import Volume
from introspect.model import Finding
from introspect.safety import GUEST_UNREADABLE, GUEST_UNSUPPORTED_VOLUME
from introspect.sources import BytesSource, Reader
from introspect.structure import LittleEndianStructure, chars, u32, u64, unpack_array

# --- The label (lib/label/label.h) ---------------------------------------------------------------

SECTOR_SIZE = 512
#: LABEL_SCAN_SECTORS: the label is in one of the first 4 sectors (pvcreate writes it in sector 1).
LABEL_SCAN_SECTORS = 4
LABEL_ID = b"LABELONE"
#: LVM2_LABEL: the label type of the text format's PVs.
LVM2_LABEL = b"LVM2 001"
#: lib/misc/crc.h INITIAL_CRC.
INITIAL_CRC = 0xF597A6CF
#: ID_LEN: a UUID is 32 characters, printed in groups of 6-4-4-4-4-4-6 (lib/uuid/uuid.c).
ID_LEN = 32
UUID_GROUPS = (6, 4, 4, 4, 4, 4, 6)


class LabelHeader(LittleEndianStructure):
    """struct label_header (lib/label/label.h); crc_xl covers the sector from offset_xl on."""

    id: bytes = chars(8)
    sector_xl: int = u64()
    crc_xl: int = u32()
    offset_xl: int = u32()
    type: bytes = chars(8)


class PvHeader(LittleEndianStructure):
    """struct pv_header (lib/format_text/layout.h), followed by `disk_locn` lists."""

    pv_uuid: bytes = chars(ID_LEN)
    device_size_xl: int = u64()


class DiskLocn(LittleEndianStructure):
    """struct disk_locn (lib/format_text/layout.h): a byte range of the PV; a zero offset ends a list."""

    offset: int = u64()
    size: int = u64()


#: Where the CRC of the label sector starts (label_header.offset_xl, to the sector's end).
LABEL_CRC_FROM = LabelHeader.offset_of("offset_xl")

# --- The metadata area (lib/format_text/layout.h) --------------------------------------------------

#: FMTT_MAGIC and FMTT_VERSION of struct mda_header.
FMTT_MAGIC = b" LVM2 x[5A%r0N*>"
FMTT_VERSION = 1
#: MDA_HEADER_SIZE: the mda_header's sector; the circular buffer of texts follows it.
MDA_HEADER_SIZE = 512
#: RAW_LOCN_IGNORED: a metadata area the VG says not to use (pvchange --metadataignore).
RAW_LOCN_IGNORED_BIT = 0
RAW_LOCN_IGNORED = 1 << RAW_LOCN_IGNORED_BIT


class MdaHeader(LittleEndianStructure):
    """struct mda_header (lib/format_text/layout.h); checksum_xl covers the rest of its sector."""

    checksum_xl: int = u32()
    magic: bytes = chars(16)
    version: int = u32()
    start: int = u64()
    size: int = u64()


class RawLocn(LittleEndianStructure):
    """struct raw_locn: where the current text is, relative to the mda_header's start."""

    offset: int = u64()
    size: int = u64()
    checksum: int = u32()
    flags: int = u32()


MDA_CRC_FROM = MdaHeader.offset_of("magic")

# --- Caps -----------------------------------------------------------------------------------------

#: Data and metadata areas listed in a label: pvcreate writes one data area and at most two
#: metadata areas (--pvmetadatacopies 0..2); the lists also end where the label's sector does.
MAX_DISK_LOCNS = 8
#: raw_locn slots read in an mda_header: LVM uses the first (the committed text) and keeps a
#: zeroed one after it.
MAX_RAW_LOCNS = 4
#: The metadata text: pvcreate's default metadata area is 1 MiB, and LVM keeps the old text beside
#: the new one in it, so a text that fits any default area is under 1 MiB; bigger areas are made on
#: purpose for VGs with hundreds of LVs, which a guest image does not hold.
MAX_METADATA_SIZE = 1 * MIB
#: Nesting of sections: LVM writes 4 (VG / logical_volumes / LV / segment).
MAX_DEPTH = 16
#: Settings, sections and list values in one text: a VG of 256 LVs writes about 5,000.
MAX_ITEMS = 65536
#: Logical volumes named per VG, and segments per LV (each lvextend onto another range adds one).
MAX_LOGICAL_VOLUMES = 256
MAX_SEGMENTS = 256
#: Physical volumes of one VG.
MAX_PHYSICAL_VOLUMES = 256
#: extent_size, in sectors: vgcreate's default is 4 MiB; 16 GiB (2**25 sectors) is far beyond any VG
#: made for a guest, and keeps extent arithmetic on 64-bit offsets.
MAX_EXTENT_SECTORS = 1 << 25


class CorruptLvm(ImageError):
    """An LVM2 label, metadata area or metadata text contradicts itself or its caps: the VG it
    holds is not read from that PV (`guest.unreadable`)."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(GUEST_UNREADABLE, f"LVM2 on {device}: {message}")


def calc_crc(initial: int, data: bytes) -> int:
    """lib/misc/crc.c calc_crc: the reflected CRC-32 (zlib's polynomial) from `initial`, without
    zlib's inversion before and after."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def format_uuid(raw: bytes) -> str:
    """An LVM UUID as pvs and blkid print it: 32 characters in groups of 6-4-4-4-4-4-6."""
    text = raw.decode("ascii", errors="replace")
    parts = []
    at = 0
    for size in UUID_GROUPS:
        parts.append(text[at : at + size])
        at += size
    return "-".join(parts)


# --- The label and its areas ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhysicalVolumeLabel:
    """A PV's label: its UUID (as pvs prints it), size, and where its metadata areas are."""

    uuid: str
    device_size: int
    data_areas: tuple[tuple[int, int], ...]
    metadata_areas: tuple[tuple[int, int], ...]


def read_label(disk: Disk, device: str) -> PhysicalVolumeLabel | None:
    """The LVM2 label in the first 4 sectors of `disk`, or None when there is none. A label whose
    CRC does not match is no label to LVM either (it skips the device): `CorruptLvm` says so."""
    head = disk.read_upto(0, LABEL_SCAN_SECTORS * SECTOR_SIZE, "LVM2 label")
    for sector in range(LABEL_SCAN_SECTORS):
        at = sector * SECTOR_SIZE
        if len(head) < at + SECTOR_SIZE or not head.startswith(LABEL_ID, at):
            continue
        label = LabelHeader.unpack(head, at)
        if label.type != LVM2_LABEL:
            continue
        block = head[at : at + SECTOR_SIZE]
        if label.sector_xl != sector:
            raise CorruptLvm(device, f"the label in sector {sector} says it is in sector {label.sector_xl}")
        if calc_crc(INITIAL_CRC, block[LABEL_CRC_FROM:]) != label.crc_xl:
            raise CorruptLvm(
                device, f"the label's CRC does not match (sector {sector}): LVM ignores this PV too"
            )
        return _pv_header(block, label, device)
    return None


def _pv_header(block: bytes, label: LabelHeader, device: str) -> PhysicalVolumeLabel:
    if not LabelHeader.SIZE <= label.offset_xl <= SECTOR_SIZE - PvHeader.SIZE:
        raise CorruptLvm(device, f"the label's pv_header offset {label.offset_xl} is outside its sector")
    header = PvHeader.unpack(block, label.offset_xl)
    locations = unpack_array(DiskLocn, block, MAX_DISK_LOCNS * 2 + 2, label.offset_xl + PvHeader.SIZE)
    lists: list[list[tuple[int, int]]] = [[], []]
    current = 0
    for location in locations:
        if location.offset == 0:
            current += 1
            if current == len(lists):
                break
            continue
        if len(lists[current]) < MAX_DISK_LOCNS:
            lists[current].append((location.offset, location.size))
    data, metadata = lists
    return PhysicalVolumeLabel(
        uuid=format_uuid(header.pv_uuid),
        device_size=header.device_size_xl,
        data_areas=tuple(data),
        metadata_areas=tuple(metadata),
    )


def read_metadata_text(disk: Disk, label: PhysicalVolumeLabel, device: str) -> str | None:
    """The committed metadata text of the PV's first metadata area in use (None: the PV keeps no
    metadata, as with pvcreate --metadatacopies 0)."""
    for offset, _size in label.metadata_areas:
        header_bytes = disk.read(offset, MDA_HEADER_SIZE, "LVM2 mda_header")
        header = MdaHeader.unpack(header_bytes)
        if header.magic != FMTT_MAGIC or header.version != FMTT_VERSION:
            raise CorruptLvm(device, f"the metadata area at {offset} has no mda_header (magic or version)")
        if calc_crc(INITIAL_CRC, header_bytes[MDA_CRC_FROM:]) != header.checksum_xl:
            raise CorruptLvm(device, f"the mda_header at {offset} fails its checksum")
        if header.start != offset:
            raise CorruptLvm(device, f"the mda_header at {offset} says it starts at {header.start}")
        area_size = min(header.size, disk.size - offset)
        for locn in unpack_array(RawLocn, header_bytes, MAX_RAW_LOCNS, MdaHeader.SIZE):
            if locn.offset == 0:
                break
            if locn.flags & RAW_LOCN_IGNORED:
                continue
            return _text(disk, offset, area_size, locn, device)
    return None


def _text(disk: Disk, start: int, area_size: int, locn: RawLocn, device: str) -> str:
    """The text a raw_locn points to; it wraps to just after the mda_header at the area's end."""
    if not MDA_HEADER_SIZE <= locn.offset < area_size:
        raise CorruptLvm(
            device, f"the metadata text's offset {locn.offset} is outside its area of {area_size}"
        )
    if locn.size > min(MAX_METADATA_SIZE, area_size - MDA_HEADER_SIZE):
        raise CorruptLvm(device, f"the metadata text of {locn.size} bytes is larger than its area or the cap")
    first = min(locn.size, area_size - locn.offset)
    data = disk.read(start + locn.offset, first, "LVM2 metadata text")
    if first < locn.size:
        data += disk.read(start + MDA_HEADER_SIZE, locn.size - first, "LVM2 metadata text (wrapped)")
    if calc_crc(INITIAL_CRC, data) != locn.checksum:
        raise CorruptLvm(device, "the metadata text fails its checksum")
    return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")


# --- The metadata text ------------------------------------------------------------------------------

Value = int | float | str | list[int | float | str] | dict[str, "Value"]
Section = dict[str, Value]

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+|\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<word>[A-Za-z0-9_.+\-]+)
    | (?P<punct>[{}\[\]=,])
    """,
    re.VERBOSE | re.DOTALL,
)
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
#: NAME_LEN (lib/metadata/metadata-exported.h): VG and LV names are shorter, of these characters
#: (lib/misc/lvm-string.c validate_name), and never start with a hyphen.
NAME_LEN = 128
_NAME = re.compile(rf"[A-Za-z0-9+_.][A-Za-z0-9+_.\-]{{0,{NAME_LEN - 2}}}")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def parse_text(text: str, device: str = "the PV") -> Section:
    """LVM2's metadata text as nested dicts (lib/config/config.c's grammar: `key = value`,
    `name { ... }`, values that are numbers, strings or flat lists). At most MAX_METADATA_SIZE
    characters, MAX_DEPTH nested sections and MAX_ITEMS items; anything else is `CorruptLvm`."""
    if len(text) > MAX_METADATA_SIZE:
        raise CorruptLvm(device, f"the metadata text is longer than {MAX_METADATA_SIZE} characters")
    tokens = list(_tokens(text, device))
    root: Section = {}
    stack = [root]
    items = 0
    at = 0
    while at < len(tokens):
        items += 1
        if items > MAX_ITEMS:
            raise CorruptLvm(device, f"the metadata text has more than {MAX_ITEMS} items")
        kind, token = tokens[at]
        if kind == "punct" and token == "}":
            if len(stack) == 1:
                raise CorruptLvm(device, "the metadata text closes a section it never opened")
            stack.pop()
            at += 1
            continue
        if kind != "word" or at + 1 >= len(tokens):
            raise CorruptLvm(device, f"the metadata text has {token!r} where a name was expected")
        follower = tokens[at + 1][1]
        if follower == "{":
            if len(stack) > MAX_DEPTH:
                raise CorruptLvm(device, f"the metadata text nests sections deeper than {MAX_DEPTH}")
            section: Section = {}
            stack[-1].setdefault(token, section)
            stack.append(section)
            at += 2
        elif follower == "=":
            value, at = _value(tokens, at + 2, device)
            items += len(value) if isinstance(value, list) else 0
            stack[-1].setdefault(token, value)
        else:
            raise CorruptLvm(device, f"the metadata text has {follower!r} after the name {token!r}")
    if len(stack) != 1:
        raise CorruptLvm(device, "the metadata text ends inside a section")
    return root


def _tokens(text: str, device: str) -> Iterator[tuple[str, str]]:
    """The text's tokens; an item is at most 3 of them (a name, `=` and a value; a value and `,`)."""
    at = 0
    count = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise CorruptLvm(device, f"the metadata text has an unexpected character at {at}")
        at = match.end()
        kind = match.lastgroup or "space"
        if kind != "space":
            count += 1
            if count > 3 * MAX_ITEMS:
                raise CorruptLvm(device, f"the metadata text has more than {MAX_ITEMS} items")
            yield kind, match.group()


def _scalar(kind: str, token: str, device: str) -> int | float | str:
    if kind == "string":
        return _ESCAPE.sub(r"\1", token[1:-1])
    if kind == "word" and _NUMBER.fullmatch(token):
        return float(token) if "." in token else int(token)
    raise CorruptLvm(device, f"the metadata text has {token!r} where a value was expected")


def _value(tokens: list[tuple[str, str]], at: int, device: str) -> tuple[Value, int]:
    if at >= len(tokens):
        raise CorruptLvm(device, "the metadata text ends after '='")
    kind, token = tokens[at]
    if token != "[" or kind != "punct":
        return _scalar(kind, token, device), at + 1
    values: list[int | float | str] = []
    at += 1
    while at < len(tokens) and tokens[at][1] != "]":
        kind, token = tokens[at]
        if token == "," and kind == "punct":
            at += 1
            continue
        values.append(_scalar(kind, token, device))
        if len(values) > MAX_ITEMS:
            raise CorruptLvm(device, f"a list in the metadata text has more than {MAX_ITEMS} values")
        at += 1
    if at >= len(tokens):
        raise CorruptLvm(device, "the metadata text ends inside a list")
    return values, at + 1


# --- Volume groups ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stripe:
    """One stripe of a segment: a PV (by its name in the VG, pv0...) and its first extent."""

    pv: str
    extent: int


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment of an LV: extents [start_extent, start_extent + extent_count) of the LV."""

    start_extent: int
    extent_count: int
    type: str
    stripes: tuple[Stripe, ...]
    section: Section


@dataclass(frozen=True, slots=True)
class LogicalVolume:
    name: str
    visible: bool
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class PhysicalVolume:
    """A PV as its VG's metadata lists it (uuid as pvs prints it; pe_start in sectors)."""

    name: str
    uuid: str
    pe_start: int
    pe_count: int


@dataclass(frozen=True, slots=True)
class VolumeGroup:
    name: str
    id: str
    seqno: int
    extent_size: int
    physical_volumes: dict[str, PhysicalVolume]
    logical_volumes: tuple[LogicalVolume, ...]


def volume_group(text: str, device: str) -> VolumeGroup:
    """The VG described by a metadata text: its one top-level section."""
    root = parse_text(text, device)
    sections = [(name, value) for name, value in root.items() if isinstance(value, dict)]
    if len(sections) != 1:
        raise CorruptLvm(device, f"the metadata text holds {len(sections)} volume groups, not one")
    name, vg = sections[0]
    if not _NAME.fullmatch(name):
        raise CorruptLvm(
            device,
            f"the volume group's name {name[:NAME_LEN]!r} is not an LVM name (under {NAME_LEN} characters)",
        )
    extent_size = _number(vg, "extent_size", device, low=1, high=MAX_EXTENT_SECTORS)
    pvs: dict[str, PhysicalVolume] = {}
    for pv_name, pv in list(_sections(vg, "physical_volumes", device))[:MAX_PHYSICAL_VOLUMES]:
        pvs[pv_name] = PhysicalVolume(
            name=pv_name,
            uuid=_string(pv, "id", device),
            pe_start=_number(pv, "pe_start", device),
            pe_count=_number(pv, "pe_count", device),
        )
    lvs = [_logical_volume(lv_name, lv, device) for lv_name, lv in _sections(vg, "logical_volumes", device)]
    return VolumeGroup(
        name=name,
        id=_string(vg, "id", device),
        seqno=_number(vg, "seqno", device),
        extent_size=extent_size,
        physical_volumes=pvs,
        logical_volumes=tuple(lvs),
    )


def _logical_volume(name: str, lv: Section, device: str) -> LogicalVolume:
    if not _NAME.fullmatch(name):
        raise CorruptLvm(
            device,
            f"the logical volume name {name[:NAME_LEN]!r} is not an LVM name (under {NAME_LEN} characters)",
        )
    status = lv.get("status", [])
    segments = []
    for _, segment in list(_sections(lv, None, device))[:MAX_SEGMENTS]:
        raw = segment.get("stripes", [])
        stripes = raw if isinstance(raw, list) else []
        segments.append(
            Segment(
                start_extent=_number(segment, "start_extent", device),
                extent_count=_number(segment, "extent_count", device),
                type=_string(segment, "type", device),
                stripes=tuple(
                    Stripe(str(pv), extent)
                    for pv, extent in zip(stripes[::2], stripes[1::2], strict=False)
                    if isinstance(extent, int) and extent >= 0
                ),
                section=segment,
            )
        )
    return LogicalVolume(
        name=name,
        visible=isinstance(status, list) and "VISIBLE" in status,
        segments=tuple(sorted(segments, key=lambda s: s.start_extent)),
    )


def _sections(parent: Section, key: str | None, device: str) -> Iterator[tuple[str, Section]]:
    """The subsections of `parent[key]` (of `parent` itself when `key` is None), in order."""
    holder = parent if key is None else parent.get(key, {})
    if not isinstance(holder, dict):
        raise CorruptLvm(device, f"the metadata's {key} is not a section")
    for name, value in holder.items():
        if isinstance(value, dict):
            yield name, value


def _number(section: Section, key: str, device: str, *, low: int = 0, high: int = 1 << 63) -> int:
    value = section.get(key)
    if not isinstance(value, int) or not low <= value <= high:
        raise CorruptLvm(device, f"the metadata's {key} is {value!r}, not a number in {low}..{high}")
    return value


def _string(section: Section, key: str, device: str) -> str:
    value = section.get(key)
    if not isinstance(value, str):
        raise CorruptLvm(device, f"the metadata's {key} is {value!r}, not a string")
    return value


# --- Logical volumes as disks --------------------------------------------------------------------------


class LogicalVolumeDisk(Disk):
    """An LV read through the block cache of the guest's disk: each run of its bytes is a range of
    extents on a PV (`extents`: LV offset, disk offset, length, sorted and contiguous)."""

    def __init__(self, cache: BlockCache, extents: Sequence[tuple[int, int, int]], name: str) -> None:
        Reader.__init__(self, BytesSource(b"", name))
        self.cache = cache
        self.extents = list(extents)
        self.start = self.extents[0][1] if self.extents else 0
        self.size = sum(length for _, _, length in self.extents)
        self.name = name
        self._starts = [lv_offset for lv_offset, _, _ in self.extents]

    def read_upto(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0:
            return super().read_upto(offset, length, what)
        end = min(offset + length, self.size)
        parts = []
        index = bisect.bisect_right(self._starts, offset) - 1
        while offset < end and 0 <= index < len(self.extents):
            lv_offset, disk_offset, extent_length = self.extents[index]
            count = min(end, lv_offset + extent_length) - offset
            parts.append(self.cache.read(disk_offset + offset - lv_offset, count))
            offset += count
            index += 1
        return b"".join(parts)

    def slice(self, start: int, size: int, name: str) -> Disk:
        start = max(0, min(start, self.size))
        end = start + max(0, min(size, self.size - start))
        extents = []
        for lv_offset, disk_offset, length in self.extents:
            low, high = max(lv_offset, start), min(lv_offset + length, end)
            if low < high:
                extents.append((low - start, disk_offset + low - lv_offset, high - low))
        return LogicalVolumeDisk(self.cache, extents, name)


# --- The scan -----------------------------------------------------------------------------------------

#: Segment types read: "striped" with one stripe is what lvs calls linear.
LINEAR = "striped"
#: What is not read, by segment type (raid1, raid5_ls, raid10... as one family).
_WHY_NOT = {
    "raid": "mirrored and RAID LVs are not read",
    "mirror": "mirrored and RAID LVs are not read",
    "thin-pool": "thin provisioning is not read",
    "thin": "thin provisioning is not read",
    "cache": "cached LVs are not read",
    "cache-pool": "cached LVs are not read",
    "writecache": "cached LVs are not read",
    "vdo": "VDO (deduplicated, compressed) LVs are not read",
    "vdo-pool": "VDO (deduplicated, compressed) LVs are not read",
}


@dataclass(slots=True)
class LvmScan:
    """What LVM2 holds on the guest's disk: the PVs found (volume device -> PV UUID) and the LVs."""

    members: dict[str, str] = field(default_factory=dict)
    volumes: list[tuple[Volume, Disk]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def scan(candidates: Sequence[tuple[Volume, Disk]]) -> LvmScan:
    """The LVM2 PVs among `candidates` (partitions, or the whole disk) and the LVs of their VGs."""
    result = LvmScan()
    disks: dict[str, Disk] = {}  # PV UUID -> its volume
    groups: dict[str, VolumeGroup] = {}  # VG id -> the newest metadata seen
    for volume, disk in candidates:
        try:
            label = read_label(disk, volume.device)
            if label is None:
                continue
            result.members[volume.device] = label.uuid
            disks.setdefault(label.uuid, disk)
            text = read_metadata_text(disk, label, volume.device)
            if text is None:
                continue
            group = volume_group(text, volume.device)
        except BudgetExceeded:
            raise  # the guest pass stops there (introspect.guest.inspection)
        except ImageError as error:
            result.findings.append(error.rule.finding(str(error)))
            continue
        if group.id not in groups or group.seqno > groups[group.id].seqno:
            groups[group.id] = group
    for group in groups.values():
        result.volumes.extend(_group_volumes(group, disks, result.findings))
    return result


def _group_volumes(
    group: VolumeGroup, disks: dict[str, Disk], findings: list[Finding]
) -> Iterator[tuple[Volume, Disk]]:
    by_name = {lv.name: lv for lv in group.logical_volumes}
    snapshots = {
        str(segment.section.get("cow_store")): lv
        for lv in group.logical_volumes
        for segment in lv.segments
        if segment.type == "snapshot"
    }
    named = 0
    for lv in group.logical_volumes:
        if not lv.visible or lv.name in snapshots:
            continue
        snapshot = next((s for s in lv.segments if s.type == "snapshot"), None)
        if snapshot is not None:
            # A snapshot's visible LV holds the snapshot segment; the device is named after its COW store.
            cow = snapshot.section.get("cow_store")
            target = by_name.get(cow, lv) if isinstance(cow, str) else lv
            name = target.name
            origin = snapshot.section.get("origin")
            of = origin if isinstance(origin, str) and _NAME.fullmatch(origin) else "an LV"
            note = f"a snapshot of {of}: snapshots are not read"
        else:
            target, name, note = lv, lv.name, None
        named += 1
        if named > MAX_LOGICAL_VOLUMES:
            findings.append(
                GUEST_UNREADABLE.finding(
                    f"the volume group {group.name} has more than {MAX_LOGICAL_VOLUMES} logical volumes; "
                    "only those are listed"
                )
            )
            return
        yield _logical_volume_entry(group, target, f"/dev/{group.name}/{name}", note, disks, findings)


def _logical_volume_entry(
    group: VolumeGroup,
    lv: LogicalVolume,
    device: str,
    note: str | None,
    disks: dict[str, Disk],
    findings: list[Finding],
) -> tuple[Volume, Disk]:
    extent_bytes = group.extent_size * SECTOR_SIZE
    size = sum(segment.extent_count for segment in lv.segments) * extent_bytes
    any_disk = next(iter(disks.values()))
    empty = Disk(any_disk.cache, 0, 0, device)
    if note is None:
        note = _unsupported(lv)
    if note is not None:
        findings.append(GUEST_UNSUPPORTED_VOLUME.finding(f"{device}: {note}"))
        return Volume(device=device, start=_first_offset(group, lv, disks), size=size, note=note), empty
    missing = sorted(
        {stripe.pv for s in lv.segments for stripe in s.stripes if _pv_disk(group, stripe.pv, disks) is None}
    )
    if missing:
        names = ", ".join(
            f"{pv} ({group.physical_volumes[pv].uuid})" if pv in group.physical_volumes else pv
            for pv in missing
        )
        note = f"needs the physical volume(s) {names}, not on this disk"
        findings.append(
            GUEST_UNREADABLE.finding(
                f"{device} {note}: the volume group {group.name} spans other disks; upload them together "
                "or move the LV onto this disk (pvmove) before imaging"
            )
        )
        return Volume(device=device, start=0, size=size, note=note), empty
    extents, cut = _extents(group, lv, disks)
    if cut:
        findings.append(
            GUEST_UNREADABLE.finding(
                f"{device}: {cut}; what lies beyond reads as missing: the image may be cut short"
            )
        )
    mapped = LogicalVolumeDisk(any_disk.cache, extents, device)
    return Volume(device=device, start=mapped.start, size=size), mapped


def _unsupported(lv: LogicalVolume) -> str | None:
    """Why an LV's content is not read, or None for a linear LV (contiguous striped segments of
    one stripe each, from extent 0)."""
    if not lv.segments:
        return "no segments"
    expected = 0
    for segment in lv.segments:
        if segment.type != LINEAR:
            family = "raid" if segment.type.startswith("raid") else segment.type
            return f"a {segment.type} LV: {_WHY_NOT.get(family, 'not read')}"
        if len(segment.stripes) != 1:
            return f"striped over {len(segment.stripes)} PVs: striped LVs are not read"
        if segment.start_extent != expected:
            return f"its segments leave a gap at extent {expected}"
        expected += segment.extent_count
    return None


def _pv_disk(group: VolumeGroup, pv: str, disks: dict[str, Disk]) -> Disk | None:
    physical = group.physical_volumes.get(pv)
    return None if physical is None else disks.get(physical.uuid)


def _first_offset(group: VolumeGroup, lv: LogicalVolume, disks: dict[str, Disk]) -> int:
    """Where an LV's first segment starts on the guest's disk, when its PV is here (else 0)."""
    for segment in lv.segments:
        for stripe in segment.stripes:
            disk = _pv_disk(group, stripe.pv, disks)
            if disk is not None:
                pv = group.physical_volumes[stripe.pv]
                return disk.start + (pv.pe_start + stripe.extent * group.extent_size) * SECTOR_SIZE
        return 0
    return 0


def _extents(
    group: VolumeGroup, lv: LogicalVolume, disks: dict[str, Disk]
) -> tuple[list[tuple[int, int, int]], str | None]:
    """(LV offset, disk offset, length) of each linear segment, clamped to its PV's volume."""
    extent_bytes = group.extent_size * SECTOR_SIZE
    extents = []
    cut = None
    for segment in lv.segments:
        stripe = segment.stripes[0]
        disk = _pv_disk(group, stripe.pv, disks)
        if disk is None:  # the caller names an LV with a missing PV before it maps one
            break
        pv = group.physical_volumes[stripe.pv]
        start = pv.pe_start * SECTOR_SIZE + stripe.extent * extent_bytes
        length = segment.extent_count * extent_bytes
        available = max(0, min(length, disk.size - start))
        if available < length or stripe.extent + segment.extent_count > pv.pe_count:
            cut = cut or f"segment at extent {segment.start_extent} runs past the end of its PV {stripe.pv}"
        if available:
            extents.append((segment.start_extent * extent_bytes, disk.start + start, available))
        if available < length:
            break
    return extents, cut
