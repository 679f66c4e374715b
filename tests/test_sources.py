"""The metered reader: budgets, counts, truncation, the head/tail cache, and each error's message."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

import introspect
from introspect.errors import BudgetExceeded, SourceError, TruncatedImage, UsageError
from introspect.sources import HEAD_SIZE, Budget, BytesSource, FileSource, HttpSource, Reader, SliceSource
from tests.workers.httpserver import serve
from tests.workers.services import wait_until


def make_raw(tmp_path, size: int):
    """A real raw image, made by qemu-img (all zeros), of `size` bytes."""
    path = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), str(size)], check=True)
    return path


def test_file_source_reads_with_pread_and_counts(tmp_path):
    path = make_raw(tmp_path, 1 << 20)
    with FileSource(path) as source:
        reader = Reader(source)
        assert reader.size == 1 << 20
        assert reader.read(4096, 512, "sector") == b"\0" * 512
        assert reader.read(4096, 512, "sector") == b"\0" * 512
        assert (reader.reads, reader.bytes_read) == (2, 1024)


def test_head_and_tail_are_cached(tmp_path):
    path = make_raw(tmp_path, 1 << 20)
    with FileSource(path) as source:
        reader = Reader(source)
        reader.head()
        reader.tail()
        assert reader.reads == 2
        reader.read(100, 200, "inside the head")
        reader.read((1 << 20) - 100, 100, "inside the tail")
        assert reader.reads == 2
        assert reader.bytes_read == HEAD_SIZE + 512


def test_small_file_tail_comes_from_the_head():
    reader = Reader(BytesSource(b"x" * 1000))
    reader.head()
    assert reader.tail() == b"x" * 512
    assert reader.reads == 1


def test_truncated_read_says_what_and_where():
    reader = Reader(BytesSource(b"\1" * 100, "cut.qcow2"))
    with pytest.raises(TruncatedImage) as caught:
        reader.read(72, 40, "qcow2 header")
    assert str(caught.value) == (
        "the qcow2 header needs bytes 72..112 but the file ends at 100: "
        "the image was cut short; upload it again (at offset 72)"
    )
    assert caught.value.rule.code == "image.truncated"


def test_read_upto_is_short_only_at_the_end():
    reader = Reader(BytesSource(b"abcdef"))
    assert reader.read_upto(4, 100, "end") == b"ef"
    assert reader.read_upto(10, 5, "past the end") == b""


@pytest.mark.parametrize(
    ("budget", "reads", "message"),
    [
        (Budget(max_read_size=1024), [(0, 2048)], "(2048 bytes in one read, at most 1024)"),
        (Budget(max_reads=2), [(0, 1), (10, 1), (20, 1)], "(at most 2 reads)"),
        (Budget(max_bytes=3000), [(0, 2000), (4000, 2000)], "(at most 3000 bytes)"),
    ],
)
def test_budget_is_enforced(budget, reads, message):
    reader = Reader(BytesSource(bytes(10_000)), budget)
    with pytest.raises(BudgetExceeded) as caught:
        for offset, length in reads:
            reader.read(offset, length, "grain table")
    assert str(caught.value) == (
        f"reading the grain table would exceed the inspection budget {message}; a well-formed image "
        "never needs this much, so the file is treated as hostile"
    )
    assert caught.value.rule.code == "image.read_budget"


def test_negative_offsets_are_truncation_not_python_slicing():
    reader = Reader(BytesSource(bytes(100)))
    with pytest.raises(TruncatedImage):
        reader.read(-512, 512, "footer")


def test_slice_source_is_a_window(tmp_path):
    parent = BytesSource(bytes(range(256)) * 4)
    window = SliceSource(parent, 256, 100, "member")
    assert window.size == 100
    assert window.pread(0, 4) == bytes([0, 1, 2, 3])
    assert window.pread(98, 10) == bytes([98, 99])


def _made(path, make):
    make(path)
    return path


def _bind_socket(path):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.qcow2", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _made(d / "fifo", os.mkfifo), "is a FIFO (named pipe), not an image file"),
        (lambda d: _made(d / "sock", _bind_socket), "is a socket, not an image"),
        (lambda d: Path("/dev/null"), "is a character device, not an image"),
    ],
)
@pytest.mark.timeout(10)
def test_file_source_usage_errors(tmp_path, make, message):
    """Refused before anything is opened: a FIFO would block the open until a writer came."""
    path = make(tmp_path)
    with pytest.raises(UsageError) as caught:
        FileSource(path)
    assert str(caught.value) == f"{path}: {message}"


def test_an_http_url_is_read_with_ranges_only(tmp_path):
    """A 1 TiB qcow2 served over HTTP: a HEAD and three small ranges (head, tail, and the refcount
    table with the block after it), then the guest pass's one (the first slice of the L1 table,
    which says the disk holds nothing), never the image."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "big.qcow2"), "1T"], check=True)
    with serve(tmp_path) as served:
        report = introspect.inspect(served.url("big.qcow2"))
    assert (report.format, report.virtual_size, report.verdict) == ("qcow2", 1 << 40, "ok")
    assert [method for method, _, _ in served.requests] == ["HEAD", "GET", "GET", "GET", "GET"]
    assert all(r is not None for method, _, r in served.requests if method == "GET")
    assert report.guest.reads == 1
    assert [(v.device, v.filesystem) for v in report.guest.volumes] == [("/dev/sda", None)]
    total = report.bytes_read + report.guest.bytes_read
    assert served.bytes_sent == total < (tmp_path / "big.qcow2").stat().st_size


