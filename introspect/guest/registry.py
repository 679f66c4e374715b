"""A Windows registry hive (regf), read cell by cell: a key by its path, a value by its name.

Spec: Maxim Suhanov's "Windows registry file format specification" (github.com/msuhanov/regf,
the reference hivex, libregf and yarp follow): the 4096-byte base block ("Base block": signature
"regf", the root cell's offset, the hive bins' data size), then hive bins whose cells each start
with a 32-bit size, negative when the cell is allocated ("Cell"). Offsets between cells are
relative to the first hive bin, at `BASE_BLOCK_SIZE`. The records read here: the key node "nk",
the subkeys lists "li", "lf", "lh" and the index root "ri" (which holds lists, never another
"ri"), the key value "vk", the value list (offsets), and big data "db" (a value of more than
16344 bytes in hives of version 1.4 and later, split into segments).

A SOFTWARE hive is 50-100 MiB: nothing here walks it. The base block is read once; a lookup
reads the cells on its path only, each with one read at its offset (two when it is larger than
`CELL_WINDOW`): the root key, one subkeys list per level (its lf hints or lh hashes pick the
candidate, so a key with hundreds of subkeys costs one list and one key node), the value list
and the value cells of the key. Every count and size read from the hive is clamped to a named
limit first; an "ri" inside an "ri" is refused, so no walk can loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol

from introspect.decode import KIB, MIB, utf16_c_string
from introspect.errors import BadField
from introspect.safety import GUEST_UNREADABLE
from introspect.structure import LittleEndianStructure, chars, pad, u16, u32, u64, unpack_array

#: "The base block is 4096 bytes in length", and the hive bins data starts right after it.
BASE_BLOCK_SIZE = 4096
#: A cell is read with one read of this many bytes (key nodes, value keys and small lists fit).
CELL_WINDOW = 256
#: The largest cell read: an "lf"/"lh" list of the 65535 entries its u16 count allows is 512 KiB;
#: data cells of version 1.3 hives (no big data) have no limit of their own.
MAX_CELL = 1 * MIB
#: The most value data returned (the version strings and numbers read here are dozens of bytes;
#: Windows 10's ProductPolicy, one of the largest values of a SYSTEM hive, is 59 KiB).
MAX_VALUE_DATA = 64 * KIB
#: Values of one key considered (CurrentVersion holds about 40).
MAX_VALUES = 4096
#: Lists of one "ri" index root (each holds up to 65535 keys).
MAX_INDEX_LISTS = 1024
#: A path has at most this many components (Windows limits a key path to 512 levels).
MAX_DEPTH = 512
#: "The maximum size of a big data segment is 16344 bytes" ("Big data").
BIG_DATA_SEGMENT = 16344
#: Segments read for one value: enough for `MAX_VALUE_DATA`.
MAX_SEGMENTS = MAX_VALUE_DATA // BIG_DATA_SEGMENT + 1
#: Hives of minor version 4 and later store values longer than `BIG_DATA_SEGMENT` as big data.
BIG_DATA_MINOR = 4
#: A key name is at most 255 characters, a value name 16383 (UTF-16: twice as many bytes).
MAX_KEY_NAME = 255 * 2
MAX_VALUE_NAME = 16383 * 2


class HiveFile(Protocol):
    """What a hive is read through: a file of `size` bytes whose `read` returns exactly what was
    asked or raises (`introspect.sources.Reader`, or a file of the guest)."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int, what: str) -> bytes: ...


class RegfBaseBlock(LittleEndianStructure):
    """The base block's fields ("Base block"), up to its checksum at offset 508."""

    OFFSET: ClassVar[int] = 0

    signature: bytes = chars(4)
    primary_sequence_number: int = u32()
    secondary_sequence_number: int = u32()
    last_written_timestamp: int = u64()
    major_version: int = u32()
    minor_version: int = u32()
    file_type: int = u32()
    file_format: int = u32()
    root_cell_offset: int = u32()
    hive_bins_data_size: int = u32()
    clustering_factor: int = u32()
    file_name: bytes = chars(64)
    reserved: None = pad(396)
    checksum: int = u32()


REGF_SIGNATURE = b"regf"
#: "Major version: 1"; minor versions 2 to 6 are known (Windows NT 3.1 to Windows 10).
MAJOR_VERSION = 1
MINOR_VERSIONS = range(2, 7)
#: "File type: 0 means primary file" (the others are transaction logs).
FILE_TYPE_PRIMARY = 0


