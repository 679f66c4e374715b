"""The qed guest view, against the disk qemu-img converted into each image (fixtures/make/views1.sh)
and hostile images derived from them."""

from __future__ import annotations

import pytest

import introspect
from introspect.formats import qed
from introspect.formats.qed import TABLE_ENTRY, QEDHeader
from tests.formats.views1_disk import SECTOR, derived, group, guest_bytes, opened, probes, qemu_io_writes
from tests.tools import qemu_info

IMAGES = ["qed", "qed-zero", "qed-overlay"]


def image(name):
    return group() / f"{name}.qed"


@pytest.mark.parametrize("name", IMAGES)
def test_the_view_reads_what_qemu_img_wrote(name):
    path = image(name)
    with opened(path) as (view, reader):
        assert view.size == qemu_info(path)["virtual-size"]
        for probe in probes():
            assert view.read(probe.offset, probe.length) == guest_bytes(path, probe.offset, probe.length), (
                probe
            )
        assert reader.reads <= 64


def test_zero_clusters_and_zeros_written_over_data_read_as_zeros():
    path = image("qed-zero")
    with opened(path) as (view, _):
        for offset, length, byte in qemu_io_writes(path):
            assert view.read(offset, length) == byte * length


def test_an_overlay_names_its_backing_file():
    path = image("qed-overlay")
    with opened(path) as (view, _):
        assert view.incomplete == f"the backing file {qemu_info(path)['backing-filename']!r}"


def fixture():
    path = image("qed")
    return bytearray(path.read_bytes()), introspect.inspect(path).details


def l2_entry_at(data, details):
    """Where in the file the L2 entry of the guest's first cluster is."""
    (l2_offset,) = TABLE_ENTRY.unpack_from(data, QEDHeader.unpack(data).l1_table_offset)
    return l2_offset


@pytest.mark.parametrize(
    ("table", "change", "error", "message"),
    [
        ("L1", "past the end", introspect.TruncatedImage, "the qed L2 table needs bytes"),
        (
            "L1",
            "off a cluster",
            introspect.BadField,
            r"L1 entry 0 is '0x[0-9a-f]+', expected an offset aligned",
        ),
        ("L2", "past the end", introspect.TruncatedImage, "the qed data cluster needs bytes"),
        (
            "L2",
            "off a cluster",
            introspect.BadField,
            r"L2 entry 0 is '0x[0-9a-f]+', expected an offset aligned",
        ),
        (
            "L2",
            "in the header",
            introspect.BadField,
            r"L2 entry 0 is '0x[0-9a-f]+', expected .* past the header",
        ),
    ],
)
def test_a_table_entry_the_spec_forbids_is_refused(table, change, error, message):
    data, details = fixture()
    at = details.l1_table_offset if table == "L1" else l2_entry_at(data, details)
    (value,) = TABLE_ENTRY.unpack_from(data, at)
    changed = {
        "past the end": (len(data) // details.cluster_size + 16) * details.cluster_size,
        "off a cluster": value + SECTOR,
        "in the header": details.cluster_size * details.header_size - details.cluster_size // 2,
    }[change]
    TABLE_ENTRY.pack_into(data, at, changed)
    view, _ = derived(data, details)
    with pytest.raises(error, match=message) as raised:
        view.read(0, SECTOR)
    if error is introspect.BadField:
        assert raised.value.rule is qed.BAD_MAPPING
