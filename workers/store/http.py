"""Images read in place over HTTP(S): the library's range reader (introspect.sources.HttpSource),
with its errors in the pipeline's terms. A fault that may pass (a transport error, a 5xx or 429)
is `StoreUnavailable`, retried; a refusal (a 4xx, a server without Range support) is `NoData`,
recorded as the image's verdict."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx

from introspect import sources
from introspect.errors import SourceError, UsageError
from workers.errors import NoData, StoreUnavailable

T = TypeVar("T")


def _translated(call: Callable[[], T]) -> T:
    try:
        return call()
    except SourceError as error:
        raise StoreUnavailable(f"{error}; will retry") from error
    except UsageError as error:
        raise NoData(f"{error}: check the location, or import the image again") from error


class HttpSource(sources.HttpSource):
    """`size` from HEAD (or a one-byte range), `pread` as `Range: bytes=a-b`."""

    def __init__(self, url: str, *, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        _translated(lambda: super(HttpSource, self).__init__(url, timeout=timeout, client=client))

    def pread(self, offset: int, length: int) -> bytes:
        return _translated(lambda: super(HttpSource, self).pread(offset, length))
