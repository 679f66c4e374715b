"""The registry hive reader over real hives: a Windows 10 SYSTEM hive (11 MiB, the dissect.regf
sdist's test data) and a SOFTWARE hive hivexregedit made from it, against what `hivexget` said
about their keys (fixtures/make/facts.sh). Hostile hives are derived from the real ones one
declared structure at a time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from introspect.errors import BadField, ImageError
from introspect.guest.registry import (
    BASE_BLOCK_SIZE,
    BigData,
    CellHeader,
    FastLeafElement,
    HashLeafElement,
    Hive,
    KeyNode,
    KeyValue,
    ListHeader,
    Offset,
    RegfBaseBlock,
    ValueType,
    name_hash,
)
from introspect.sources import Budget, BytesSource, FileSource, Reader
from introspect.structure import pack, unpack_array
from tests.conftest import fixture_group
from tests.tools import put, rewrite

CURRENT_VERSION = "Microsoft\\Windows NT\\CurrentVersion"
#: (hive, key, the file hivexget's .reg output of that key was recorded in)
RECORDED = [
    ("software", CURRENT_VERSION, "software.hive.CurrentVersion.reg"),
    ("system", "Select", "system.hive.Select.reg"),
    ("system", "ControlSet001\\Control\\ProductOptions", "system.hive.ProductOptions.reg"),
    ("system", "ControlSet001\\Control\\ComputerName\\ComputerName", "system.hive.ComputerName.reg"),
    ("system", "ControlSet001\\Control\\Session Manager\\Environment", "system.hive.Environment.reg"),
]
_LINE = re.compile(r'^"(?P<name>(?:[^"\\]|\\.)*)"=(?P<value>.*)$')


@pytest.fixture(scope="module")
def group() -> Path:
    return fixture_group("facts") / "hive"


def hivexget(path: Path) -> dict[str, tuple[int, object]]:
    """hivexget's .reg lines: name ("" for "@") -> (type, text, number or bytes)."""
    values: dict[str, tuple[int, object]] = {}
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        assert match, line
        name = match.group("name").replace("\\\\", "\\")
        name = "" if name == "@" else name
        value = match.group("value")
        if value.startswith("dword:"):
            values[name] = (ValueType.REG_DWORD, int(value[6:], 16))
        elif value.startswith('"'):
            values[name] = (ValueType.REG_SZ, value[1:-1].replace("\\\\", "\\"))
        elif value.startswith("str("):
            kind, text = re.fullmatch(r'str\((\d+)\):"(.*)"', value).groups()
            values[name] = (int(kind), text.replace("\\\\", "\\"))
        else:
            kind, hexes = re.fullmatch(r"hex\((\d+)\):(.*)", value).groups()
            values[name] = (int(kind), bytes.fromhex(hexes.replace(",", "")))
    return values


def open_hive(path: Path, budget: Budget | None = None) -> tuple[Hive, Reader]:
    reader = Reader(FileSource(path), budget or Budget(max_reads=512, max_bytes=4 << 20))
    return Hive(reader, path.name), reader


@pytest.mark.parametrize(("hive", "key", "reg"), RECORDED, ids=[r[2] for r in RECORDED])
def test_values_are_what_hivexget_says(group: Path, hive: str, key: str, reg: str) -> None:
    expected = hivexget(group / reg)
    opened, _ = open_hive(group / f"{hive}.hive")
    node = opened.open(key)
    assert node is not None
    assert node.name == key.rsplit("\\", 1)[-1]
    found = opened.values(node, list(expected))
    assert set(found) == {name.casefold() for name in expected}
    for name, (kind, value) in expected.items():
        got = found[name.casefold()]
        assert got.name == name
        assert got.type == kind
        if isinstance(value, bytes):
            assert got.data == value
        else:
            assert got.decoded() == value


def test_big_data_and_multi_strings(group: Path) -> None:
    """ProductPolicy (59 KiB, stored as big data segments) and ProductSuite (REG_MULTI_SZ)."""
    hive, _ = open_hive(group / "system.hive")
    key = hive.open("ControlSet001\\Control\\ProductOptions")
    policy = hive.value(key, "ProductPolicy")
    assert len(policy.data) == 60480 > 16344
    assert hive.value(key, "ProductSuite").decoded() == ["Terminal Server"]
    with pytest.raises(BadField, match="value data size is 60480, expected at most 1024 bytes"):
        hive.value(key, "ProductPolicy", limit=1024)


