"""The VMDK text descriptor: read line by line with an allow-list, every count and length capped.

Spec: VMware "Virtual Disk Format 5.0", "The Descriptor File": the header (version, CID,
parentCID, createType, parentFileNameHint), the "Extent Descriptions" (`ACCESS SECTORS TYPE
["FILE" [OFFSET]]`) and "The Disk Database" (`ddb.*` keys). A descriptor is a file of its own or
is embedded in a sparse extent; `introspect.formats.vmdk` finds it and hands its bytes here. Not
a format: nothing here is registered, and nothing a descriptor names is ever opened.

qemu finds `CID`, `parentCID`, `createType` and `parentFileNameHint` with a plain substring search
(block/vmdk.c): a descriptor in which those words appear anywhere but on their own line reads
differently to qemu than to us, and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from introspect.decode import MIB, end_of_data
from introspect.model import Finding, Frozen, Severity
from introspect.safety import rule

#: The advice every VMDK finding ends with.
CONVERT = (
    "re-export as streamOptimized or convert with `qemu-img convert -O vmdk -o subformat=streamOptimized`"
)

DESCRIPTOR_LIMIT = rule(
    "vmdk.descriptor_limit",
    Severity.REJECT,
    "the descriptor is beyond a size, line, extent or key limit",
    names_files=True,
)
# A line that is neither blank, a comment, `key = value` nor an extent is rejected (STYLE rule 9,
# as oslo's check_descriptor does): qemu finds extents with a lenient sscanf and VMware has its own
# parser, so a line we cannot classify may be an extent or a key to one of them.
DESCRIPTOR_SYNTAX = rule(
    "vmdk.descriptor_syntax",
    Severity.REJECT,
    "a descriptor line is not a comment, key = value or extent",
    names_files=True,
)
# A well-formed `key = value` line with a key the spec does not list only warns: no reader acts on a
# key it does not know (qemu looks up four keys by name, VMware ignores what it does not use), and
# VMware has added header keys over the years (isNativeSnapshot, changeTrackPath), so rejecting
# them would reject real exports. A policy can promote the code to reject.
DESCRIPTOR_UNKNOWN_KEY = rule(
    "vmdk.descriptor_unknown_key", Severity.WARN, "the descriptor has a key the VMDK spec does not list"
)
DESCRIPTOR_AMBIGUOUS = rule(
    "vmdk.descriptor_ambiguous",
    Severity.REJECT,
    "a descriptor key is repeated or appears where qemu's substring search would find it first",
)

#: qemu's vmdk_read_desc reads at most 1 MiB - 1 bytes of descriptor ("avoid unbounded allocation").
DESCRIPTOR_MAX_SIZE = 1 * MIB - 1
#: Iteration and size caps: qemu splits a disk into at most 2 TiB / 2 GiB = 1024 extents.
MAX_DESCRIPTOR_LINES = 16384
MAX_EXTENTS = 1024
MAX_DDB_KEYS = 256
MAX_DDB_KEY_LENGTH = 1024
MAX_VALUE_LENGTH = 1024
#: Extent file names and parentFileNameHint, like qcow2's backing file name.
MAX_NAME_LENGTH = 1023
#: How much of an offending line a finding quotes.
QUOTE_LENGTH = 80

ExtentAccess = Literal["RW", "RDONLY", "NOACCESS"]
EXTENT_ACCESS: dict[str, ExtentAccess] = {"RW": "RW", "RDONLY": "RDONLY", "NOACCESS": "NOACCESS"}
EXTENT_TYPES = ("SPARSE", "FLAT", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW", "SESPARSE")
#: The extents qemu opens and counts into the virtual size (vmdk_parse_extents): RW ones of these.
QEMU_EXTENT_TYPES = frozenset({"FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE"})
#: Header keys the spec lists (plus changeTrackPath, which ESX writes for changed block tracking).
KEY_VERSION = "version"
KEY_ENCODING = "encoding"
KEY_CID = "CID"
KEY_PARENT_CID = "parentCID"
KEY_IS_NATIVE_SNAPSHOT = "isNativeSnapshot"
KEY_CREATE_TYPE = "createType"
KEY_PARENT_FILE_NAME_HINT = "parentFileNameHint"
KEY_CHANGE_TRACK_PATH = "changeTrackPath"
HEADER_KEYS = frozenset(
    {
        KEY_VERSION,
        KEY_ENCODING,
        KEY_CID,
        KEY_PARENT_CID,
        KEY_IS_NATIVE_SNAPSHOT,
        KEY_CREATE_TYPE,
        KEY_PARENT_FILE_NAME_HINT,
        KEY_CHANGE_TRACK_PATH,
    }
)
#: The words qemu looks for with strstr(): the first occurrence in the text must be their own line.
QEMU_SEARCHED_KEYS = (KEY_CID, KEY_PARENT_CID, KEY_CREATE_TYPE, KEY_PARENT_FILE_NAME_HINT)
DDB_PREFIX = "ddb."
#: parentCID of a disk with no parent.
NO_PARENT_CID = 0xFFFFFFFF

EXTENT_LINE = re.compile(
    r"(?P<access>[A-Z]+)\s+(?P<sectors>[0-9]{1,20})\s+(?P<type>[A-Z]+)"
    r'(?:\s+"(?P<name>[^"]*)"(?:\s+(?P<offset>[0-9]{1,20}))?)?',
    re.ASCII,
)
KEY_LINE = re.compile(r"(?P<key>[A-Za-z][A-Za-z0-9_.]*)\s*=\s*(?P<value>.*)", re.ASCII)
NUMBER = re.compile(r"[0-9]{1,20}", re.ASCII)


class VmdkExtent(Frozen):
    """One extent line, `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`; the file name is never opened."""

    access: ExtentAccess
    sectors: int
    type: str
    file_name: str | None
    file_name_truncated: bool = False
    offset: int | None = None


class VmdkDescriptor(Frozen):
    """The descriptor's header keys, extents and disk database, as capped strings."""

    version: int | None = None
    encoding: str | None = None
    cid: str | None = None
    parent_cid: str | None = None
    create_type: str | None = None
    parent_file_name_hint: str | None = None
    is_native_snapshot: str | None = None
    change_track_path: str | None = None
    extents: list[VmdkExtent]
    ddb: dict[str, str]


