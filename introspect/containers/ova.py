"""OVA packages (a tar of an OVF descriptor, its disks, a manifest and a certificate), and bare OVF
descriptors: containers (see `introspect.containers`) whose members are the disks, read in place.

Specs, each beside what it gives:

- DMTF DSP0243 (OVF) 1.1.0 §5.3 / 2.1.1 §5.3, "Distribution as a single file": an OVA is a tar in
  the POSIX ustar format; the descriptor comes first, then the manifest and the certificate, then
  the files in the order References lists them (real exporters do not always keep that order:
  the descriptor not first is a warning). §5.1: the manifest (`.mf`) holds one
  `ALGO(name)= hexdigest` line per file (SHA1 in 1.x, SHA256/SHA512 since 2.x; ovftool writes
  SHA256), the certificate (`.cert`) signs the manifest.
- POSIX.1-1988 (IEEE Std 1003.1) "ustar Interchange Format": the 512-byte header declared below,
  octal numbers, the checksum as the sum of the header's bytes with the checksum field taken as
  spaces, two zero blocks at the end. POSIX.1-2001 `pax`: typeflag `x` (and `g`) carries
  "LEN KEY=VALUE\\n" records that override the next header's `path`, `linkpath` and `size`.
  GNU tar: the magic "ustar  \\0", `L`/`K` entries whose data is the next header's long name or
  link name, and base-256 numbers (the first byte's top bit set) for sizes of 8 GiB and more.

The walk reads the archive header by header (512 bytes each, through the metered reader: those in
the cached head are free), never a member's data except the descriptor (at most
`ovf.MAX_OVF_SIZE`), the manifest (at most `MAX_MANIFEST_SIZE`) and pax or GNU name records (at
most `MAX_EXTENSION_SIZE`), whatever the disks' sizes. Each disk the descriptor names is a
`Member`: a `SliceSource` of the archive, inspected in place by the inspector through the same
budget. Nothing in the archive is extracted, and no name in it is ever opened as a path.

Budget: an OVA walks up to `MAX_ENTRIES` headers and inspects several disks, so an inspection
that runs with the default budget gets `OVA_BUDGET` instead (an explicit budget is kept).
Verifying the manifest (`Policy.verify_manifest`) reads every listed file once, in
`VERIFY_CHUNK` reads, and raises the budget by exactly what that takes; unless the source hashed
the members already (`HashedAsItPassed`: standard input read once, or an upload's digests kept
by the catalog), when it reads nothing more.

Rules: every `ova.*` code below; `ova.ovf_size`, `ova.ovf_invalid` and `ova.xml_unsafe` are the
descriptor's (`introspect.containers.ovf`).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from pydantic import Field

from introspect.containers import XML_START, ovf
from introspect.containers.base import Container, Member, MemberReport, ReaderSource, Unpacked
from introspect.decode import KIB, MIB
from introspect.errors import BadField, ImageError, TruncatedImage
from introspect.formats import claiming
from introspect.formats.base import Head
from introspect.formats.vmdk import VmdkDetails
from introspect.formats.vmdk_descriptor import QUOTE_LENGTH
from introspect.model import Finding, Frozen, Severity
from introspect.safety import POLYGLOT, Policy, Rule, rule
from introspect.sources import Budget, ByteSource, Reader, SliceSource
from introspect.structure import LittleEndianStructure, char, chars, pad

PATH = rule(
    "ova.path",
    Severity.REJECT,
    "an entry or file name is absolute, climbs with `..`, or is a URL",
    names_files=True,
)
LINK = rule("ova.link", Severity.REJECT, "the archive holds a symbolic link, hard link, device or FIFO entry")
ENTRIES = rule("ova.entries", Severity.REJECT, "the archive holds more entries than introspect walks")
MISSING_FILE = rule(
    "ova.missing_file", Severity.REJECT, "a file the OVF descriptor names is not in the archive"
)
OVF_NOT_FIRST = rule(
    "ova.ovf_not_first", Severity.WARN, "the OVF descriptor is not the archive's first entry"
)
SEVERAL_OVF = rule("ova.ovf_several", Severity.REJECT, "the archive holds more than one OVF descriptor")
DUPLICATE = rule("ova.duplicate", Severity.REJECT, "two archive entries have the same name")
TAR_HEADER = rule(
    "ova.tar_header",
    Severity.REJECT,
    "a tar header is damaged: wrong checksum, a negative or malformed number, a pax record out of "
    "bounds, an entry type an OVA cannot hold",
)
TRUNCATED = rule(
    "ova.truncated", Severity.REJECT, "the archive ends inside an entry, or without its end blocks"
)
MANIFEST_INVALID = rule(
    "ova.manifest_invalid", Severity.REJECT, "the manifest (.mf) is not ALGO(name)= digest lines"
)
CAPACITY = rule(
    "ova.capacity", Severity.WARN, "the OVF descriptor states a disk capacity other than the disk's own"
)
MANIFEST_MISMATCH = rule(
    "ova.manifest_mismatch",
    Severity.REJECT,
    "a file's digest differs from the manifest's (verified on request)",
)
EXTENT_MEMBER = rule(
    "ova.extent_member",
    Severity.REJECT,
    "a disk the OVF descriptor names is a VMDK descriptor whose data is in other files of the archive",
    names_files=True,
)
EXTENT_MISSING = rule(
    "ova.extent_missing",
    Severity.REJECT,
    "a VMDK descriptor in the archive names an extent file the archive does not hold",
    names_files=True,
)
DESCRIPTOR_ONLY = rule(
    "ovf.descriptor_only", Severity.REJECT, "the file is an OVF descriptor alone, without its disks"
)

#: Headers walked at most (files, not counting pax/GNU extension headers): an OVA holds a
#: descriptor, a manifest, a certificate, its disks and perhaps an ISO or NVRAM file.
MAX_ENTRIES = 64
#: Extension headers (pax `x`/`g`, GNU `L`/`K`) allowed before one entry.
MAX_EXTENSIONS = 4
#: A pax header's or GNU long name's data: a path and a few numbers, never more.
MAX_EXTENSION_SIZE = 64 * KIB
MAX_PAX_RECORDS = 256
#: Names longer than this are capped (and flagged): OVF hrefs are short file names.
MAX_NAME_LENGTH = 1024
#: The manifest: one line per file.
MAX_MANIFEST_SIZE = 1 * MIB
MAX_MANIFEST_LINES = 1024
#: What an OVA inspection may read by default: the walk, the descriptor and manifest, and each
#: disk's own inspection (its head, tail and tables, as a bare image would need).
OVA_BUDGET = Budget(max_bytes=64 * MIB, max_reads=512, max_read_size=4 * MIB)
#: Reads of a manifest verification.
VERIFY_CHUNK = 4 * MIB

ADVICE = "re-create the OVA with `tar --format=ustar` (or export it again with ovftool or VirtualBox)"
BLOCK = 512


class TarHeader(LittleEndianStructure):
    """POSIX.1-1988 ustar header (IEEE Std 1003.1, "ustar Interchange Format"), one 512-byte block.
    Numbers are octal text (or GNU base-256); GNU tar reuses `prefix` for times, so it is read only
    under the POSIX magic."""

    name: bytes = chars(100)
    mode: bytes = chars(8)
    uid: bytes = chars(8)
    gid: bytes = chars(8)
    size: bytes = chars(12)
    mtime: bytes = chars(12)
    chksum: bytes = chars(8)
    typeflag: bytes = char()
    linkname: bytes = chars(100)
    magic: bytes = chars(6)
    version: bytes = chars(2)
    uname: bytes = chars(32)
    gname: bytes = chars(32)
    devmajor: bytes = chars(8)
    devminor: bytes = chars(8)
    prefix: bytes = chars(155)
    padding: None = pad(12)


assert TarHeader.SIZE == BLOCK


class GnuSparseHeader(LittleEndianStructure):
    """GNU tar's old header (`--format=oldgnu`, GNU tar manual "Tar Internals", struct
    oldgnu_header) for a sparse file, typeflag `S`: the ustar fields up to devminor, then times,
    four sparse entries (offset, numbytes: 12 octal digits each), whether extension blocks follow,
    and the file's real size. `size` counts only the data stored."""

    name: bytes = chars(100)
    mode: bytes = chars(8)
    uid: bytes = chars(8)
    gid: bytes = chars(8)
    size: bytes = chars(12)
    mtime: bytes = chars(12)
    chksum: bytes = chars(8)
    typeflag: bytes = char()
    linkname: bytes = chars(100)
    magic: bytes = chars(6)
    version: bytes = chars(2)
    uname: bytes = chars(32)
    gname: bytes = chars(32)
    devmajor: bytes = chars(8)
    devminor: bytes = chars(8)
    atime: bytes = chars(12)
    ctime: bytes = chars(12)
    offset: bytes = chars(12)
    longnames: bytes = chars(4)
    unused: None = pad(1)
    sparse: bytes = chars(4 * 24)
    isextended: bytes = char()
    realsize: bytes = chars(12)
    padding: None = pad(17)