def test_lookups_ignore_case_and_miss_cleanly(group: Path) -> None:
    hive, _ = open_hive(group / "software.hive")
    key = hive.open("MICROSOFT\\windows nt\\CurrentVERSION")
    assert key is not None and key.name == "CurrentVersion"
    assert hive.value(key, "productname").text() == "Windows Server 2019 Standard"
    assert hive.value(key, "NoSuchValue") is None
    assert hive.open("Microsoft\\Windows NT\\NoSuchKey") is None
    assert hive.open("Microsoft\\Windows NT\\CurrentVersion\\Winlogon\\Deeper") is None
    assert hive.open("") == hive.root


def test_a_lookup_reads_only_its_cells(group: Path) -> None:
    """An 11 MiB hive: the base block and the cells on the path, a few dozen small reads."""
    for name, key, values in (
        ("software.hive", CURRENT_VERSION, ["ProductName", "CurrentBuild", "InstallationType"]),
        ("system.hive", "ControlSet001\\Control\\Session Manager\\Environment", ["PROCESSOR_ARCHITECTURE"]),
    ):
        hive, reader = open_hive(group / name, Budget(max_reads=64, max_bytes=64 << 10))
        assert len(hive.values(hive.open(key), values)) == len(values)
        assert (group / name).stat().st_size > 10 << 20
        assert reader.reads < 40
        assert reader.bytes_read < 16 << 10


def test_name_hash_is_the_one_windows_stored(group: Path) -> None:
    """The root of the SYSTEM hive lists its subkeys in an "lh" list: each stored hash is the
    hash of the name its key node holds."""
    data = (group / "system.hive").read_bytes()
    hive, _ = open_hive(group / "system.hive")
    at = cell(hive.root.subkeys_list_offset)
    header = ListHeader.unpack(data, at)
    elements = unpack_array(HashLeafElement, data, header.number_of_elements, at + ListHeader.SIZE)
    names = dict(root_subkeys(data, hive))
    assert len(elements) == len(names) == 17
    for element in elements:
        assert name_hash(names[element.key_node_offset]) == element.name_hash


def root_subkeys(data: bytes, hive: Hive) -> list[tuple[int, str]]:
    """The root's subkeys as its real "lh" list holds them: (key node offset, name)."""
    at = cell(hive.root.subkeys_list_offset)
    header = ListHeader.unpack(data, at)
    assert header.signature == b"lh"
    found = []
    for element in unpack_array(HashLeafElement, data, header.number_of_elements, at + ListHeader.SIZE):
        node = KeyNode.unpack(data, cell(element.key_node_offset))
        start = cell(element.key_node_offset) + KeyNode.SIZE
        found.append((element.key_node_offset, data[start : start + node.key_name_length].decode("latin-1")))
    return found


def relisted(data: bytearray, hive: Hive, kind: bytes) -> None:
    """The root's real "lh" list rewritten in place as an "lf" (each element's hint the name's
    first 4 characters), an "li", or an "li" inside an "ri" (the ri written as a cell of its own
    in the list cell's unused second half)."""
    keys = root_subkeys(bytes(data), hive)
    at = cell(hive.root.subkeys_list_offset)
    elements = at + ListHeader.SIZE
    if kind == b"lf":
        put(data, ListHeader(b"lf", len(keys)), at)
        for index, (offset, name) in enumerate(keys):
            hint = name[:4].encode("latin-1").ljust(4, b"\0")
            put(data, FastLeafElement(offset, hint), elements + index * FastLeafElement.SIZE)
        return
    put(data, ListHeader(b"li", len(keys)), at)
    for index, (offset, _) in enumerate(keys):
        put(data, Offset(offset), elements + index * Offset.SIZE)
    if kind == b"ri":
        inner = elements + len(keys) * Offset.SIZE  # free: the lh elements took twice as much
        ri_size = CellHeader.SIZE + ListHeader.SIZE + Offset.SIZE
        put(data, CellHeader((1 << 32) - 16), inner)
        put(data, ListHeader(b"ri", 1), inner + CellHeader.SIZE)
        put(data, Offset(hive.root.subkeys_list_offset), inner + CellHeader.SIZE + ListHeader.SIZE)
        assert ri_size <= 16 and inner + 16 <= at + len(keys) * HashLeafElement.SIZE + ListHeader.SIZE
        rewrite(data, KeyNode, cell(hive.root.offset), subkeys_list_offset=inner - BASE_BLOCK_SIZE)


@pytest.mark.parametrize("kind", [b"lf", b"li", b"ri"])
def test_every_kind_of_subkeys_list(group: Path, kind: bytes) -> None:
    """Windows 10 writes "lh" lists; "lf" (Windows XP), "li" and "ri" (large keys) are derived
    from the real one, and every key is still found, and no other."""
    real = (group / "system.hive").read_bytes()
    keys = root_subkeys(real, open_hive(group / "system.hive")[0])
    assert len(keys) == 17
    hive = Hive(derived(group, "system.hive", lambda d, h: relisted(d, h, kind)), "relisted")
    for offset, name in keys:
        found = hive.open(name.upper())
        assert found is not None and (found.offset, found.name) == (offset, name)
    assert hive.open("NoSuchKey") is None
    assert hive.open("Sel") is None


