"""introspect.structure: a declaration derives the layout its spec documents, unpacks real headers
into what the tools that made them report, and packs them back byte for byte."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import pytest

from introspect.formats import luks, partitions, qcow2, vdi, vmdk
from introspect.sources import FileSource, Reader
from introspect.structure import (
    BigEndianStructure,
    LittleEndianStructure,
    chars,
    pack,
    pad,
    u8,
    u32,
    unpack_array,
)
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded


def test_offsets_and_sizes_are_the_ones_the_specs_give():
    # qcow2.txt "Header": size is bytes 24-31, snapshots_offset 64-71; a version 2 header is 72 bytes.
    assert qcow2.QCowHeader.offset_of("size") == 24
    assert qcow2.QCowHeader.offset_of("snapshots_offset") == 64
    assert qcow2.QCowHeader.SIZE == 72
    # UEFI 2.10 Table 5-5: HeaderCRC32 at 16, 92 bytes in all; Table 5-1: PartitionRecord at 446.
    assert partitions.GptHeaderFields.offset_of("header_crc32") == 16
    assert partitions.GptHeaderFields.SIZE == 92
    assert partitions.PARTITION_RECORDS_OFFSET == 446
    assert partitions.LegacyMbr.SIZE == 512
    # LUKS2 spec: a 512-byte binary header ending with its 64-byte csum; LUKS1 phdr is 592 bytes.
    assert luks.Luks2BinaryHeader.SIZE == 512
    assert luks.Luks2BinaryHeader.offset_of("csum") == 448
    assert luks.Luks1Header.SIZE == 592
    # VMDK: the sparse extent header and a marker are one sector each, reserved bytes included.
    assert vmdk.SparseExtentHeader.SIZE == vmdk.Marker.SIZE == 512


def test_a_real_header_unpacks_to_what_qemu_img_reports_and_packs_back():
    image = fixture_group("qcow") / "v3-7m.qcow2"
    data = image.read_bytes()
    header = qcow2.QCowHeader.unpack(data)
    info = qemu_info(image)
    assert header.size == info["virtual-size"]
    assert 1 << header.cluster_bits == info["cluster-size"]
    assert pack(header) == data[: qcow2.QCowHeader.SIZE]
    v3 = qcow2.QCowHeaderV3.unpack(data)  # at its declared OFFSET, 72
    assert pack(v3) == data[qcow2.QCowHeaderV3.OFFSET : qcow2.QCowHeaderV3.OFFSET + qcow2.QCowHeaderV3.SIZE]


def test_unpack_at_an_offset_and_read_through_the_metered_reader():
    image = fixture_group("vdi") / "dynamic-1g3m.vdi"
    data = image.read_bytes()
    with FileSource(image) as source:
        reader = Reader(source)
        header = vdi.VdiHeader1.read(reader, "VDI header")
        assert (reader.reads, reader.bytes_read) == (1, vdi.VdiHeader1.SIZE)
    assert header == vdi.VdiHeader1.unpack(data) == vdi.VdiHeader1.unpack(data[vdi.VdiHeader1.OFFSET :], 0)
    assert header.disk_size == qemu_info(image)["virtual-size"]


def test_objects_are_frozen_slots_dataclasses():
    header = qcow2.QCowHeader.unpack((fixture_group("qcow") / "v3-7m.qcow2").read_bytes())
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.size = 0  # type: ignore[misc]
    assert not hasattr(header, "__dict__")
    assert dataclasses.replace(header, size=1).size == 1
    assert [f.name for f in dataclasses.fields(header)] == list(qcow2.QCowHeader.FIELDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        del header.size  # type: ignore[misc]


class Pair(LittleEndianStructure):
    first: int = u32()
    reserved: None = pad(2)
    second: bytes = chars(2)


def test_the_shared_methods_answer_as_a_frozen_dataclass_would():
    """Structures share one __init__, __repr__, __eq__ and __hash__ (not code compiled for each
    class): their answers are those `@dataclass(frozen=True)` generates."""
    made = (
        Pair(7, b"ab"),
        Pair(7, second=b"ab"),
        Pair(first=7, second=b"ab"),
        Pair.unpack(b"\x07\0\0\0\0\0ab"),
    )
    for pair in made:
        assert repr(pair) == "Pair(first=7, second=b'ab')"
        assert pair == made[0]
        assert hash(pair) == hash((7, b"ab"))  # a frozen dataclass hashes the tuple of its fields
    assert made[0] != Pair(8, b"ab")
    assert made[0].__eq__((7, b"ab")) is NotImplemented
    for args, kwargs, message in (
        ((7,), {}, "missing required arguments: 'second'"),
        ((7, b"ab", 1), {}, "takes 2 positional arguments but 3 were given"),
        ((7,), {"first": 8, "second": b"ab"}, "got multiple values for argument 'first'"),
        ((7, b"ab"), {"third": 1}, "got an unexpected keyword argument 'third'"),
    ):
        with pytest.raises(TypeError, match=message):
            Pair(*args, **kwargs)


def test_reserved_bytes_keep_their_place_but_are_not_attributes():
    data = (fixture_group("vmdk") / "base.vmdk").read_bytes()
    header = vmdk.SparseExtentHeader.unpack(data)
    assert "padding" not in vmdk.SparseExtentHeader.FIELDS
    assert not hasattr(header, "padding")
    assert vmdk.SparseExtentHeader.offset_of("compress_algorithm") == 77  # 2 bytes, then pad[433]
    assert pack(header)[79:] == bytes(433)


def test_arrays_are_unpacked_up_to_their_count_and_no_further_than_the_data():
    image = fixture_group("partitions") / "mbr.img"
    mbr = partitions.LegacyMbr.unpack(image.read_bytes())
    records = mbr.partition_records()
    assert len(records) == partitions.PARTITION_RECORDS
    sfdisk = json.loads(recorded(image, "sfdisk.json"))["partitiontable"]["partitions"]
    primary = [p for p in sfdisk if int(p["node"].removeprefix("mbr.img")) <= partitions.PARTITION_RECORDS]
    assert [r.starting_lba for r in records if r.used] == [p["start"] for p in primary]
    assert unpack_array(partitions.PartitionRecord, mbr.partition_record, 1000) == records
    assert unpack_array(partitions.PartitionRecord, mbr.partition_record, 2) == records[:2]
    assert unpack_array(partitions.PartitionRecord, mbr.partition_record, 1, offset=60) == []


def test_declaration_mistakes_are_refused_when_the_class_is_made():
    with pytest.raises(TypeError, match="has no struct code"):

        class NoCode(LittleEndianStructure):
            number: int

    with pytest.raises(TypeError, match="without a type annotation: number"):

        class NoAnnotation(LittleEndianStructure):
            number = u32()

    class Base(BigEndianStructure):
        OFFSET: ClassVar[int] = 4

        magic: bytes = chars(4)
        reserved: None = pad(4)
        number: int = u32()

    assert (Base.SIZE, Base.offset_of("number"), Base.FIELDS) == (12, 8, ("magic", "number"))
    with pytest.raises(TypeError, match="cannot extend another"):

        class Extended(Base):
            more: int = u32()

    assert Base.offset_of("reserved") == 4  # reserved bytes have a place, not an attribute
    with pytest.raises(KeyError, match="Base has no field 'size'"):
        Base.offset_of("size")


class _OneField(BigEndianStructure):
    value: int = u32()


class _TwoFields(BigEndianStructure):
    value: int = u32()
    flag: int = u8()


@pytest.mark.parametrize(
    ("kind", "data", "other"),
    [(_OneField, b"\0\0\0\1", b"\0\0\0\2"), (_TwoFields, b"\0\0\0\1\2", b"\0\0\0\1\3")],
)
def test_structures_are_equal_by_their_values_whatever_their_number_of_fields(kind, data, other):
    """Equality and hash come from the tuple of the fields' values, one field or several."""
    first, again, different = kind.unpack(data), kind.unpack(data), kind.unpack(other)
    assert first._values() == tuple(getattr(first, name) for name in kind.FIELDS)
    assert first == again and hash(first) == hash(again)
    assert first != different
    assert (first == data) is False  # another type: not equal, not an error
