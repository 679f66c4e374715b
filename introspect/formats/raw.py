"""Raw disks: no container format. MBR/GPT partition tables, else libmagic's word for the content.

A file is `raw` when no probed format claims it. That is not a verdict that it is a disk: an
upload that saved an HTML error page, a tarball or a compressed image is also "raw" to qemu. So
the content must look like a disk: a partition table (see `introspect.formats.partitions`), or
what libmagic calls data of no known type (`application/octet-stream`: zeros, as
`qemu-img create -f raw` makes, and most filesystems), or a filesystem or boot sector by name.
Anything else gets `raw.not_a_disk_image`, with libmagic's description and what to do.

The virtual size of a raw disk is its file size rounded up to whole 512-byte sectors, as
`qemu-img info -f raw` says (qemu's block layer counts in sectors: `bdrv_refresh_total_sectors`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from introspect.decode import all_zeros
from introspect.errors import TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.formats.partitions import (
    LOGICAL_BLOCK_SIZE,
    Gpt,
    Mbr,
    PartitionTable,
    boot_evidence,
    firmware_from,
    read_partition_table,
)
from introspect.model import Finding, Firmware, Frozen, Severity
from introspect.properties import firmware_properties
from introspect.safety import NOT_A_DISK, Policy, rule
from introspect.sources import HEAD_SIZE, Reader

if TYPE_CHECKING:
    import magic

PARTITION_BEYOND_END = rule(
    "raw.partition_beyond_end", Severity.WARN, "a partition ends past the end of the raw disk"
)

#: libmagic's MIME type for bytes it cannot name: zeros, and most filesystems' superblocks.
OCTET_STREAM = "application/octet-stream"
#: libmagic descriptions that name a disk, a filesystem or a boot sector (its magic database words).
DISK_DESCRIPTION = re.compile(
    r"filesystem|file system|boot sector|partition table|swap file|LVM2 PV|Squashfs|"
    r"\bXFS\b|BTRFS|NTFS|FAT \(|ISO 9660|UDF|LUKS|ZFS|^data$",
    re.IGNORECASE,
)
#: What to tell the uploader, by the MIME type libmagic gives (prefix match, first wins).
ADVICE: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("text/html", "application/xhtml"),
        "the upload saved a web page (an error or login page?): check the URL",
    ),
    (
        (
            "application/gzip",
            "application/x-xz",
            "application/zstd",
            "application/x-bzip2",
            "application/x-lzma",
            "application/x-lz4",
            "application/x-compress",
            "application/x-lzip",
        ),
        "the image is compressed: decompress it, or upload it with the matching container format",
    ),
    (
        (
            "application/x-tar",
            "application/zip",
            "application/x-7z",
            "application/x-rar",
            "application/vnd.rar",
            "application/x-cpio",
        ),
        "this is an archive: extract the disk image from it (an OVA is uploaded with container_format=ova)",
    ),
    (
        (
            "application/x-executable",
            "application/x-sharedlib",
            "application/x-pie-executable",
            "application/x-dosexec",
            "application/x-mach-binary",
            "application/x-object",
        ),
        "this is a program, not a disk: upload the disk image itself",
    ),
    (("image/", "video/", "audio/"), "this is a media file, not a disk: upload the disk image itself"),
    (
        ("application/pdf", "text/", "application/json", "application/xml"),
        "this is a document, not a disk: upload the disk image itself",
    ),
)
DEFAULT_ADVICE = "upload the disk image itself, or declare the format it really has"
#: qemu's block layer sector (BDRV_SECTOR_SIZE): every length it reports is a whole number of them.
QEMU_SECTOR_SIZE = 512
#: Descriptions are one line from libmagic; keep what the report stores bounded.
MAX_DESCRIPTION = 1023
UNNAMED_DATA = "data"


class RawDetails(Frozen):
    """A raw disk: its partition table, firmware evidence, and libmagic's view of its first bytes."""

    format: Literal["raw"] = "raw"
    partition_table: PartitionTable | None = None
    firmware: Firmware | None = None
    magic: str | None = Field(
        description="libmagic's description of the first 64 KiB, when no partition table names it"
    )
    mime: str | None = Field(
        description="libmagic's MIME type of the first 64 KiB; looked up (another ~0.5 ms) only when "
        "the description names no disk, to say what the content is instead"
    )


@cache
def _magic(*, mime: bool) -> magic.Magic:
    """One libmagic handle per kind, opened on first use (loading the database costs ~10 ms);
    python-magic serialises calls on a handle with its own lock. python-magic itself is imported
    here too: loading libmagic (ctypes, logging, subprocess) cost every other format's first
    inspection in a process ~10 ms more."""
    import magic

    return magic.Magic(mime=mime)


def describe(head: bytes) -> str:
    """libmagic's description of the bytes. All zeros (a blank disk, as `qemu-img create -f raw`
    makes) match no magic at all: libmagic says "data", and is spared the ~0.5 ms of asking."""
    if all_zeros(head):
        return UNNAMED_DATA
    return str(_magic(mime=False).from_buffer(head))[:MAX_DESCRIPTION]


def mime_type(head: bytes) -> str:
    """libmagic's MIME type of the bytes."""
    return str(_magic(mime=True).from_buffer(head))


