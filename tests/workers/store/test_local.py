"""The local directory store and the locations read in place."""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from pathlib import Path

import pytest

import introspect
from tests.workers.httpserver import serve
from workers.errors import NoData, StoreUnavailable, UnknownScheme
from workers.store import HttpSource, LocalStore, check_location, open_location, size_of
from workers.store.local import CHUNK


def test_an_upload_is_hashed_and_measured_in_the_same_pass(tmp_path: Path, images: dict[str, Path]):
    store = LocalStore(tmp_path / "store")
    image_id = uuid.uuid4()
    source = images["stream.vmdk"]
    seen: list[int] = []
    with source.open("rb") as stream:
        stored = store.add(image_id, stream, progress=seen.append)
    data = source.read_bytes()
    assert stored.size == len(data) == sum(seen)
    assert stored.checksum == hashlib.sha256(data).hexdigest()
    assert stored.location == (tmp_path / "store" / str(image_id)).as_uri()
    assert store.path_of(stored.location).read_bytes() == data
    assert [p.name for p in (tmp_path / "store").iterdir()] == [str(image_id)]


def test_zero_runs_stay_sparse(tmp_path: Path):
    data = b"head" + bytes(8 * CHUNK) + b"tail"
    stored = LocalStore(tmp_path).add(uuid.uuid4(), io.BytesIO(data))
    path = LocalStore(tmp_path).path_of(stored.location)
    assert path.read_bytes() == data
    assert path.stat().st_blocks * 512 < CHUNK * 2


class Failing(io.RawIOBase):
    """A stream that breaks after a few chunks, as a dropped upload does."""

    def __init__(self) -> None:
        self.chunks = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.chunks += 1
        if self.chunks > 3:
            raise ConnectionResetError("the client went away")
        return b"x" * size


def test_a_broken_upload_leaves_nothing_behind(tmp_path: Path):
    store = LocalStore(tmp_path)
    with pytest.raises(ConnectionResetError):
        store.add(uuid.uuid4(), Failing())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_only_the_stores_own_files_are_deleted(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    stored = store.add(uuid.uuid4(), io.BytesIO(b"data"))
    outside = tmp_path / "elsewhere.img"
    outside.write_bytes(b"keep")
    store.delete(outside.as_uri())
    store.delete("http://example.invalid/x.img")
    assert outside.exists()
    store.delete(stored.location)
    assert not store.path_of(stored.location).exists()


KNOWN = "locations must be file://, http://, https://"


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("ftp://host/x.img", f"unknown store scheme 'ftp' in 'ftp://host/x.img': {KNOWN}"),
        ("rbd://pool/image", f"unknown store scheme 'rbd' in 'rbd://pool/image': {KNOWN}"),
        ("/plain/path.img", f"unknown store scheme '(none)' in '/plain/path.img': {KNOWN}"),
        ("file://server/x.img", "'file://server/x.img' names host 'server': file:// locations must be local"),
        ("http:///x.img", "'http:///x.img' has no host"),
    ],
)
def test_unknown_locations_are_refused_up_front(location: str, message: str):
    with pytest.raises(UnknownScheme, match=f"^{re.escape(message)}$"):
        check_location(location)


def test_a_missing_file_location(tmp_path: Path):
    location = (tmp_path / "gone.img").as_uri()
    message = f"^the image data at {re.escape(location)} cannot be read .*: import it again$"
    with pytest.raises(NoData, match=message):
        open_location(location)


def test_http_locations_are_read_with_ranges_only(images: dict[str, Path]):
    path = images["huge.qcow2"]
    with serve(path.parent) as served:
        url = served.url(path.name)
        assert size_of(url) == path.stat().st_size
        with open_location(url) as source:
            assert isinstance(source, HttpSource)
            report = introspect.inspect(source)
        local = introspect.inspect(path)
        assert report.model_dump(exclude={"source"}) == local.model_dump(exclude={"source"})
        assert served.bytes_sent == report.bytes_read + report.guest.bytes_read
        assert all(r is not None for m, _, r in served.requests if m == "GET")


def test_http_errors(images: dict[str, Path]):
    path = images["small.qcow2"]
    with serve(path.parent) as served:
        with pytest.raises(NoData, match=r"^http://.*/nope answered 404 Not Found: check the location"):
            open_location(served.url("nope"))
        served.ranges = False
        with (
            open_location(served.url(path.name)) as source,
            pytest.raises(NoData, match=r"ignored a byte range request \(200\): serve it with Range support"),
        ):
            source.pread(0, 512)
        base = served.base
    with pytest.raises(StoreUnavailable, match=f"^cannot read {re.escape(base)}/x: "):
        open_location(f"{base}/x")
