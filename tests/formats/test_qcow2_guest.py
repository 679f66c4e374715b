"""The qcow2 guest view, against the disk qemu-img converted into each image (fixtures/make/views1.sh)
and hostile images derived from them."""

from __future__ import annotations

import zlib

import pytest
import zstandard

import introspect
from introspect.decode import KIB, MIB
from introspect.formats import qcow2
from introspect.formats.blockmap import TABLE_PAGE as TABLE_SLICE
from introspect.formats.qcow2 import (
    OFFSET_MASK,
    QCOW_OFLAG_COMPRESSED,
    TABLE_ENTRY,
    ExtendedL2Entry,
    QCowHeader,
)
from introspect.safety import GUEST_ENCRYPTED, GUEST_NO_VIEW
from tests.formats.views1_disk import (
    GUEST_BUDGET,
    SECTOR,
    ZEROS_AT,
    derived,
    disk,
    group,
    guest_bytes,
    opened,
    partition_start,
    probes,
    qemu_io_writes,
    random_runs,
)
from tests.tools import qemu_info

#: Every qcow2 image of the group whose guest can be read: each holds the whole disk (an overlay
#: its own writes only).
IMAGES = [
    "v2", "v3", "cluster-512", "zlib", "zstd", "extended-l2", "zero", "extended-l2-zero", "overlay",
]  # fmt: skip


def image(name):
    return group() / f"{name}.qcow2"


@pytest.mark.parametrize("name", IMAGES)
def test_the_view_reads_what_qemu_img_wrote(name):
    path = image(name)
    with opened(path) as (view, reader):
        assert view.size == qemu_info(path)["virtual-size"]
        for probe in probes():
            assert view.read(probe.offset, probe.length) == guest_bytes(path, probe.offset, probe.length), (
                probe
            )
        # 1.2 MiB of probes: a quarter of the guest pass's reads even with 512-byte clusters,
        # whose L2 tables map 32 KiB each.
        assert reader.reads <= GUEST_BUDGET.max_reads // 4
        assert reader.bytes_read <= 2 * MIB


def test_the_fixtures_have_what_the_views_must_handle():
    """qemu-img info says each image has the feature its name claims."""
    data = {name: qemu_info(image(name))["format-specific"]["data"] for name in IMAGES}
    assert data["v2"]["compat"] == "0.10"
    assert data["zstd"]["compression-type"] == "zstd"
    assert data["extended-l2"]["extended-l2"] is True
    assert qemu_info(image("cluster-512"))["cluster-size"] == 512


def test_random_bin_is_the_file_put_into_the_filesystem():
    with opened(image("v3")) as (view, _):
        content = b"".join(view.read(offset, length) for offset, length in random_runs())
    assert content == (group() / "random.bin").read_bytes()


def test_an_overlay_reads_zeros_where_its_backing_file_would_and_says_so():
    path = image("overlay")
    with opened(path) as (view, _):
        assert view.incomplete == f"the backing file {qemu_info(path)['backing-filename']!r}"
        random_at = random_runs()[0][0]
        assert view.read(random_at, 4 * KIB) == bytes(4 * KIB)  # random.bin is the backing file's
        assert view.read(MIB, 64 * KIB) == b"\xab" * 64 * KIB
    with opened(image("v3")) as (view, _):
        assert view.incomplete is None


def test_a_cluster_costs_one_read_and_a_table_slice_at_most():
    start, (random_at, random_length) = partition_start(), random_runs()[0]
    with opened(image("v3")) as (view, reader):
        view.read(start, 4 * KIB)  # the L1 slice, an L2 slice, the data
        assert reader.reads <= 3
        assert reader.bytes_read <= 4 * KIB + 2 * TABLE_SLICE
        reads, read = reader.reads, reader.bytes_read
        assert view.read(random_at, 4 * KIB) == disk()[random_at : random_at + 4 * KIB]
        assert (reader.reads - reads, reader.bytes_read - read) == (1, 4 * KIB)
        reads, read = reader.reads, reader.bytes_read
        view.read(ZEROS_AT, 64 * KIB)  # unallocated: at most its L2 slice, no data
        assert reader.reads - reads <= 1
        assert reader.bytes_read - read <= TABLE_SLICE
        reads, read = reader.reads, reader.bytes_read
        view.read(random_at, random_length)  # contiguous in the file: one read
        assert (reader.reads - reads, reader.bytes_read - read) == (1, random_length)


