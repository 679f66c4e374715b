"""introspect.decode: the shared decoders, checked against what the tools recorded for real images."""

from __future__ import annotations

import json
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect import decode
from introspect.formats import partitions, vhd
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded


def test_guid_is_the_mixed_endian_form_gpt_uses():
    """sgdisk's disk GUID and the first partition's GUIDs, as sfdisk reports them."""
    image = fixture_group("partitions") / "gpt-129m.img"
    data = image.read_bytes()
    table = json.loads(recorded(image, "sfdisk.json"))["partitiontable"]
    header = partitions.GptHeaderFields.unpack(data, partitions.PRIMARY_HEADER_LBA * 512)
    entry = partitions.GptPartitionEntry.unpack(data, header.partition_entry_lba * 512)
    assert decode.guid(header.disk_guid) == table["id"].lower()
    assert decode.guid(entry.partition_type_guid) == table["partitions"][0]["type"].lower()
    assert decode.guid(entry.unique_partition_guid) == table["partitions"][0]["uuid"].lower()
    assert decode.utf16_c_string(entry.partition_name, "little") == table["partitions"][0]["name"]


def test_uuid_be_keeps_network_order_where_guid_swaps_the_first_three_fields():
    raw = bytes(range(16))
    assert decode.uuid_be(raw) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert decode.guid(raw) == "03020100-0504-0706-0809-0a0b0c0d0e0f"


@given(st.binary(min_size=16, max_size=16))
def test_guid_and_uuid_be_are_what_the_uuid_module_makes(raw):
    assert decode.guid(raw) == str(uuid.UUID(bytes_le=raw))
    assert decode.uuid_be(raw) == str(uuid.UUID(bytes=raw))


@given(st.binary(max_size=32).filter(lambda raw: len(raw) != 16))
def test_guid_and_uuid_be_refuse_any_other_length_as_the_uuid_module_does(raw):
    for decoder in (decode.guid, decode.uuid_be):
        with pytest.raises(ValueError, match="16 bytes"):
            decoder(raw)


def test_padded_text_reads_a_real_vhd_footer():
    footer = vhd.HardDiskFooter.unpack(next(fixture_group("vhd").glob("dynamic-*.vhd")).read_bytes())
    assert decode.padded_text(footer.cookie) == "conectix"


def test_c_string_stops_at_the_first_nul_and_never_fails():
    assert decode.c_string(b"raw\0junk\0") == "raw"
    assert decode.c_string(b"no terminator") == "no terminator"
    assert decode.c_string(b"\xff\xfe\0", "ascii") == "\ufffd\ufffd"


def test_padded_text_strips_only_its_padding():
    assert decode.padded_text(b"CDROM   \0\0", "ascii", " \0") == "CDROM"
    assert decode.padded_text(b"tap\0") == "tap"
    assert decode.padded_text(" ISO ".encode("utf-16-be"), "utf-16-be", " \0") == " ISO"


def test_sizes():
    assert (decode.KIB, decode.MIB, decode.GIB) == (1 << 10, 1 << 20, 1 << 30)
    assert qemu_info(fixture_group("qcow") / "v3-7m.qcow2")["virtual-size"] == 7 * decode.MIB


@given(st.binary(max_size=3 * decode.KIB), st.integers(0, 20 * decode.KIB))
def test_end_of_data_is_where_rstrip_ends_the_data(data, zeros):
    padded = data + bytes(zeros)
    assert decode.end_of_data(padded) == len(padded.rstrip(b"\0"))


@given(
    st.binary(max_size=2 * decode.KIB),
    st.integers(0, 20 * decode.KIB),
    st.binary(max_size=64),
    st.integers(0, 10 * decode.KIB),
    st.integers(0, 30 * decode.KIB),
)
def test_end_of_data_of_a_slice_is_that_of_the_slice_copied(data, zeros, after, first, stop):
    whole = bytes(first) + data + bytes(zeros) + after
    assert decode.end_of_data(whole, first, stop) == len(whole[first:stop].rstrip(b"\0"))


@given(st.integers(0, 80 * decode.KIB), st.integers(0, 80 * decode.KIB), st.integers(1, 255))
def test_all_zeros_is_whether_every_byte_is_zero(length, at, byte):
    zeros = bytes(length)
    assert decode.all_zeros(zeros)
    if length:
        marked = bytearray(zeros)
        marked[at % length] = byte
        assert not decode.all_zeros(bytes(marked))


@given(st.lists(st.integers(0, 2**64 - 1), max_size=600), st.integers(0, 300))
def test_nonzero_u64le_are_the_nonzero_entries_in_order(numbers, zeros):
    data = struct.pack(f"<{len(numbers)}Q", *numbers) + bytes(8 * zeros)
    assert decode.nonzero_u64le(data) == [n for n in numbers if n]


@given(st.lists(st.integers(0, 2**64 - 1), max_size=600), st.integers(0, 300))
def test_largest_u64le_is_the_largest_number_struct_reads(numbers, zeros):
    data = struct.pack(f"<{len(numbers)}Q", *numbers) + bytes(8 * zeros)
    assert decode.largest_u64le(data) == max(numbers, default=0)


def test_end_of_data_at_window_edges():
    window = 4 * decode.KIB
    for end in (0, 1, window - 1, window, window + 1, 3 * window, 16 * window):
        data = b"\x01" * end + bytes(16 * window + 7 - end)
        assert decode.end_of_data(data) == end
    assert decode.end_of_data(b"\x80" + bytes(window)) == 1  # the top bit of the last byte counts
    assert decode.end_of_data(b"") == 0


@given(st.lists(st.integers(0, 2**32 - 1), max_size=3000))
def test_largest_u32le_is_the_largest_number_struct_reads(numbers):
    data = struct.pack(f"<{len(numbers)}I", *numbers)
    assert decode.largest_u32le(data) == max(numbers, default=0)


@given(
    st.lists(st.integers(0, 2**32 - 1), max_size=600),
    st.integers(0, 2000),
    st.integers(0, 8),
    st.integers(0, 8),
)
def test_largest_u32le_of_a_window_with_trailing_zero_entries(numbers, zeros, before, after):
    """A grain table inside a larger read: zero entries after its numbers, other bytes around it."""
    table = struct.pack(f"<{len(numbers) + zeros}I", *numbers, *[0] * zeros)
    data = b"\xff" * 4 * before + table + b"\xff" * 4 * after
    start = 4 * before
    assert decode.largest_u32le(data, start, start + len(table)) == max(numbers, default=0)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300))
def test_u32s_are_the_numbers_struct_reads_in_either_byte_order(numbers):
    assert list(decode.u32s(struct.pack(f">{len(numbers)}I", *numbers), "big")) == numbers
    assert list(decode.u32s(struct.pack(f"<{len(numbers)}I", *numbers), "little")) == numbers