def number(value: str | None) -> int | None:
    """A descriptor number (version, a ddb geometry value): decimal digits only, else None."""
    if value is None or not NUMBER.fullmatch(value):
        return None
    return int(value)


# --- Descriptor parsing -------------------------------------------------------------------------


@dataclass(slots=True)
class _Problems:
    """Offending lines by finding, counted, the first of each quoted: one finding per kind."""

    lines: dict[str, tuple[int, str]]

    def add(self, kind: str, line: str) -> None:
        count, first = self.lines.get(kind, (0, line))
        self.lines[kind] = (count + 1, first)

    def quoted(self, kind: str) -> tuple[int, str] | None:
        entry = self.lines.get(kind)
        if entry is None:
            return None
        count, first = entry
        return count, repr(first[:QUOTE_LENGTH])


#: qemu rewrites the CID in place at a VMDK's first write (block/vmdk.c, vmdk_write_cid: over the
#: descriptor it read, then written back whole). A new random CID with fewer hex digits than the
#: one `create` wrote (qemu does not pad them: about 1 conversion in 100 here) leaves the old
#: text's last bytes after the new text's NUL: at most 6 (a CID is 1 to 8 digits), and they repeat
#: the end of the text, since what follows the CID line is unchanged.
MAX_CID_LEFTOVER = 6


def descriptor_text(raw: bytes) -> tuple[bytes, int | None]:
    """The descriptor text as qemu reads it (to its first NUL, NUL padding left out), and the offset
    of that NUL when more follows it than qemu's own CID-rewrite leftover: other readers may read
    on past it (None: nothing does)."""
    raw = raw[: end_of_data(raw)]
    nul = raw.find(b"\0")
    if nul < 0:
        return raw, None
    text, after = raw[:nul], raw[nul + 1 :]
    if len(after) <= MAX_CID_LEFTOVER and text.endswith(after):
        return text, None
    return text, nul