@pytest.mark.parametrize("name", ["zero", "extended-l2-zero"])
def test_zero_clusters_read_as_zeros_without_reading_their_host_cluster(name):
    """qemu-io zeroed parts of random.bin: the entries keep (or drop) their host cluster, whose
    data is never read."""
    path = image(name)
    with opened(path) as (view, reader):
        view.read(0, SECTOR)  # the L1 and L2 slices the zeroed ranges are in
        for offset, length, byte in qemu_io_writes(path):
            assert byte == b"\0"
            assert disk()[offset : offset + length] != bytes(length)  # the source held data there
            reads = reader.reads
            assert view.read(offset, length) == bytes(length)
            assert reader.reads == reads


def test_reading_past_the_disk_is_truncation():
    with opened(image("v3")) as (view, _):
        with pytest.raises(introspect.TruncatedImage, match="the guest data needs bytes"):
            view.read(view.size - SECTOR, 2 * SECTOR)


@pytest.mark.parametrize("name", ["luks", "aes"])
def test_an_encrypted_guest_has_no_view(name):
    path = image(name)
    details = introspect.inspect(path).details
    assert qemu_info(path)["encrypted"] is True
    with pytest.raises(introspect.ImageError) as raised:
        qcow2.FORMAT.guest(None, details)
    assert raised.value.rule is GUEST_ENCRYPTED
    assert f"encrypted ({name.upper()})" in str(raised.value)


def test_a_guest_in_an_external_data_file_has_no_view():
    path = image("data-file")
    details = introspect.inspect(path).details
    name = qemu_info(path)["format-specific"]["data"]["data-file"]
    with pytest.raises(
        introspect.ImageError, match=f"external data file {name!r}, which is never opened"
    ) as raised:
        qcow2.FORMAT.guest(None, details)
    assert raised.value.rule is GUEST_NO_VIEW


# --- Hostile images derived from the fixtures ------------------------------------------------------


