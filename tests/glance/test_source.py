"""The HTTP range source against a real Glance: the bytes are the file's, each read is one
single-range request (a suffix range for the end), and the on-disk cache makes a second pass free."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.glance.fixtures import Admin, Peer
from tests.glance.peer import Api
from workers.glance.client import GlanceClient, HeaderIdentity
from workers.glance.source import GlanceSource, RangeCache, cache_key

pytestmark = pytest.mark.glance

KIB = 1024
BLOCK = 64 * KIB


class Recording(requests.adapters.HTTPAdapter):
    """Remembers the Range header of every request it sends (the client's session's transport)."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[str | None] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if (request.path_url or "").split("?")[0].endswith("/file"):
            self.ranges.append(request.headers.get("Range"))
        return super().send(request, *args, **kwargs)


@pytest.fixture
def recording(api: Api) -> tuple[GlanceClient, Recording]:
    transport = Recording()
    client = GlanceClient([api.url], HeaderIdentity(["admin"], "p", "u"))
    client.session.session.mount(api.url, transport)
    return client, transport


@pytest.fixture(scope="module")
def uploaded(images: dict[str, Path], peer: Peer) -> tuple[str, Path, dict[str, object]]:
    admin = peer.admin
    path = images["disk.qcow2"]
    image_id = admin.uploaded(path)
    return image_id, path, admin.get(image_id)


def test_reads_are_the_files_bytes(
    uploaded: tuple[str, Path, dict[str, object]], recording: tuple[GlanceClient, Recording]
) -> None:
    image_id, path, image = uploaded
    client, transport = recording
    data = path.read_bytes()
    size = len(data)
    source = GlanceSource(
        client, image_id, size=size, checksum=str(image["checksum"]), block=BLOCK, max_block=BLOCK
    )
    picks = random.Random(7)
    reads = [(0, 72), (size - 512, 512), (size - 10, 100), (BLOCK - 1, 2), (size // 2, 3 * BLOCK + 5)]
    reads += [(picks.randrange(size), picks.randrange(1, 2 * BLOCK)) for _ in range(20)]
    for offset, length in reads:
        assert source.pread(offset, length) == data[offset : offset + length], (offset, length)
    assert source.pread(size, 10) == b""
    assert source.size == size == image["size"]
    # one range per request, never a multi-range; the end read as a suffix
    assert all(header and "," not in header for header in transport.ranges)
    assert any(header and header.startswith("bytes=-") for header in transport.ranges)
    assert source.stats.requests == len(transport.ranges) == client.stats.range_requests
    assert source.stats.bytes == client.stats.data_bytes < size


def test_nearby_reads_share_one_request(
    uploaded: tuple[str, Path, dict[str, object]], recording: tuple[GlanceClient, Recording]
) -> None:
    image_id, path, _ = uploaded
    client, transport = recording
    source = GlanceSource(
        client, image_id, size=path.stat().st_size, checksum=None, block=BLOCK, max_block=BLOCK
    )
    for offset in range(0, BLOCK, 4 * KIB):
        source.pread(offset, 512)
    assert transport.ranges == [f"bytes=0-{BLOCK - 1}"]
    assert source.stats.cache_hits == BLOCK // (4 * KIB) - 1


def test_the_block_doubles_with_each_request_up_to_its_cap(
    uploaded: tuple[str, Path, dict[str, object]], recording: tuple[GlanceClient, Recording]
) -> None:
    """The header pass's first reads cost small ranges; the guest pass's reads, spread over the
    disk, take wider ones, so there are fewer of them."""
    image_id, path, _ = uploaded
    client, transport = recording
    size = path.stat().st_size
    source = GlanceSource(client, image_id, size=size, checksum=None, block=BLOCK, max_block=4 * BLOCK)
    for request in range(4):
        source.pread(request * 8 * BLOCK, 1)
    widths = [BLOCK, 2 * BLOCK, 4 * BLOCK, 4 * BLOCK]
    assert transport.ranges == [
        f"bytes={n * 8 * BLOCK}-{n * 8 * BLOCK + width - 1}" for n, width in enumerate(widths)
    ]
    assert size > 32 * BLOCK


def test_cache_makes_the_second_pass_free_and_keeps_its_cap(
    uploaded: tuple[str, Path, dict[str, object]], recording: tuple[GlanceClient, Recording], tmp_path: Path
) -> None:
    image_id, path, image = uploaded
    client, transport = recording
    data = path.read_bytes()
    cache = RangeCache(tmp_path / "ranges", 4 * BLOCK)
    checksum = str(image["checksum"])
    first = GlanceSource(
        client, image_id, size=len(data), checksum=checksum, cache=cache, block=BLOCK, max_block=BLOCK
    )
    first.pread(0, 100)
    first.pread(len(data) - 512, 512)
    fetched = len(transport.ranges)
    second = GlanceSource(
        client, image_id, size=len(data), checksum=checksum, cache=cache, block=BLOCK, max_block=BLOCK
    )
    assert second.pread(0, 100) == data[:100]
    assert second.pread(len(data) - 512, 512) == data[-512:]
    assert len(transport.ranges) == fetched and second.stats.requests == 0
    # other data under the same id never comes from these ranges
    assert cache_key(image_id, checksum) != cache_key(image_id, "0" * 32)
    other = GlanceSource(
        client, image_id, size=len(data), checksum="0" * 32, cache=cache, block=BLOCK, max_block=BLOCK
    )
    other.pread(0, 100)
    assert other.stats.requests == 1
    # the cap holds: reading far more than 4 blocks evicts the least recently used image
    for offset in range(0, 8 * BLOCK, BLOCK):
        other.pread(offset, 1)
    assert cache.size() <= 4 * BLOCK


def test_range_past_the_end_is_clamped_and_a_deleted_image_raises(
    images: dict[str, Path], admin: Admin, recording: tuple[GlanceClient, Recording]
) -> None:
    from workers.glance.client import ImageGone

    client, _ = recording
    image_id = admin.uploaded(images["disk.vdi"])
    size = images["disk.vdi"].stat().st_size
    source = GlanceSource(client, image_id, size=size, checksum=None, block=BLOCK, max_block=BLOCK)
    assert len(source.pread(size - 5, 100)) == 5
    admin.delete(image_id)
    with pytest.raises(ImageGone, match="Glance answered 404: No image found"):
        GlanceSource(client, image_id, size=size, checksum=None, block=BLOCK, max_block=BLOCK).pread(0, 10)
