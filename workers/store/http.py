"""Images read in place over HTTP(S), with Range requests (RFC 9110 §14): only the bytes the
inspection asks for cross the network, never the whole image."""

from __future__ import annotations

import re

import httpx

from introspect.sources import ByteSource
from workers.errors import NoData, StoreUnavailable

CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")
#: Status codes that may pass on their own: worth a retry rather than a verdict.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpSource(ByteSource):
    """`size` from HEAD (or a one-byte range), `pread` as `Range: bytes=a-b`."""

    def __init__(self, url: str, *, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self.name = url
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=True)
        try:
            self._size = self._measure()
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int:
        return self._size

    def _request(self, method: str, headers: dict[str, str] | None = None) -> httpx.Response:
        try:
            response = self._client.request(method, self.name, headers=headers)
        except httpx.TransportError as error:
            raise StoreUnavailable(f"cannot read {self.name}: {error}") from error
        if response.status_code in TRANSIENT_STATUS:
            raise StoreUnavailable(f"{self.name} answered {response.status_code}; will retry")
        if response.status_code >= 400 and response.status_code != 416:
            raise NoData(
                f"{self.name} answered {response.status_code} {response.reason_phrase}: "
                "check the location, or import the image again"
            )
        return response

    def _measure(self) -> int:
        head = self._request("HEAD")
        length = head.headers.get("content-length")
        if head.status_code == 200 and length is not None and length.isdigit():
            return int(length)
        probe = self._request("GET", {"Range": "bytes=0-0"})
        match = CONTENT_RANGE.fullmatch(probe.headers.get("content-range", ""))
        if probe.status_code != 206 or match is None:
            raise NoData(
                f"{self.name} does not tell its size nor serve byte ranges: serve it with Range support"
            )
        return int(match.group(1))

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        response = self._request("GET", {"Range": f"bytes={offset}-{offset + length - 1}"})
        if response.status_code != 206:
            raise NoData(
                f"{self.name} ignored a byte range request ({response.status_code}): "
                "serve it with Range support, so that images are not downloaded whole"
            )
        return response.content[:length]

    def close(self) -> None:
        if self._own_client:
            self._client.close()