class CellHeader(LittleEndianStructure):
    """ "Cell": its size, negative when the cell is allocated, including these 4 bytes."""

    size: int = u32()


SIGNED_BIT = 31


class KeyNode(LittleEndianStructure):
    """ "Key node" (nk), after the cell's size: its fixed part; the key name follows."""

    signature: bytes = chars(2)
    flags: int = u16()
    last_written_timestamp: int = u64()
    access_bits: int = u32()
    parent: int = u32()
    number_of_subkeys: int = u32()
    number_of_volatile_subkeys: int = u32()
    subkeys_list_offset: int = u32()
    volatile_subkeys_list_offset: int = u32()
    number_of_key_values: int = u32()
    key_values_list_offset: int = u32()
    key_security_offset: int = u32()
    class_name_offset: int = u32()
    largest_subkey_name_length: int = u32()
    largest_subkey_class_name_length: int = u32()
    largest_value_name_length: int = u32()
    largest_value_data_size: int = u32()
    work_var: int = u32()
    key_name_length: int = u16()
    class_name_length: int = u16()


#: Key node flags: KEY_COMP_NAME (bit 5): the name is ASCII (extended: Latin-1), not UTF-16LE.
KEY_COMP_NAME_BIT = 5
KEY_COMP_NAME = 1 << KEY_COMP_NAME_BIT


class KeyValue(LittleEndianStructure):
    """ "Key value" (vk), after the cell's size: its fixed part; the value name follows."""

    signature: bytes = chars(2)
    name_length: int = u16()
    data_size: int = u32()
    data_offset: int = u32()
    data_type: int = u32()
    flags: int = u16()
    spare: int = u16()


#: Key value flags: VALUE_COMP_NAME (bit 0): the name is ASCII (extended), not UTF-16LE.
VALUE_COMP_NAME_BIT = 0
VALUE_COMP_NAME = 1 << VALUE_COMP_NAME_BIT
#: Data size bit 31: the data (at most 4 bytes) is stored in the data offset field itself.
DATA_IN_OFFSET_BIT = 31
DATA_IN_OFFSET = 1 << DATA_IN_OFFSET_BIT
DATA_SIZE_MASK = DATA_IN_OFFSET - 1


class ListHeader(LittleEndianStructure):
    """The two fields every subkeys list ("Index leaf", "Fast leaf", "Hash leaf", "Index root")
    starts with; the elements follow."""

    signature: bytes = chars(2)
    number_of_elements: int = u16()


class Offset(LittleEndianStructure):
    """An element of an "li" or "ri" list, and of a value list or a big data segments list."""

    offset: int = u32()


class FastLeafElement(LittleEndianStructure):
    """An element of an "lf" list: the key node's offset and the first 4 characters of its name."""

    key_node_offset: int = u32()
    name_hint: bytes = chars(4)


class HashLeafElement(LittleEndianStructure):
    """An element of an "lh" list: the key node's offset and its name's hash."""

    key_node_offset: int = u32()
    name_hash: int = u32()


class BigData(LittleEndianStructure):
    """ "Big data" (db): the number of segments and the offset of their list."""

    signature: bytes = chars(2)
    number_of_segments: int = u16()
    segments_list_offset: int = u32()


#: "The hash is calculated ... hash = hash * 37 + upper(char)" ("Hash leaf").
NAME_HASH_MULTIPLIER = 37
U32 = 0xFFFFFFFF
#: An lf hint is the name's first characters, NUL-padded.
HINT_SIZE = 4


class ValueType(IntEnum):
    """The data types of a value ("Data types")."""

    REG_NONE = 0
    REG_SZ = 1
    REG_EXPAND_SZ = 2
    REG_BINARY = 3
    REG_DWORD = 4
    REG_DWORD_BIG_ENDIAN = 5
    REG_LINK = 6
    REG_MULTI_SZ = 7
    REG_RESOURCE_LIST = 8
    REG_FULL_RESOURCE_DESCRIPTOR = 9
    REG_RESOURCE_REQUIREMENTS_LIST = 10
    REG_QWORD = 11


DWORD_SIZE = 4
QWORD_SIZE = 8