class GnuSparseExtension(LittleEndianStructure):
    """GNU tar's `struct sparse_header`: 21 more sparse entries after a sparse header."""

    sparse: bytes = chars(21 * 24)
    isextended: bytes = char()
    padding: None = pad(7)


assert GnuSparseHeader.SIZE == GnuSparseExtension.SIZE == BLOCK
SPARSE_ENTRY = 24
GNU_SPARSE = b"S"
#: Extension blocks read at most (21 regions each): a disk with more scattered data than
#: 4 + 21 * this is refused rather than mapped.
MAX_SPARSE_EXTENSIONS = 256
#: "ustar\0" + "00" (POSIX) and "ustar " + " \0" (GNU): both start with "ustar".
USTAR = b"ustar"
POSIX_MAGIC = b"ustar\0"
CHKSUM_AT = TarHeader.offset_of("chksum")
CHKSUM_SIZE = 8
#: GNU base-256: the first byte 0x80 (positive) or 0xff (negative).
BASE256_BIT = 7
BASE256 = 1 << BASE256_BIT
BASE256_NEGATIVE = 0xFF

#: typeflag -> what the entry is. POSIX: 0 (and NUL) regular, 1 hard link, 2 symbolic link,
#: 3 character device, 4 block device, 5 directory, 6 FIFO, 7 contiguous file; x/g pax headers.
#: GNU: L long name, K long link name.
FILES = frozenset({b"0", b"\0", b"7"})
LINKS = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"6": "FIFO",
}
DIRECTORY = b"5"
PAX_LOCAL, PAX_GLOBAL = b"x", b"g"
GNU_LONG_NAME, GNU_LONG_LINK = b"L", b"K"

