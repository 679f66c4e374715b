"""The Parallels guest view, against the disk qemu-img converted into a "WithouFreSpacExt" image
(fixtures/make/views1.sh), a "WithoutFreeSpace" image derived from it, and hostile images."""

from __future__ import annotations

import struct

import pytest

import introspect
from introspect.formats import parallels
from introspect.formats.parallels import BAT_ENTRY, BAT_OFFSET, HEADER_MAGIC, ParallelsHeader
from tests.formats.views1_disk import SECTOR, derived, disk, group, opened, probes
from tests.tools import qemu_info, rewrite

PATH_NAME = "disk.hds"


def fixture():
    path = group() / PATH_NAME
    return bytearray(path.read_bytes()), introspect.inspect(path).details


def without_free_space(data):
    """The same image as "WithoutFreeSpace" names it: BAT entries in sectors, not clusters."""
    header = rewrite(data, ParallelsHeader, magic=HEADER_MAGIC)
    count = header.bat_entries
    entries = struct.unpack_from(f"<{count}I", data, BAT_OFFSET)
    struct.pack_into(f"<{count}I", data, BAT_OFFSET, *(entry * header.tracks for entry in entries))
    return data


def test_the_view_reads_what_qemu_img_wrote():
    path = group() / PATH_NAME
    with opened(path) as (view, reader):
        assert view.size == qemu_info(path)["virtual-size"]
        assert view.incomplete is None
        for probe in probes():
            assert view.read(probe.offset, probe.length) == disk()[probe.offset : probe.offset + probe.length]
        assert reader.reads <= 16


def test_a_without_free_space_image_counts_its_bat_in_sectors():
    data, _ = fixture()
    view, _ = derived(without_free_space(data))
    assert (
        introspect.inspect(introspect.BytesSource(bytes(data))).details.signature_variant
        == "WithoutFreeSpace"
    )
    for probe in probes():
        assert view.read(probe.offset, probe.length) == disk()[probe.offset : probe.offset + probe.length]


@pytest.mark.parametrize(
    ("entry", "error", "message"),
    [
        ("at the BAT itself", introspect.BadField, r"BAT entry 0 is 1, expected a cluster of the data area"),
        ("off a cluster", introspect.BadField, r"BAT entry 0 is \d+, expected a cluster of the data area"),
        ("past the end", introspect.TruncatedImage, "the Parallels data cluster needs bytes"),
    ],
)
def test_a_bat_entry_outside_the_data_area_is_refused(entry, error, message):
    data, _ = fixture()
    data = without_free_space(data)
    details = introspect.inspect(introspect.BytesSource(bytes(data))).details
    (first,) = BAT_ENTRY.unpack_from(data, BAT_OFFSET)
    tracks = ParallelsHeader.unpack(data).tracks  # sectors in a cluster
    past_the_end = first + tracks * (len(data) // (tracks * SECTOR) + 1)
    value = {"at the BAT itself": 1, "off a cluster": first + 1, "past the end": past_the_end}[entry]
    BAT_ENTRY.pack_into(data, BAT_OFFSET, value)
    view, _ = derived(data, details)
    with pytest.raises(error, match=message) as raised:
        view.read(0, SECTOR)
    if error is introspect.BadField:
        assert raised.value.rule is parallels.BAD_BAT