@dataclass(frozen=True, slots=True)
class Key:
    """A key node: where it is, its name, and where its subkeys and values are listed."""

    offset: int
    name: str
    number_of_subkeys: int
    subkeys_list_offset: int
    number_of_values: int
    values_list_offset: int


@dataclass(frozen=True, slots=True)
class Value:
    """A value: its name ("" for the default value), its type and its data (as stored)."""

    name: str
    type: int
    data: bytes

    def decoded(self) -> str | int | list[str] | bytes:
        """The data as its type says: text for REG_SZ and REG_EXPAND_SZ (UTF-16LE up to the first
        NUL), a list of texts for REG_MULTI_SZ, a number for REG_DWORD(_BIG_ENDIAN) and REG_QWORD;
        the bytes otherwise, or when the data is too short for its type."""
        if self.type in (ValueType.REG_SZ, ValueType.REG_EXPAND_SZ):
            return utf16_c_string(self.data[: len(self.data) & ~1], "little")
        if self.type == ValueType.REG_MULTI_SZ:
            text = self.data[: len(self.data) & ~1].decode("utf-16-le", errors="replace")
            strings = text.split("\0")
            while strings and not strings[-1]:
                strings.pop()
            return strings
        if self.type == ValueType.REG_DWORD and len(self.data) >= DWORD_SIZE:
            return int.from_bytes(self.data[:DWORD_SIZE], "little")
        if self.type == ValueType.REG_DWORD_BIG_ENDIAN and len(self.data) >= DWORD_SIZE:
            return int.from_bytes(self.data[:DWORD_SIZE], "big")
        if self.type == ValueType.REG_QWORD and len(self.data) >= QWORD_SIZE:
            return int.from_bytes(self.data[:QWORD_SIZE], "little")
        return self.data

    def text(self) -> str | None:
        """The data as one text when it is REG_SZ or REG_EXPAND_SZ, else None."""
        decoded = self.decoded()
        return (
            decoded
            if self.type in (ValueType.REG_SZ, ValueType.REG_EXPAND_SZ) and isinstance(decoded, str)
            else None
        )

    def number(self) -> int | None:
        """The data as a number when it is a REG_DWORD or REG_QWORD, else None."""
        decoded = self.decoded()
        return decoded if isinstance(decoded, int) else None