def l1_entry_at(data, guest_offset):
    """Where in the file the L1 entry mapping `guest_offset` is (standard L2 entries)."""
    header = QCowHeader.unpack(data)
    l2_span = (1 << header.cluster_bits) * ((1 << header.cluster_bits) // TABLE_ENTRY.size)
    return header.l1_table_offset + guest_offset // l2_span * TABLE_ENTRY.size


def l2_entry_at(data, guest_offset, entry_size=TABLE_ENTRY.size):
    """Where in the file the L2 entry mapping `guest_offset` is."""
    header = QCowHeader.unpack(data)
    cluster_size = 1 << header.cluster_bits
    (l1_entry,) = TABLE_ENTRY.unpack_from(data, l1_entry_at(data, guest_offset))
    index = guest_offset // cluster_size % (cluster_size // entry_size)
    return (l1_entry & OFFSET_MASK) + index * entry_size


def fixture(name):
    path = image(name)
    return bytearray(path.read_bytes()), introspect.inspect(path).details


def past_the_end(data):
    return (len(data) + (1 << 20)) & ~0xFFFF


@pytest.mark.parametrize(
    ("table", "entry", "error", "message"),
    [
        ("L1", "past the end", introspect.TruncatedImage, "the qcow2 L2 table needs bytes"),
        ("L1", "unaligned", introspect.BadField, r"L1 entry 0 is '0x[0-9a-f]+', expected an L2 table offset"),
        ("L2", "past the end", introspect.TruncatedImage, "the qcow2 data cluster needs bytes"),
        (
            "L2",
            "unaligned",
            introspect.BadField,
            r"L2 entry 0 is '0x[0-9a-f]+', expected a data cluster offset",
        ),
    ],
)
def test_a_table_entry_pointing_past_the_end_or_off_a_cluster_is_refused(table, entry, error, message):
    data, details = fixture("v3")
    at = l1_entry_at(data, 0) if table == "L1" else l2_entry_at(data, 0)
    (value,) = TABLE_ENTRY.unpack_from(data, at)
    value = past_the_end(data) if entry == "past the end" else value + SECTOR
    TABLE_ENTRY.pack_into(data, at, value)
    view, _ = derived(data, details)
    with pytest.raises(error, match=message) as raised:
        view.read(0, SECTOR)
    if error is introspect.BadField:
        assert raised.value.rule is qcow2.BAD_MAPPING
        assert "qemu-img check" in raised.value.message


def compressed_entry(data, guest_offset):
    at = l2_entry_at(data, guest_offset)
    (entry,) = TABLE_ENTRY.unpack_from(data, at)
    assert entry & QCOW_OFLAG_COMPRESSED  # qemu-img compressed this cluster
    return at, entry


def test_a_compressed_descriptor_with_the_largest_size_reads_two_clusters_at_most():
    """The sector count takes all its bits: the read is bounded by the field (two clusters), and
    decompression stops at a cluster, as qemu's does."""
    data, details = fixture("zlib")
    at, entry = compressed_entry(data, 0)
    x = 62 - (details.cluster_bits - 8)
    TABLE_ENTRY.pack_into(data, at, entry | ((1 << (62 - x)) - 1) << x)
    view, reader = derived(data, details)
    assert view.read(0, SECTOR) == disk()[:SECTOR]
    assert reader.bytes_read <= 2 * details.cluster_size + 2 * TABLE_SLICE


@pytest.mark.parametrize(
    ("where", "error", "message"),
    [
        ("past the end", introspect.TruncatedImage, "the qcow2 compressed cluster needs bytes"),
        (
            "at the header",
            introspect.BadField,
            "zlib compressed cluster at offset 0 is 'not a valid stream', expected a stream of one 65536-byte cluster",
        ),
    ],
)
def test_a_compressed_descriptor_pointing_elsewhere_is_refused(where, error, message):
    data, details = fixture("zlib")
    at, entry = compressed_entry(data, 0)
    x = 62 - (details.cluster_bits - 8)
    offset = len(data) + SECTOR if where == "past the end" else 0
    TABLE_ENTRY.pack_into(data, at, entry & ~((1 << x) - 1) | offset)
    view, _ = derived(data, details)
    with pytest.raises(error, match=message):
        view.read(0, SECTOR)


@pytest.mark.parametrize("name", ["zlib", "zstd"])
def test_a_compressed_cluster_that_inflates_past_a_cluster_yields_one_cluster(name):
    """A decompression bomb: 4 MiB of 0xab in a few KiB, where one cluster's data belongs."""
    data, details = fixture(name)
    bomb = b"\xab" * (4 * MIB)
    if name == "zlib":
        packer = zlib.compressobj(9, zlib.DEFLATED, qcow2.ZLIB_WINDOW_BITS)
        stream = packer.compress(bomb) + packer.flush()
    else:
        params = zstandard.ZstdCompressionParameters(window_log=17)
        stream = zstandard.ZstdCompressor(compression_params=params).compress(bomb)
    offset = len(data) + SECTOR
    data += bytes(SECTOR) + stream
    at, _ = compressed_entry(data, 0)
    x = 62 - (details.cluster_bits - 8)
    sectors = -(-len(stream) // SECTOR) - 1
    TABLE_ENTRY.pack_into(data, at, QCOW_OFLAG_COMPRESSED | sectors << x | offset)
    view, reader = derived(data, details)
    assert view.read(0, details.cluster_size) == b"\xab" * details.cluster_size
    assert reader.bytes_read <= len(stream) + SECTOR + 2 * TABLE_SLICE


def test_a_subcluster_both_allocated_and_zero_is_refused():
    data, details = fixture("extended-l2")
    random_at = random_runs()[0][0]
    at = l2_entry_at(data, random_at, ExtendedL2Entry.SIZE)
    entry = ExtendedL2Entry.unpack(data, at)
    assert entry.bitmap & 1  # allocated subclusters, none zero
    data[at : at + ExtendedL2Entry.SIZE] = ExtendedL2Entry.STRUCT.pack(entry.l2_entry, entry.bitmap | 1 << 32)
    view, _ = derived(data, details)
    with pytest.raises(introspect.BadField, match="subcluster bitmap of L2 entry") as raised:
        view.read(random_at, SECTOR)
    assert raised.value.rule is qcow2.BAD_MAPPING