def parse_descriptor(raw: bytes) -> tuple[VmdkDescriptor, list[Finding]]:
    """Parse descriptor text line by line with an allow-list; every count and length is capped.

    Trailing NUL padding (a sector-padded descriptor) is left out, and so are the few bytes qemu's
    CID rewrite leaves after a NUL; text after an inner NUL is not parsed (qemu stops there too)
    and is a finding."""
    findings: list[Finding] = []
    raw, nul = descriptor_text(raw)
    if nul is not None:
        findings.append(
            DESCRIPTOR_SYNTAX.finding(
                f"the descriptor has a NUL byte at {nul} followed by more data: qemu stops reading there, "
                f"other readers may not; {CONVERT}"
            )
        )
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n", MAX_DESCRIPTOR_LINES)
    if len(lines) > MAX_DESCRIPTOR_LINES:
        lines = lines[:MAX_DESCRIPTOR_LINES]
        findings.append(
            DESCRIPTOR_LIMIT.finding(
                f"the descriptor has more than {MAX_DESCRIPTOR_LINES} lines; only those were read; {CONVERT}"
            )
        )
    header: dict[str, str] = {}
    header_positions: dict[str, int] = {}
    ddb: dict[str, str] = {}
    extents: list[VmdkExtent] = []
    problems = _Problems({})
    position = 0
    for line in lines:
        line_position = position
        position += len(line) + 1
        stripped = line.strip()
        if not stripped or stripped[0] == "#":
            continue
        # An extent line has no `=` outside its quoted name, and a key line's key has no blank:
        # no line is both, so the `=` only says which pattern to try first.
        key_match = KEY_LINE.fullmatch(stripped) if "=" in stripped else None
        if key_match is None and (extent_match := EXTENT_LINE.fullmatch(stripped)) is not None:
            extent = _extent(extent_match, problems, stripped)
            if extent is None:
                continue
            if len(extents) >= MAX_EXTENTS:
                problems.add("too_many_extents", stripped)
                continue
            extents.append(extent)
        elif key_match is not None:
            key, value = key_match["key"], _unquote(key_match["value"])
            if key in header or key in ddb:
                problems.add("duplicate", stripped)
            elif key.startswith(DDB_PREFIX):
                if len(key) > MAX_DDB_KEY_LENGTH or len(value) > MAX_VALUE_LENGTH:
                    problems.add("too_long", stripped)
                elif len(ddb) >= MAX_DDB_KEYS:
                    problems.add("too_many_keys", stripped)
                else:
                    ddb[key] = value
            elif key in HEADER_KEYS:
                if len(value) > MAX_VALUE_LENGTH:
                    problems.add("too_long", stripped)
                    value = value[:MAX_VALUE_LENGTH]
                header[key] = value
                header_positions[key] = line_position + len(line) - len(line.lstrip())
            else:
                problems.add("unknown_key", stripped)
        else:
            problems.add("syntax", stripped)
    for key in QEMU_SEARCHED_KEYS:
        first = text.find(key)
        if first >= 0 and first != header_positions.get(key):
            problems.add("qemu_search", key)
    findings.extend(_problem_findings(problems))
    version = header.get(KEY_VERSION)
    if version is not None and number(version) is None:
        findings.append(
            DESCRIPTOR_SYNTAX.finding(
                f"the descriptor's version is {version[:QUOTE_LENGTH]!r}, not a number; {CONVERT}"
            )
        )
    hint = header.get(KEY_PARENT_FILE_NAME_HINT)
    track = header.get(KEY_CHANGE_TRACK_PATH)
    descriptor = VmdkDescriptor(
        version=number(version),
        encoding=header.get(KEY_ENCODING),
        cid=header.get(KEY_CID),
        parent_cid=header.get(KEY_PARENT_CID),
        create_type=header.get(KEY_CREATE_TYPE),
        parent_file_name_hint=hint[:MAX_NAME_LENGTH] if hint is not None else None,
        is_native_snapshot=header.get(KEY_IS_NATIVE_SNAPSHOT),
        change_track_path=track[:MAX_NAME_LENGTH] if track is not None else None,
        extents=extents,
        ddb=ddb,
    )
    return descriptor, findings


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _extent(match: re.Match[str], problems: _Problems, line: str) -> VmdkExtent | None:
    """An extent line, or None (and a syntax problem) when it names no known access or type."""
    access = EXTENT_ACCESS.get(match["access"])
    kind, name, offset = match["type"], match["name"], match["offset"]
    if access is None or kind not in EXTENT_TYPES or (name is None) != (kind == "ZERO"):
        problems.add("syntax", line)
        return None
    return VmdkExtent(
        access=access,
        sectors=int(match["sectors"]),
        type=kind,
        file_name=name[:MAX_NAME_LENGTH] if name is not None else None,
        file_name_truncated=name is not None and len(name) > MAX_NAME_LENGTH,
        offset=int(offset) if offset is not None else None,
    )


def _problem_findings(problems: _Problems) -> Iterator[Finding]:
    if (entry := problems.quoted("syntax")) is not None:
        count, first = entry
        yield DESCRIPTOR_SYNTAX.finding(
            f"{count} descriptor line(s) are neither a comment, `key = value` nor an extent "
            f"(first: {first}): a hypervisor may read them differently; {CONVERT}"
        )
    if (entry := problems.quoted("unknown_key")) is not None:
        count, first = entry
        yield DESCRIPTOR_UNKNOWN_KEY.finding(
            f"{count} descriptor line(s) have a key the VMDK spec does not list (first: {first}); "
            f"check where the image comes from, or {CONVERT}"
        )
    if (entry := problems.quoted("duplicate")) is not None:
        count, first = entry
        yield DESCRIPTOR_AMBIGUOUS.finding(
            f"{count} descriptor key(s) are set twice (first: {first}): readers disagree on which one "
            f"counts; {CONVERT}"
        )
    if (entry := problems.quoted("qemu_search")) is not None:
        count, first = entry
        yield DESCRIPTOR_AMBIGUOUS.finding(
            f"{count} key name(s) that qemu finds by substring search appear before their own line "
            f"(first: {first}): qemu would read another value than VMware; {CONVERT}"
        )
    limits = (
        ("too_many_extents", f"more than {MAX_EXTENTS} extents"),
        ("too_many_keys", f"more than {MAX_DDB_KEYS} disk database keys"),
        ("too_long", f"a key longer than {MAX_DDB_KEY_LENGTH} or a value longer than {MAX_VALUE_LENGTH}"),
    )
    for kind, what in limits:
        if (entry := problems.quoted(kind)) is not None:
            count, first = entry
            yield DESCRIPTOR_LIMIT.finding(
                f"the descriptor has {what}: {count} line(s) were not read (first: {first}); {CONVERT}"
            )