class Hive:
    """A registry hive read through `file` (see the module docstring); `what` names it in errors."""

    def __init__(self, file: HiveFile, what: str = "hive") -> None:
        self.file = file
        self.what = what
        base = RegfBaseBlock.read(file, f"{what}: base block")
        if base.signature != REGF_SIGNATURE:
            raise BadField(GUEST_UNREADABLE, f"{what}: base block signature", base.signature, "'regf'")
        if base.major_version != MAJOR_VERSION or base.minor_version not in MINOR_VERSIONS:
            raise BadField(
                GUEST_UNREADABLE,
                f"{what}: version",
                f"{base.major_version}.{base.minor_version}",
                f"{MAJOR_VERSION}.{MINOR_VERSIONS.start} to {MAJOR_VERSION}.{MINOR_VERSIONS.stop - 1}",
            )
        if base.file_type != FILE_TYPE_PRIMARY:
            raise BadField(
                GUEST_UNREADABLE, f"{what}: file type", base.file_type, "0 (a primary file, not a log)"
            )
        self.base = base
        #: The hive bins' data ends here (relative offsets), clamped to the file.
        self.end = min(base.hive_bins_data_size, max(0, file.size - BASE_BLOCK_SIZE))
        #: Sequence numbers that differ: Windows did not close the hive, its logs hold newer data.
        self.dirty = base.primary_sequence_number != base.secondary_sequence_number
        self.root = self._key(base.root_cell_offset)

    # --- cells ---------------------------------------------------------------------------------

    def _cell(self, offset: int, what: str, minimum: int = 0) -> bytes:
        """The data of the allocated cell at `offset` (relative to the hive bins), clamped."""
        if offset + CellHeader.SIZE > self.end:
            raise BadField(GUEST_UNREADABLE, f"{self.what}: {what} offset", offset, f"below {self.end}")
        at = BASE_BLOCK_SIZE + offset
        window = self.file.read(at, min(CELL_WINDOW, BASE_BLOCK_SIZE + self.end - at), f"{self.what}: {what}")
        raw = CellHeader.unpack(window).size
        size = (1 << 32) - raw if raw >> SIGNED_BIT else 0  # allocated cells have a negative size
        if not CellHeader.SIZE + minimum <= size <= MAX_CELL or offset + size > self.end:
            raise BadField(
                GUEST_UNREADABLE,
                f"{self.what}: the size of the {what} cell at {offset}",
                raw - (1 << 32) if raw >> SIGNED_BIT else raw,
                f"an allocated cell of {CellHeader.SIZE + minimum} to {MAX_CELL} bytes within the hive bins",
            )
        if size <= len(window):
            return window[CellHeader.SIZE : size]
        return window[CellHeader.SIZE :] + self.file.read(
            at + len(window), size - len(window), f"{self.what}: {what}"
        )

    def _key(self, offset: int) -> Key:
        cell = self._cell(offset, "key node", KeyNode.SIZE)
        node = KeyNode.unpack(cell)
        if node.signature != b"nk":
            raise BadField(
                GUEST_UNREADABLE, f"{self.what}: key node signature at {offset}", node.signature, "'nk'"
            )
        length = min(node.key_name_length, MAX_KEY_NAME)
        raw = cell[KeyNode.SIZE : KeyNode.SIZE + length]
        name = (
            raw.decode("latin-1") if node.flags & KEY_COMP_NAME else raw.decode("utf-16-le", errors="replace")
        )
        return Key(
            offset=offset,
            name=name,
            number_of_subkeys=node.number_of_subkeys,
            subkeys_list_offset=node.subkeys_list_offset,
            number_of_values=min(node.number_of_key_values, MAX_VALUES),
            values_list_offset=node.key_values_list_offset,
        )

    # --- keys ----------------------------------------------------------------------------------

    def open(self, path: str) -> Key | None:
        """The key at `path` (components separated by backslashes, compared without case, from
        the hive's root), or None when a component is missing."""
        parts = [part for part in path.split("\\") if part]
        if len(parts) > MAX_DEPTH:
            raise BadField(
                GUEST_UNREADABLE, f"{self.what}: the path {path!r}", len(parts), f"at most {MAX_DEPTH} keys"
            )
        key = self.root
        for part in parts:
            found = self.subkey(key, part)
            if found is None:
                return None
            key = found
        return key

    def subkey(self, key: Key, name: str) -> Key | None:
        """The subkey of `key` called `name` (without case), or None."""
        if key.number_of_subkeys == 0 or key.subkeys_list_offset == U32:
            return None
        return self._find_in_list(key.subkeys_list_offset, name, index_root_allowed=True)

    def _find_in_list(self, offset: int, name: str, *, index_root_allowed: bool) -> Key | None:
        cell = self._cell(offset, "subkeys list", ListHeader.SIZE)
        header = ListHeader.unpack(cell)
        signature = header.signature
        if signature == b"ri":
            if not index_root_allowed:
                raise BadField(
                    GUEST_UNREADABLE, f"{self.what}: a list in an index root", "'ri'", "'li', 'lf' or 'lh'"
                )
            count = min(header.number_of_elements, MAX_INDEX_LISTS)
            for element in unpack_array(Offset, cell, count, ListHeader.SIZE):
                found = self._find_in_list(element.offset, name, index_root_allowed=False)
                if found is not None:
                    return found
            return None
        wanted = name.casefold()
        if signature == b"li":
            candidates = [
                e.offset for e in unpack_array(Offset, cell, header.number_of_elements, ListHeader.SIZE)
            ]
        elif signature == b"lf":
            hint = _hint(name)
            candidates = [
                e.key_node_offset
                for e in unpack_array(FastLeafElement, cell, header.number_of_elements, ListHeader.SIZE)
                if hint is None or _hint_matches(e.name_hint, hint)
            ]
        elif signature == b"lh":
            hashed = name_hash(name)
            candidates = [
                e.key_node_offset
                for e in unpack_array(HashLeafElement, cell, header.number_of_elements, ListHeader.SIZE)
                if hashed is None or e.name_hash == hashed
            ]
        else:
            raise BadField(
                GUEST_UNREADABLE,
                f"{self.what}: subkeys list signature at {offset}",
                signature,
                "'li', 'lf', 'lh' or 'ri'",
            )
        for candidate in candidates:
            key = self._key(candidate)
            if key.name.casefold() == wanted:
                return key
        return None

    # --- values --------------------------------------------------------------------------------

    def value(self, key: Key, name: str, limit: int = MAX_VALUE_DATA) -> Value | None:
        """The value of `key` called `name` (without case; "" for the default value), with at
        most `limit` bytes of data (more is refused: `BadField`), or None."""
        return self.values(key, [name], limit).get(name.casefold())

    def values(self, key: Key, names: list[str], limit: int = MAX_VALUE_DATA) -> dict[str, Value]:
        """The values of `key` among `names`, by casefolded name: the value list and the value
        cells are read once, the data only of the values asked for."""
        wanted = {name.casefold() for name in names}
        found: dict[str, Value] = {}
        if key.number_of_values == 0 or key.values_list_offset == U32 or not wanted:
            return found
        cell = self._cell(key.values_list_offset, "value list", key.number_of_values * Offset.SIZE)
        for element in unpack_array(Offset, cell, key.number_of_values):
            vk_cell = self._cell(element.offset, "key value", KeyValue.SIZE)
            vk = KeyValue.unpack(vk_cell)
            if vk.signature != b"vk":
                raise BadField(
                    GUEST_UNREADABLE,
                    f"{self.what}: key value signature at {element.offset}",
                    vk.signature,
                    "'vk'",
                )
            raw = vk_cell[KeyValue.SIZE : KeyValue.SIZE + min(vk.name_length, MAX_VALUE_NAME)]
            value_name = (
                raw.decode("latin-1")
                if vk.flags & VALUE_COMP_NAME
                else raw.decode("utf-16-le", errors="replace")
            )
            folded = value_name.casefold()
            if folded in wanted and folded not in found:
                found[folded] = Value(value_name, vk.data_type, self._data(vk, limit))
                if len(found) == len(wanted):
                    break
        return found

    def _data(self, vk: KeyValue, limit: int) -> bytes:
        size = vk.data_size & DATA_SIZE_MASK
        if vk.data_size & DATA_IN_OFFSET:
            return vk.data_offset.to_bytes(DWORD_SIZE, "little")[: min(size, DWORD_SIZE)]
        if size > limit:
            raise BadField(GUEST_UNREADABLE, f"{self.what}: value data size", size, f"at most {limit} bytes")
        if size == 0:
            return b""
        if size > BIG_DATA_SEGMENT and self.base.minor_version >= BIG_DATA_MINOR:
            return self._big_data(vk.data_offset, size)
        cell = self._cell(vk.data_offset, "value data", size)
        return cell[:size]

    def _big_data(self, offset: int, size: int) -> bytes:
        cell = self._cell(offset, "big data", BigData.SIZE)
        big = BigData.unpack(cell)
        if big.signature != b"db":
            raise BadField(
                GUEST_UNREADABLE, f"{self.what}: big data signature at {offset}", big.signature, "'db'"
            )
        count = min(big.number_of_segments, MAX_SEGMENTS)
        segments = self._cell(big.segments_list_offset, "big data segments list", count * Offset.SIZE)
        parts: list[bytes] = []
        remaining = size
        for element in unpack_array(Offset, segments, count):
            if remaining <= 0:
                break
            part = self._cell(element.offset, "big data segment")[: min(remaining, BIG_DATA_SEGMENT)]
            parts.append(part)
            remaining -= len(part)
        if remaining > 0:
            raise BadField(
                GUEST_UNREADABLE,
                f"{self.what}: the big data at {offset}",
                f"{size - remaining} bytes",
                f"{size} bytes",
            )
        return b"".join(parts)


def name_hash(name: str) -> int | None:
    """The "lh" hash of a key name; None for a name with characters outside ASCII, whose upper
    case Windows computes with its own tables (such names are compared by reading the key)."""
    if not name.isascii():
        return None
    value = 0
    for char in name.upper():
        value = (value * NAME_HASH_MULTIPLIER + ord(char)) & U32
    return value


def _hint(name: str) -> bytes | None:
    """The characters of an "lf" hint a key called `name` has (at most the first 4), folded; None
    outside ASCII (see `name_hash`)."""
    if not name.isascii():
        return None
    return name[:HINT_SIZE].casefold().encode("ascii")


def _hint_matches(stored: bytes, hint: bytes) -> bool:
    """Does a stored hint agree with `hint`? Only as many characters as the name has are compared
    (what pads a shorter name's hint is not said), and a hint outside ASCII is not trusted."""
    return stored[: len(hint)].lower() == hint or not stored.isascii()