def qemu_virtual_size(file_size: int) -> int:
    """What `qemu-img info -f raw` reports as virtual-size for a file of this size."""
    return -(-file_size // QEMU_SECTOR_SIZE) * QEMU_SECTOR_SIZE


def probe(head: Head) -> bool:
    """Raw is never probed: it is what is left when no format claims the file."""
    return False


def inspect(reader: Reader, policy: Policy) -> Inspection[RawDetails]:
    head = reader.read_upto(0, HEAD_SIZE, "head")
    disk = read_disk(reader, reader.size)
    table, findings = disk.partition_table, list(disk.findings)
    # A partition table names the content already; libmagic (~0.5 ms a call) is asked only
    # about what has none. It calls what it cannot name "data" (MIME application/octet-stream).
    description = None if table is not None else describe(head)
    mime = None
    if description is not None and description != UNNAMED_DATA and not DISK_DESCRIPTION.search(description):
        mime = mime_type(head)
        if mime != OCTET_STREAM:
            findings.append(
                NOT_A_DISK.finding(
                    f"libmagic says the content is {description!r} ({mime}), not a disk image: {_advice(mime)}"
                )
            )
    details = RawDetails(
        partition_table=table,
        firmware=disk.firmware,
        magic=description,
        mime=mime,
    )
    return Inspection(details=details, virtual_size=qemu_virtual_size(reader.size), findings=findings)


@dataclass(frozen=True, slots=True)
class DiskContent:
    """What a disk's first and last blocks say: its partition table, the firmware that table
    points to, and findings about both (a GPT out of spec, a partition past the end)."""

    partition_table: Mbr | Gpt | None
    firmware: Firmware | None
    findings: tuple[Finding, ...]


def read_disk(reader: Reader, size: int, where: str = "the file") -> DiskContent:
    """The partition table and firmware evidence of a disk whose bytes are the file's from offset
    0 for `size` bytes: a raw disk (the whole file), a fixed VHD (everything before its footer).
    The GPT's backup header is looked for at the disk's last LBA, not the file's."""
    disk = reader if size == reader.size else Window(reader, size)
    table, findings = read_partition_table(disk)
    bios, uefi = boot_evidence(table)
    findings.extend(_beyond_end(table, size, where))
    return DiskContent(table, firmware_from(bios, uefi), tuple(findings))


class Window(Reader):
    """The first `size` bytes of a file as a Reader of their own (a fixed VHD's disk, without its
    footer). Every read goes through the parent reader, which counts it against its budget; this
    one keeps no counts of its own."""

    def __init__(self, parent: Reader, size: int) -> None:
        super().__init__(parent.source, parent.budget)
        self.size = min(size, parent.size)
        self._parent = parent

    def read_upto(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0:
            raise TruncatedImage(what, offset=offset, length=length, size=self.size)
        return self._parent.read_upto(offset, max(0, min(length, self.size - offset)), what)


def _advice(mime: str) -> str:
    for prefixes, advice in ADVICE:
        if mime.startswith(prefixes):
            return advice
    return DEFAULT_ADVICE


def _beyond_end(table: Mbr | Gpt | None, size: int, where: str) -> list[Finding]:
    """Partitions that end past the end of the file: the guest would see them cut short."""
    if isinstance(table, Gpt):
        ends = {p.number: (p.ending_lba + 1) * table.sector_size for p in table.partitions}
    elif isinstance(table, Mbr):
        ends = {p.number: (p.starting_lba + p.size_in_lba) * LOGICAL_BLOCK_SIZE for p in table.partitions}
    else:
        return []
    beyond = sorted(number for number, end in ends.items() if end > size)
    if not beyond:
        return []
    numbers = ", ".join(map(str, beyond))
    return [
        PARTITION_BEYOND_END.finding(
            f"partition(s) {numbers} end past the end of {where} ({size} bytes): the image was cut short "
            "(download it again) or shrunk (grow it back with `qemu-img resize`)"
        )
    ]


def properties(details: RawDetails) -> dict[str, str]:
    """Firmware, when the partition table points one way."""
    return firmware_properties(details.firmware)


class RawGuestView:
    """The guest view of a raw disk, the identity: guest offset N is file offset N. The guest's
    disk is `qemu_virtual_size` long, so the tail of a last partial sector reads as zeros, as qemu
    presents it. The example every format's view follows (see `introspect.formats.base`); a format
    whose disk is its file's first `size` bytes (a fixed VHD) uses it with that size."""

    incomplete: str | None = None

    def __init__(self, reader: Reader, size: int | None = None) -> None:
        self._reader = reader
        self.size = qemu_virtual_size(reader.size) if size is None else size

    def read(self, guest_offset: int, length: int) -> bytes:
        if guest_offset < 0 or length < 0 or guest_offset + length > self.size:
            raise TruncatedImage("guest data", offset=guest_offset, length=length, size=self.size)
        data = self._reader.read_upto(guest_offset, length, "guest data")
        return data + bytes(length - len(data))


def guest_view(reader: Reader, details: RawDetails) -> RawGuestView:
    """A raw disk is its own guest view: nothing to map, nothing encrypted, no other file."""
    return RawGuestView(reader)


FORMAT = Format(
    name="raw",
    qemu_name="raw",
    probe=probe,
    inspect=inspect,
    checks=None,
    no_checks_because="a raw disk names no other file and has no options to allow or refuse; "
    "what its content says (partition tables, libmagic) is judged while parsing",
    details=RawDetails,
    properties=properties,
    guest=guest_view,
    data_at_zero=True,
)