EntryKind = Literal["file", "sparse", "directory", "link", "other"]


class TarEntry(Frozen):
    """One archive entry: its name (capped, never opened), kind, size and where its data starts."""

    name: str
    kind: EntryKind
    type_flag: str
    size: int
    data_offset: int
    link_target: str | None = None
    real_size: int | None = None
    sparse_regions: int | None = None


class ManifestEntry(Frozen):
    algorithm: str
    name: str
    digest: str


class Manifest(Frozen):
    """The `.mf` file: its lines, and whether the digests were checked (None: not asked)."""

    name: str
    entries: list[ManifestEntry] = Field(default_factory=list)
    verified: bool | None = None


class OvaDetails(Frozen):
    """What the package says of itself: its entries, its descriptor (parsed), the boot disk the
    descriptor names (with the controller the OVF states; the VMDK's own `ddb.adapterType` stays
    in the Report's `details`), the manifest and the certificate."""

    kind: Literal["ova", "ovf", "tar"]
    entries: list[TarEntry] = Field(default_factory=list)
    descriptor_name: str | None = None
    descriptor: ovf.OvfDescriptor | None = None
    boot_disk: ovf.BootDisk | None = None
    manifest: Manifest | None = None
    certificate: str | None = None


# --- The tar walk -----------------------------------------------------------------------------


def _zero(block: bytes) -> bool:
    return block.count(0) == len(block)


def tar_number(raw: bytes, field: str, offset: int) -> int:
    """A numeric header field: octal text (NUL/space terminated), or GNU base-256."""
    if raw and raw[0] & BASE256:
        if raw[0] == BASE256_NEGATIVE:
            raise BadField(
                TAR_HEADER,
                f"the tar header's {field}",
                raw.hex(),
                "not negative",
                offset=offset,
                advice=ADVICE,
            )
        return int.from_bytes(bytes([raw[0] & ~BASE256 & 0xFF]) + raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]+", text):
        raise BadField(
            TAR_HEADER, f"the tar header's {field}", text[:32], "octal digits", offset=offset, advice=ADVICE
        )
    return int(text, 8)


def _check_sum(block: bytes, header: TarHeader, offset: int) -> None:
    blanked = block[:CHKSUM_AT] + b" " * CHKSUM_SIZE + block[CHKSUM_AT + CHKSUM_SIZE :]
    stated = tar_number(header.chksum, "chksum", offset)
    unsigned = sum(blanked)
    signed = sum(b - 256 if b & 0x80 else b for b in blanked)  # historic tars summed signed chars
    if stated not in (unsigned, signed):
        raise BadField(
            TAR_HEADER,
            "the tar header's chksum",
            stated,
            f"{unsigned} (the sum of the header's bytes)",
            offset=offset,
            advice=ADVICE,
        )


def _name(raw: bytes) -> str:
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="backslashreplace")
    return text[:MAX_NAME_LENGTH]


def _pax_records(data: bytes, offset: int) -> dict[str, str]:
    """POSIX.1-2001 pax extended header records, "LEN KEY=VALUE\\n", each LEN counting itself."""
    records: dict[str, str] = {}
    position = 0
    for _ in range(MAX_PAX_RECORDS):
        if position >= len(data) or _zero(data[position:]):
            return records
        space = data.find(b" ", position, position + 20)
        digits = data[position:space] if space > position else b""
        if not digits.isdigit():
            raise BadField(
                TAR_HEADER,
                "a pax record's length",
                digits[:20],
                "decimal digits",
                offset=offset,
                advice=ADVICE,
            )
        length = int(digits)
        end = position + length
        if length <= len(digits) + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise BadField(
                TAR_HEADER,
                "a pax record's length",
                length,
                f"at most the {len(data) - position} bytes left in its header, ending in a newline",
                offset=offset,
                advice=ADVICE,
            )
        key, _, value = data[space + 1 : end - 1].partition(b"=")
        records[key.decode("utf-8", errors="backslashreplace")[:MAX_NAME_LENGTH]] = value.decode(
            "utf-8", errors="backslashreplace"
        )[:MAX_NAME_LENGTH]
        position = end
    raise BadField(TAR_HEADER, "a pax header", f"more than {MAX_PAX_RECORDS} records", "a few", offset=offset)


def _extension(reader: Reader, offset: int, size: int, what: str) -> bytes:
    if size > MAX_EXTENSION_SIZE:
        raise BadField(
            TAR_HEADER,
            f"the {what}'s size",
            size,
            f"at most {MAX_EXTENSION_SIZE} bytes",
            offset=offset,
            advice=ADVICE,
        )
    return reader.read(offset + BLOCK, size, what)