# --- hostile hives, derived from the real ones -------------------------------------------------


def derived(group: Path, name: str, change) -> Reader:
    data = bytearray((group / name).read_bytes())
    hive, _ = open_hive(group / name)
    change(data, hive)
    return Reader(BytesSource(bytes(data), f"hostile-{name}"), Budget(max_reads=512, max_bytes=4 << 20))


def cell(offset: int) -> int:
    """Where a cell's data starts in the file."""
    return BASE_BLOCK_SIZE + offset + CellHeader.SIZE


def value_cell(data: bytearray, hive: Hive, key: str, index: int) -> int:
    node = hive.open(key)
    return Offset.unpack(data, cell(node.values_list_offset) + index * Offset.SIZE).offset


def self_indexing_root(data: bytearray, hive: Hive) -> None:
    """The root's subkeys list turned into an index root whose first list is itself."""
    at = cell(hive.root.subkeys_list_offset)
    rewrite(data, ListHeader, at, signature=b"ri")
    data[at + ListHeader.SIZE : at + ListHeader.SIZE + Offset.SIZE] = pack(
        Offset(hive.root.subkeys_list_offset)
    )


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("system.hive", lambda d, h: rewrite(d, RegfBaseBlock, signature=b"regg"), "base block signature"),
        ("system.hive", lambda d, h: rewrite(d, RegfBaseBlock, minor_version=9), "version is '1.9'"),
        ("system.hive", lambda d, h: rewrite(d, RegfBaseBlock, file_type=1), "file type"),
        (
            "system.hive",
            lambda d, h: rewrite(d, RegfBaseBlock, root_cell_offset=0xFFFFFFF0),
            "key node offset",
        ),
        (
            "system.hive",
            lambda d, h: rewrite(d, CellHeader, BASE_BLOCK_SIZE + h.root.offset, size=0x100),
            "size of the key node cell",
        ),
        (
            "system.hive",
            lambda d, h: rewrite(d, KeyNode, cell(h.root.offset), subkeys_list_offset=h.root.offset),
            "subkeys list signature",
        ),
        ("system.hive", self_indexing_root, "a list in an index root"),
        (
            "software.hive",
            lambda d, h: rewrite(
                d, KeyValue, cell(value_cell(d, h, CURRENT_VERSION, 0)), data_size=0x7FFFFFF0
            ),
            "value data size",
        ),
        (
            "software.hive",
            lambda d, h: rewrite(
                d, KeyNode, cell(h.open(CURRENT_VERSION).offset), number_of_key_values=0xFFFFFFFF
            ),
            "value list",
        ),
    ],
)
def test_hostile_hives_are_bad_fields(group: Path, name: str, change, message: str) -> None:
    reader = derived(group, name, change)
    with pytest.raises(BadField, match=message) as raised:
        hive = Hive(reader, "hostile")
        key = hive.open(CURRENT_VERSION if name == "software.hive" else "Select")
        hive.values(key, ["CurrentMajorVersionNumber", "ProductName", "CurrentBuild", "EditionID", "Current"])
    assert raised.value.rule.code == "guest.unreadable"


def test_a_lying_segment_count_is_clamped(group: Path) -> None:
    """ProductPolicy's big data record claiming 65535 segments: the value still reads whole."""
    hive, _ = open_hive(group / "system.hive")
    key = hive.open("ControlSet001\\Control\\ProductOptions")
    real = hive.value(key, "ProductPolicy").data

    def lie(data: bytearray, hive: Hive) -> None:
        for index in range(key.number_of_values):
            vk = KeyValue.unpack(
                data, cell(value_cell(data, hive, "ControlSet001\\Control\\ProductOptions", index))
            )
            if vk.data_size == len(real):
                rewrite(data, BigData, cell(vk.data_offset), number_of_segments=0xFFFF)
                return
        raise AssertionError("ProductPolicy not found")

    reader = derived(group, "system.hive", lie)
    hive = Hive(reader, "hostile")
    assert hive.value(hive.open("ControlSet001\\Control\\ProductOptions"), "ProductPolicy").data == real


@pytest.mark.parametrize("size", [0, 100, BASE_BLOCK_SIZE, BASE_BLOCK_SIZE + 100])
def test_a_cut_hive_is_an_image_error(group: Path, size: int) -> None:
    data = (group / "system.hive").read_bytes()[:size]
    with pytest.raises(ImageError):
        hive = Hive(Reader(BytesSource(data, "cut")), "cut")
        hive.open("Select")