def test_an_http_server_that_sends_more_than_the_range_is_not_read_on(tmp_path):
    """A server that answers each range with the rest of the file (64 MiB of real data): the
    client keeps what it asked for and hangs up, instead of taking the image into memory."""
    image = tmp_path / "full.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full", str(image), "64M"], check=True
    )
    with serve(tmp_path) as served:
        served.oversend = True
        report = introspect.inspect(served.url(image.name))
        wait_until(lambda: served.aborted >= 1, timeout=10, what="the over-long head body cut off")
    assert report.model_dump(exclude={"source"}) == introspect.inspect(image).model_dump(exclude={"source"})


def test_an_http_server_without_ranges_is_a_usage_error(tmp_path):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "d.qcow2"), "1G"], check=True)
    with serve(tmp_path) as served:
        served.ranges = False
        with pytest.raises(UsageError, match="ignored a byte range request \\(200\\)"):
            introspect.inspect(served.url("d.qcow2"))
        with pytest.raises(UsageError, match="answered 404 Not Found"):
            introspect.inspect(served.url("missing.qcow2"))


def test_an_http_server_that_is_down_is_a_source_error():
    with pytest.raises(SourceError, match=re.escape("cannot read http://127.0.0.1:9/disk.qcow2")):
        introspect.inspect("http://127.0.0.1:9/disk.qcow2")


def _small_qcow2(tmp_path, name="d.qcow2"):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / name), "1G"], check=True)


def test_a_redirect_loop_is_one_usage_error(tmp_path):
    with serve(tmp_path) as served:
        served.redirects = {"/a.qcow2": "/b.qcow2", "/b.qcow2": "/a.qcow2"}
        with pytest.raises(UsageError, match=r"a\.qcow2 redirects more than 5 times"):
            introspect.inspect(served.url("a.qcow2"))


def test_a_redirect_within_the_origin_is_followed_and_kept(tmp_path):
    _small_qcow2(tmp_path)
    with serve(tmp_path) as served:
        served.redirects = {"/old.qcow2": "/d.qcow2"}
        report = introspect.inspect(served.url("old.qcow2"))
    assert (report.source, report.format, report.virtual_size) == (served.url("old.qcow2"), "qcow2", 1 << 30)
    # the redirect is asked once; the ranges go straight to where it pointed
    assert served.hits("old.qcow2", "HEAD") == 1 and served.hits("old.qcow2", "GET") == 0


def test_a_redirect_to_another_origin_is_refused_unless_allowed(tmp_path):
    _small_qcow2(tmp_path)
    with serve(tmp_path) as target, serve(tmp_path) as served:
        other = target.base.replace("127.0.0.1", "localhost")
        served.redirects = {"/d.qcow2": f"{other}/d.qcow2"}
        with pytest.raises(UsageError, match=r"redirects to another origin \(http://localhost:\d+\)"):
            introspect.inspect(served.url("d.qcow2"))
        assert target.requests == []
        with HttpSource(served.url("d.qcow2"), cross_origin_redirects=True) as source:
            assert introspect.inspect(source).virtual_size == 1 << 30


def test_a_content_encoding_that_was_not_asked_for_is_refused(tmp_path):
    _small_qcow2(tmp_path)
    with serve(tmp_path) as served:
        served.gzip_bodies = True
        with pytest.raises(UsageError, match="sent its bytes gzip-encoded although identity was asked"):
            introspect.inspect(served.url("d.qcow2"))


def test_a_trickling_server_meets_the_deadline(tmp_path):
    """One byte every 0.2 s: each read is within its timeout, the whole is not within 2 s."""
    _small_qcow2(tmp_path)
    with serve(tmp_path) as served:
        source = HttpSource(served.url("d.qcow2"), timeout=1.0, deadline=2.0)
        served.trickle = 0.2
        started = time.monotonic()
        with source, pytest.raises(SourceError, match=r"did not deliver the bytes asked for within 2 s"):
            introspect.inspect(source)
        assert time.monotonic() - started < 4