Regions = list[tuple[int, int]]


def walk(
    reader: Reader, sparse_maps: dict[int, Regions] | None = None
) -> tuple[list[TarEntry], list[Finding]]:
    """Every entry, header by header; findings for what is wrong but does not stop the walk.
    Raises ImageError (TAR_HEADER, TRUNCATED, ENTRIES) for an archive that cannot be walked.
    A GNU sparse entry's map goes into `sparse_maps` (by entry index) when given. A header the
    source cannot deliver although its size says it holds it (a tar inside a compressed stream,
    of which only a head was decompressed) ends the walk there."""
    entries: list[TarEntry] = []
    findings: list[Finding] = []
    offset = 0
    pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    extensions = 0
    for _ in range(MAX_ENTRIES * (MAX_EXTENSIONS + 1) + 1):
        if offset + BLOCK > reader.size:
            if offset == reader.size and entries:
                findings.append(
                    TRUNCATED.finding(
                        f"the archive ends after {len(entries)} entries without its two zero end blocks: "
                        f"it may have been cut short; {ADVICE}"
                    )
                )
                return entries, findings
            raise _truncated(reader, offset, BLOCK, "tar header")
        try:
            block = reader.read(offset, BLOCK, "tar header")
        except TruncatedImage:
            if entries:
                return entries, findings  # the end of what a compressed stream's head holds
            raise
        if _zero(block):
            return entries, findings
        header = TarHeader.unpack(block)
        if not header.magic.startswith(USTAR):
            raise BadField(
                TAR_HEADER,
                "the tar header's magic",
                header.magic,
                "ustar (POSIX or GNU)",
                offset=offset,
                advice=ADVICE,
            )
        _check_sum(block, header, offset)
        size = tar_number(header.size, "size", offset)
        flag = header.typeflag
        if flag in (PAX_LOCAL, PAX_GLOBAL, GNU_LONG_NAME, GNU_LONG_LINK):
            extensions += 1
            if extensions > MAX_EXTENSIONS:
                raise BadField(
                    TAR_HEADER,
                    "extension headers in a row",
                    extensions,
                    f"at most {MAX_EXTENSIONS}",
                    offset=offset,
                )
            data = _extension(
                reader, offset, size, "pax header" if flag in (PAX_LOCAL, PAX_GLOBAL) else "GNU long name"
            )
            if flag == PAX_LOCAL:
                pax.update(_pax_records(data, offset))
            elif flag == PAX_GLOBAL:
                _pax_records(data, offset)  # checked, not applied: nothing an OVA needs is global
            elif flag == GNU_LONG_NAME:
                long_name = _name(data)
            else:
                long_link = _name(data)
            offset += BLOCK + _blocks(size)
            continue
        if "size" in pax:
            if not pax["size"].isdigit():
                raise BadField(TAR_HEADER, "the pax size", pax["size"][:32], "decimal digits", offset=offset)
            size = int(pax["size"])
        name = pax.get("path") or long_name
        if name is None:
            name = _name(header.name)
            if header.magic == POSIX_MAGIC and header.prefix.strip(b"\0"):
                name = f"{_name(header.prefix)}/{name}"[:MAX_NAME_LENGTH]
        target = pax.get("linkpath") or long_link or _name(header.linkname) or None
        kind: EntryKind
        data_offset = offset + BLOCK
        real_size: int | None = None
        regions: Regions | None = None
        if flag in FILES:
            kind = "file"
        elif flag == GNU_SPARSE:
            kind = "sparse"
            regions, real_size, data_offset = _sparse_map(reader, block, offset)
            if sparse_maps is not None:
                sparse_maps[len(entries)] = regions
        elif flag == DIRECTORY:
            kind = "directory"
        elif flag in LINKS:
            kind = "link"
            findings.append(
                LINK.finding(
                    f"the archive entry {name!r} is a {LINKS[flag]}"
                    + (f" to {target!r}" if flag in (b"1", b"2") else "")
                    + f": an OVA holds regular files only, and extracting a link writes or reads outside it; {ADVICE}"
                )
            )
        else:
            kind = "other"
            findings.append(
                TAR_HEADER.finding(
                    f"the archive entry {name!r} has tar type {flag!r} (a GNU sparse, multi-volume or "
                    f"vendor entry), which an OVA cannot hold; {ADVICE}"
                )
            )
        if any(key.startswith("GNU.sparse") for key in pax):
            findings.append(
                TAR_HEADER.finding(
                    f"the archive entry {name!r} is a GNU sparse file: its data is not the file; {ADVICE}"
                )
            )
        entries.append(
            TarEntry(
                name=name,
                kind=kind,
                type_flag=flag.decode("latin-1"),
                size=size,
                data_offset=data_offset,
                link_target=target if kind == "link" else None,
                real_size=real_size,
                sparse_regions=len(regions) if regions is not None else None,
            )
        )
        if len(entries) > MAX_ENTRIES:
            raise ImageError(
                ENTRIES,
                f"the archive holds more than {MAX_ENTRIES} entries: an OVA holds a descriptor, a manifest, a "
                f"certificate and its disks; {ADVICE}",
                offset=offset,
            )
        if data_offset + size > reader.size:
            raise _truncated(reader, data_offset, size, f"archive entry {name!r}")
        offset = data_offset + _blocks(size)
        pax, long_name, long_link, extensions = {}, None, None, 0
    raise ImageError(ENTRIES, f"the archive holds more than {MAX_ENTRIES} entries; {ADVICE}", offset=offset)


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _regions(raw: bytes, offset: int) -> Regions:
    """Sparse entries (offset, numbytes), up to the first empty one."""
    regions = []
    for start in range(0, len(raw), SPARSE_ENTRY):
        entry = raw[start : start + SPARSE_ENTRY]
        if not entry.strip(b"\0"):
            break
        half = SPARSE_ENTRY // 2
        regions.append(
            (
                tar_number(entry[:half], "sparse offset", offset),
                tar_number(entry[half:], "sparse numbytes", offset),
            )
        )
    return regions


