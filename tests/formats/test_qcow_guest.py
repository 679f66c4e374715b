"""The qcow (version 1) guest view, against the disk qemu-img converted into each image
(fixtures/make/views1.sh) and hostile images derived from them."""

from __future__ import annotations

import pytest

import introspect
from introspect.formats import qcow
from introspect.formats.qcow import QCOW_OFLAG_COMPRESSED, QCowHeader
from introspect.formats.qcow2 import TABLE_ENTRY
from introspect.safety import GUEST_ENCRYPTED
from tests.formats.views1_disk import SECTOR, derived, disk, group, guest_bytes, opened, probes
from tests.tools import qemu_info

IMAGES = ["qcow", "qcow-zlib", "qcow-overlay"]


def image(name):
    return group() / f"{name}.qcow"


@pytest.mark.parametrize("name", IMAGES)
def test_the_view_reads_what_qemu_img_wrote(name):
    path = image(name)
    with opened(path) as (view, reader):
        assert view.size == qemu_info(path)["virtual-size"]
        for probe in probes():
            assert view.read(probe.offset, probe.length) == guest_bytes(path, probe.offset, probe.length), (
                probe
            )
        assert reader.reads <= 128


def test_an_overlay_names_its_backing_file():
    path = image("qcow-overlay")
    with opened(path) as (view, _):
        assert view.incomplete == f"the backing file {qemu_info(path)['backing-filename']!r}"


def test_an_encrypted_guest_has_no_view():
    path = image("qcow-aes")
    assert qemu_info(path)["encrypted"] is True
    with pytest.raises(introspect.ImageError, match=r"encrypted \(AES\)") as raised:
        qcow.FORMAT.guest(None, introspect.inspect(path).details)
    assert raised.value.rule is GUEST_ENCRYPTED


def l2_entry_at(data, guest_offset):
    """Where in the file the L2 entry mapping `guest_offset` is."""
    header = QCowHeader.unpack(data)
    cluster = guest_offset >> header.cluster_bits
    (l2_offset,) = TABLE_ENTRY.unpack_from(data, header.l1_table_offset + (cluster >> header.l2_bits) * 8)
    return l2_offset + (cluster & ((1 << header.l2_bits) - 1)) * TABLE_ENTRY.size


def fixture(name):
    path = image(name)
    return bytearray(path.read_bytes()), introspect.inspect(path).details


@pytest.mark.parametrize(
    ("table", "change", "error", "message"),
    [
        ("L1", "past the end", introspect.TruncatedImage, "the qcow L2 table needs bytes"),
        ("L2", "past the end", introspect.TruncatedImage, "the qcow data cluster needs bytes"),
        ("L2", "off a sector", introspect.BadField, r"L2 entry 0 is '0x[0-9a-f]+', expected a data cluster"),
    ],
)
def test_a_table_entry_pointing_past_the_end_or_off_a_sector_is_refused(table, change, error, message):
    data, details = fixture("qcow")
    at = details.l1_table_offset if table == "L1" else l2_entry_at(data, 0)
    (value,) = TABLE_ENTRY.unpack_from(data, at)
    TABLE_ENTRY.pack_into(data, at, len(data) + (1 << 20) if change == "past the end" else value + 1)
    view, _ = derived(data, details)
    with pytest.raises(error, match=message) as raised:
        view.read(0, SECTOR)
    if error is introspect.BadField:
        assert raised.value.rule is qcow.BAD_MAPPING


def test_a_compressed_cluster_with_the_largest_size_reads_one_cluster_at_most():
    """The size field takes all its bits (a cluster less one byte): decompression still stops at
    the cluster, as qemu's does."""
    data, details = fixture("qcow-zlib")
    at = l2_entry_at(data, 0)
    (entry,) = TABLE_ENTRY.unpack_from(data, at)
    assert entry & QCOW_OFLAG_COMPRESSED
    offset_bits = 63 - details.cluster_bits
    TABLE_ENTRY.pack_into(data, at, entry | (details.cluster_size - 1) << offset_bits)
    view, reader = derived(data, details)
    assert view.read(0, SECTOR) == disk()[:SECTOR]
    assert reader.bytes_read <= 3 * details.cluster_size


@pytest.mark.parametrize(
    ("where", "error", "message"),
    [
        ("past the end", introspect.TruncatedImage, "the qcow compressed cluster needs bytes"),
        ("at the header", introspect.BadField, "compressed cluster at offset 0 is 'not a valid stream'"),
    ],
)
def test_a_compressed_cluster_elsewhere_is_refused(where, error, message):
    data, details = fixture("qcow-zlib")
    at = l2_entry_at(data, 0)
    (entry,) = TABLE_ENTRY.unpack_from(data, at)
    offset_bits = 63 - details.cluster_bits
    offset = len(data) + SECTOR if where == "past the end" else 0
    TABLE_ENTRY.pack_into(data, at, entry & ~((1 << offset_bits) - 1) | offset)
    view, _ = derived(data, details)
    with pytest.raises(error, match=message):
        view.read(0, SECTOR)
