"""The VDI guest view, against the disk qemu-img converted into a dynamic and a static image
(fixtures/make/views1.sh) and hostile images derived from them."""

from __future__ import annotations

import pytest

import introspect
from introspect.formats import vdi
from introspect.formats.vdi import BLOCK_POINTER, VDI_IMAGE_BLOCK_ZERO
from tests.formats.views1_disk import SECTOR, derived, disk, group, guest_bytes, opened, probes, random_runs
from tests.tools import qemu_info

IMAGES = ["dynamic", "static"]


def image(name):
    return group() / f"{name}.vdi"


@pytest.mark.parametrize("name", IMAGES)
def test_the_view_reads_what_qemu_img_wrote(name):
    path = image(name)
    with opened(path) as (view, reader):
        assert view.size == qemu_info(path)["virtual-size"]
        assert view.incomplete is None
        for probe in probes():
            assert view.read(probe.offset, probe.length) == guest_bytes(path, probe.offset, probe.length), (
                probe
            )
        assert reader.reads <= 16


@pytest.mark.parametrize("name", IMAGES)
def test_a_block_costs_one_read_once_the_map_slice_is_read(name):
    random_at, random_length = random_runs()[0]
    with opened(image(name)) as (view, reader):
        view.read(0, SECTOR)
        reads, read = reader.reads, reader.bytes_read
        assert view.read(random_at, random_length) == disk()[random_at : random_at + random_length]
        blocks = len({offset // view.unit for offset in (random_at, random_at + random_length - 1)})
        assert reader.reads - reads <= blocks
        assert reader.bytes_read - read == random_length


def fixture():
    path = image("dynamic")
    return bytearray(path.read_bytes()), introspect.inspect(path).details


def test_a_zero_block_reads_as_zeros():
    """VDI_IMAGE_BLOCK_ZERO, which VirtualBox writes for a discarded block (qemu never does)."""
    data, details = fixture()
    BLOCK_POINTER.pack_into(data, details.offset_blocks, VDI_IMAGE_BLOCK_ZERO)
    view, reader = derived(data, details)
    assert disk()[:SECTOR] != bytes(SECTOR)
    assert view.read(0, SECTOR) == bytes(SECTOR)
    assert reader.bytes_read <= 4096


def test_a_pointer_past_the_allocated_blocks_is_refused():
    data, details = fixture()
    BLOCK_POINTER.pack_into(data, details.offset_blocks, details.blocks_allocated)
    view, _ = derived(data, details)
    with pytest.raises(
        introspect.BadField, match=r"block map entry 0 is \d+, expected below cBlocksAllocated"
    ) as raised:
        view.read(0, SECTOR)
    assert raised.value.rule is vdi.BAD_BLOCK_MAP