def _sparse_map(reader: Reader, block: bytes, offset: int) -> tuple[Regions, int, int]:
    """A GNU sparse entry's regions, its real size, and where its data starts (after any
    extension blocks). The regions must be in order, apart, and within the real size."""
    header = GnuSparseHeader.unpack(block)
    regions = _regions(header.sparse, offset)
    real_size = tar_number(header.realsize, "realsize", offset)
    position = offset + BLOCK
    extended = header.isextended not in (b"\0", b"0")
    for _ in range(MAX_SPARSE_EXTENSIONS):
        if not extended:
            break
        extension = GnuSparseExtension.unpack(reader.read(position, BLOCK, "GNU sparse map"))
        regions += _regions(extension.sparse, position)
        extended = extension.isextended not in (b"\0", b"0")
        position += BLOCK
    else:
        if extended:
            raise BadField(
                TAR_HEADER,
                "a GNU sparse map",
                f"more than {MAX_SPARSE_EXTENSIONS} blocks",
                "fewer",
                offset=offset,
            )
    end = 0
    for start, length in regions:
        if start < end or start + length > real_size:
            raise BadField(
                TAR_HEADER,
                "a GNU sparse region",
                (start, length),
                f"in order, apart, and within the real size {real_size}",
                offset=offset,
                advice=ADVICE,
            )
        end = start + length
    return regions, real_size, position


class SparseSource(ByteSource):
    """A GNU sparse member as the file it stands for: its regions' data, zeros between them."""

    def __init__(self, data: ByteSource, regions: Regions, real_size: int, name: str) -> None:
        self._data = data
        self._starts = [start for start, _ in regions]
        self._regions = regions
        self._stored = list(itertools.accumulate((length for _, length in regions), initial=0))
        self._size = real_size
        self.name = name

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        out = bytearray(length)
        index = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while index < len(self._regions):
            start, size = self._regions[index]
            if start >= offset + length:
                break
            low, high = max(start, offset), min(start + size, offset + length)
            if low < high:
                out[low - offset : high - offset] = self._data.pread(
                    self._stored[index] + low - start, high - low
                )
            index += 1
        return bytes(out)


def _truncated(reader: Reader, offset: int, length: int, what: str) -> ImageError:
    return ImageError(
        TRUNCATED,
        f"the {what} needs bytes {offset}..{offset + length} but the archive ends at {reader.size}: "
        "the OVA was cut short; upload it again",
        offset=offset,
        field=what,
    )


def polyglot(reader: Reader) -> list[Finding]:
    """A tar's first bytes that are also another format's header (a pax header's name field is
    free bytes: "QFI\xfb" and a version make it a qcow2 to qemu): the file reads as two things."""
    head = Head(reader.head(), reader.tail(), reader.size)
    others = [fmt.name for fmt in claiming(head)]
    if not others:
        return []
    return [
        POLYGLOT.finding(
            f"the archive is also a {', '.join(others)} image by its first or last bytes: qemu would read "
            f"the file as {others[0]}, introspect reads it as a tar; {ADVICE}"
        )
    ]


# --- Names ------------------------------------------------------------------------------------


def unsafe_name(name: str) -> str | None:
    """Why a name must never be used as a path (None: a plain relative name)."""
    if "://" in name:
        return "is a URL"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "is absolute"
    if ".." in re.split(r"[/\\]", name):
        return "climbs out with `..`"
    if len(name) >= MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if not name.isprintable():
        return "holds control characters"
    return None


def _plain(name: str) -> str:
    """The name as tools write it for the same file: "./disk.vmdk" is "disk.vmdk"."""
    while name.startswith("./"):
        name = name[2:]
    return name


# --- The manifest -----------------------------------------------------------------------------

#: "SHA256(disk.vmdk)= 0123..." as ovftool and VirtualBox write it (openssl dgst's format);
#: "SHA256 (disk.vmdk) = 0123..." as `sha256sum --tag` does.
MANIFEST_LINE = re.compile(r"(SHA1|SHA256|SHA512)\s?\((.+)\)\s?=\s?([0-9a-fA-F]+)")
DIGEST_LENGTHS = {"SHA1": 40, "SHA256": 64, "SHA512": 128}


def parse_manifest(name: str, data: bytes) -> tuple[Manifest, list[Finding]]:
    findings: list[Finding] = []
    entries = []
    text = data.decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines()[:MAX_MANIFEST_LINES], start=1):
        if not line.strip():
            continue
        match = MANIFEST_LINE.fullmatch(line.strip())
        if match is None or len(match.group(3)) != DIGEST_LENGTHS[match.group(1)]:
            findings.append(
                MANIFEST_INVALID.finding(
                    f"line {number} of the manifest {name!r} is not `SHA256(name)= digest`: {line[:80]!r}; {ADVICE}"
                )
            )
            continue
        entries.append(
            ManifestEntry(
                algorithm=match.group(1), name=match.group(2)[:MAX_NAME_LENGTH], digest=match.group(3).lower()
            )
        )
    return Manifest(name=name, entries=entries), findings


@runtime_checkable
class HashedAsItPassed(Protocol):
    """A source that hashed each tar member's data as it streamed by (`introspect.streaming.
    StreamSource(..., digests=True)`): SHA1, SHA256 and SHA512 of the member whose data starts at
    `data_offset`, or None when it was not hashed."""

    def member_digest(self, data_offset: int, algorithm: str) -> str | None: ...


def verify(
    reader: Reader, manifest: Manifest, by_name: dict[str, TarEntry]
) -> tuple[Manifest, list[Finding]]:
    """Hash every file the manifest lists, once, in `VERIFY_CHUNK` reads; raise the reader's
    budget by exactly what that reads. A source that hashed the members as they streamed by
    (`HashedAsItPassed`: standard input read once) gives their digests, and nothing is read."""
    findings = []
    listed = [(line, by_name.get(line.name)) for line in manifest.entries]
    hashed = reader.source if isinstance(reader.source, HashedAsItPassed) else None
    if hashed is None:
        total = sum(entry.size for _, entry in listed if entry is not None)
        chunks = sum(-(-entry.size // VERIFY_CHUNK) for _, entry in listed if entry is not None)
        reader.budget = reader.budget._replace(
            max_bytes=reader.budget.max_bytes + total,
            max_reads=reader.budget.max_reads + chunks,
            max_read_size=max(reader.budget.max_read_size, VERIFY_CHUNK),
        )
    for line, entry in listed:
        if entry is None:
            findings.append(
                MANIFEST_MISMATCH.finding(
                    f"the manifest lists {line.name!r}, which the archive does not hold; {ADVICE}"
                )
            )
            continue
        passed = hashed.member_digest(entry.data_offset, line.algorithm) if hashed is not None else None
        if passed is not None:
            value = passed
        else:
            digest = hashlib.new(line.algorithm.lower())
            for start in range(0, entry.size, VERIFY_CHUNK):
                digest.update(
                    reader.read(
                        entry.data_offset + start, min(VERIFY_CHUNK, entry.size - start), "manifest check"
                    )
                )
            value = digest.hexdigest()
        if value != line.digest:
            findings.append(
                MANIFEST_MISMATCH.finding(
                    f"the {line.algorithm} digest of {line.name!r} is {value}, the manifest says "
                    f"{line.digest}: the file was changed or damaged after export; download the OVA again"
                )
            )
    return manifest.model_copy(update={"verified": not findings}), findings


# --- The containers ---------------------------------------------------------------------------


def sniff_ova(head: bytes) -> bool:
    """The first header's magic, read in place: every inspection asks (a whole TarHeader was ~1 µs)."""
    return len(head) >= BLOCK and head.startswith(USTAR, TarHeader.offset_of("magic"))


def open_ova(reader: Reader, policy: Policy) -> Unpacked | None:
    """The package's disks; None for a tar that holds no OVF descriptor, which is not an OVA (it
    is then inspected as any file is: raw, and not a disk image by libmagic's word)."""
    given = reader.budget
    if given == Budget():
        reader.budget = OVA_BUDGET
    maps: dict[int, Regions] = {}
    entries, findings = walk(reader, maps)
    findings = [*polyglot(reader), *findings]
    by_name: dict[str, TarEntry] = {}
    for entry in entries:
        why = unsafe_name(entry.name)
        if why:
            findings.append(
                PATH.finding(
                    f"the archive entry {entry.name!r} {why}: it is never extracted or opened; {ADVICE}"
                )
            )
        plain = _plain(entry.name)
        if plain in by_name and entry.kind != "directory":
            findings.append(
                DUPLICATE.finding(
                    f"the archive holds {plain!r} twice: a tool that extracts it keeps the last, one that "
                    f"streams it the first, so they would not agree on the disk; {ADVICE}"
                )
            )
        else:
            by_name[plain] = entry
    files = [e for e in entries if e.kind == "file"]
    descriptors = [e for e in files if e.name.lower().endswith(".ovf")]
    details = OvaDetails(kind="ova", entries=entries)
    if not descriptors:
        reader.budget = given
        return None
    if len(descriptors) > 1:
        names = ", ".join(repr(d.name) for d in descriptors[:4])
        findings.append(SEVERAL_OVF.finding(f"the archive holds several OVF descriptors ({names}); {ADVICE}"))
    descriptor_entry = descriptors[0]
    if files and files[0] is not descriptor_entry:
        findings.append(
            OVF_NOT_FIRST.finding(
                f"the OVF descriptor {descriptor_entry.name!r} is not the first file of the archive (DSP0243 §5.3 "
                f"puts it first, {files[0].name!r} is): a streaming import must read past the disks first"
            )
        )
    details = details.model_copy(update={"descriptor_name": descriptor_entry.name})
    try:
        descriptor = ovf.parse_ovf(_read_member(reader, descriptor_entry, ovf.MAX_OVF_SIZE, ovf.OVF_SIZE))
    except ImageError as error:
        if isinstance(error, TruncatedImage):
            raise
        return Unpacked(findings=[*findings, error.rule.finding(str(error))], details=details)
    boot = ovf.boot_disk(descriptor)
    details = details.model_copy(update={"descriptor": descriptor, "boot_disk": boot})

    for extra in files:
        lowered = extra.name.lower()
        if lowered.endswith(".cert") and details.certificate is None:
            details = details.model_copy(update={"certificate": extra.name})
        elif lowered.endswith(".mf") and details.manifest is None:
            try:
                data = _read_member(reader, extra, MAX_MANIFEST_SIZE, MANIFEST_INVALID)
            except ImageError as error:
                if isinstance(error, TruncatedImage):
                    raise
                findings.append(error.rule.finding(str(error)))
                continue
            manifest, problems = parse_manifest(extra.name, data)
            findings.extend(problems)
            if policy.verify_manifest:
                manifest, problems = verify(reader, manifest, by_name)
                findings.extend(problems)
            details = details.model_copy(update={"manifest": manifest})

    members: list[Member] = []
    boot_index: int | None = None
    source = ReaderSource(reader, "OVA member")
    for file in descriptor.files:
        why = unsafe_name(file.href)
        if why:
            findings.append(
                PATH.finding(f"the OVF descriptor names the file {file.href!r}, which {why}; {ADVICE}")
            )
            continue
        found = by_name.get(_plain(file.href))
        if found is None or found.kind not in ("file", "sparse"):
            findings.append(
                MISSING_FILE.finding(
                    f"the OVF descriptor names the file {file.href!r} (id {file.id!r}), which the archive does not "
                    f"hold as a regular file: the package is incomplete; {ADVICE}"
                )
            )
            continue
        if not any(disk.file_ref == file.id for disk in descriptor.disks):
            continue  # an ISO, an NVRAM file...: listed in details, not inspected as a disk
        if boot is not None and boot.file_href == file.href:
            boot_index = len(members)
        disk: ByteSource = SliceSource(source, found.data_offset, found.size, file.href)
        if found.kind == "sparse" and found.real_size is not None:
            disk = SparseSource(disk, maps[entries.index(found)], found.real_size, file.href)
        members.append(Member(file.href, disk))
    if boot_index is None and members and boot is None:
        boot_index = 0
    return Unpacked(
        members=tuple(members),
        findings=findings,
        boot=boot_index,
        details=details,
        properties=ovf.properties(descriptor, boot),
        replaces=ovf.replaced(descriptor, boot),
    )


def _read_member(reader: Reader, entry: TarEntry, cap: int, too_big: Rule) -> bytes:
    if entry.size > cap:
        raise ImageError(
            too_big,
            f"{entry.name!r} is {entry.size} bytes, more than the {cap} introspect reads of it: a real one is a "
            f"few KiB; {ADVICE}",
        )
    return reader.read(entry.data_offset, entry.size, repr(entry.name))


def _never_partial(member: Member, needed: str | None) -> Finding:
    raise AssertionError("an OVA member's end is always known")


def check_capacities(unpacked: Unpacked, members: Sequence[MemberReport]) -> list[Finding]:
    """Each disk's capacity as the descriptor states it (DiskSection/Disk/@capacity, in its
    allocation units) against the virtual size its own header states."""
    details = unpacked.details
    if not isinstance(details, OvaDetails) or details.descriptor is None:
        return []
    descriptor = details.descriptor
    file_ids = {file.href: file.id for file in descriptor.files}
    capacities = {disk.file_ref: disk.capacity for disk in descriptor.disks}
    findings = []
    for member, report in zip(unpacked.members, members, strict=True):
        stated = capacities.get(file_ids.get(member.name))
        if stated is not None and report.virtual_size is not None and stated != report.virtual_size:
            findings.append(
                CAPACITY.finding(
                    f"the OVF descriptor gives {member.name!r} a capacity of {stated} bytes, the disk itself "
                    f"{report.virtual_size}: an importer that sizes the disk from the descriptor (ovftool, "
                    f"vCenter) would make it too {'small' if stated < report.virtual_size else 'large'}; {ADVICE}"
                )
            )
    return findings


def check_extents(unpacked: Unpacked, members: Sequence[MemberReport]) -> list[Finding]:
    """A disk that is a VMDK descriptor keeps its data in the extent files it names. Whether the
    archive holds them or not, the package is not importable as it is: ovftool, vCenter and
    Glance's OVF processing take the one file the descriptor names as the disk."""
    details = unpacked.details
    if not isinstance(details, OvaDetails):
        return []
    held = {_plain(entry.name) for entry in details.entries}
    findings = []
    for member, report in zip(unpacked.members, members, strict=True):
        disk = report.details
        if not isinstance(disk, VmdkDetails) or disk.layout != "descriptor" or disk.descriptor is None:
            continue
        named = [extent.file_name for extent in disk.descriptor.extents if extent.file_name]
        missing = [name for name in named if _plain(name) not in held]
        present = [name for name in named if _plain(name) in held]
        one_file = (
            f"convert the disk to one file (`qemu-img convert -O vmdk -o subformat=streamOptimized "
            f"{member.name[:QUOTE_LENGTH]} disk.vmdk`, where its extents are) and package that"
        )
        if missing:
            findings.append(
                EXTENT_MISSING.finding(
                    f"the disk {member.name[:QUOTE_LENGTH]!r} is a VMDK descriptor naming the extent(s) "
                    f"{_quoted(missing)}, which the archive does not hold: the disk's data is not in the "
                    f"package; {one_file}"
                )
            )
        if present:
            findings.append(
                EXTENT_MEMBER.finding(
                    f"the disk {member.name[:QUOTE_LENGTH]!r} is a VMDK descriptor whose data is in "
                    f"{_quoted(present)}, other files of the archive, which importers do not join to it; "
                    f"{one_file}"
                )
            )
    return findings


def _quoted(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name[:QUOTE_LENGTH]) for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_members(unpacked: Unpacked, members: Sequence[MemberReport]) -> list[Finding]:
    return [*check_capacities(unpacked, members), *check_extents(unpacked, members)]


OVA = Container(
    name="ova", sniff=sniff_ova, open=open_ova, partial=_never_partial, multi=True, check=check_members
)


# --- A tar holding disk.raw (Google Compute Engine's image import) ---------------------------

#: Compute Engine's import ("Import an existing image": `tar --format=oldgnu -Sczf image.tar.gz
#: disk.raw`) takes a gzip-compressed tar whose one file is `disk.raw`, a raw disk.
GCE_DISK_NAME = "disk.raw"


def open_tar(reader: Reader, policy: Policy) -> Unpacked | None:
    """A tar whose one file is `disk.raw` (plain, or GNU sparse as `tar -S` writes it); None for
    any other tar (inspected as a file)."""
    maps: dict[int, Regions] = {}
    entries, findings = walk(reader, maps)
    files = [(i, e) for i, e in enumerate(entries) if e.kind in ("file", "sparse")]
    if len(files) != 1 or _plain(files[0][1].name) != GCE_DISK_NAME:
        return None
    index, entry = files[0]
    source: ByteSource = SliceSource(
        ReaderSource(reader, "tar member"), entry.data_offset, entry.size, entry.name
    )
    if entry.kind == "sparse" and entry.real_size is not None:
        source = SparseSource(source, maps[index], entry.real_size, entry.name)
    return Unpacked(
        members=(Member(entry.name, source),),
        findings=[*polyglot(reader), *findings],
        boot=0,
        details=OvaDetails(kind="tar", entries=entries),
    )


TAR = Container(name="tar", sniff=sniff_ova, open=open_tar, partial=_never_partial)


# --- A bare descriptor -----------------------------------------------------------------------


def sniff_ovf(head: bytes) -> bool:
    """An XML declaration or element, then an OVF envelope namespace within the head."""
    return XML_START.match(head) is not None and any(ns.encode() in head for ns in ovf.OVF_NAMESPACES)


def open_ovf(reader: Reader, policy: Policy) -> Unpacked:
    findings: list[Finding] = []
    if reader.size > ovf.MAX_OVF_SIZE:
        raise ImageError(
            ovf.OVF_SIZE,
            f"the OVF descriptor is {reader.size} bytes, more than the {ovf.MAX_OVF_SIZE} introspect reads",
        )
    details = OvaDetails(kind="ovf")
    try:
        descriptor = ovf.parse_ovf(reader.read(0, reader.size, "OVF descriptor"))
    except ImageError as error:
        return Unpacked(findings=[error.rule.finding(str(error))], details=details)
    boot = ovf.boot_disk(descriptor)
    names = ", ".join(repr(f.href) for f in descriptor.files[:4]) or "none"
    findings.append(
        DESCRIPTOR_ONLY.finding(
            f"the file is an OVF descriptor alone; its disks ({names}) are separate files, which introspect never "
            "opens: upload the OVA (`tar --format=ustar -cf vm.ova vm.ovf vm.mf vm-disk1.vmdk`) or the disk itself"
        )
    )
    return Unpacked(
        findings=findings,
        details=details.model_copy(update={"descriptor": descriptor, "boot_disk": boot}),
        properties=ovf.properties(descriptor, boot),
    )


OVF = Container(name="ovf", sniff=sniff_ovf, open=open_ovf, partial=_never_partial)
