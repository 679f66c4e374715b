"""Locations: the URIs images are read from. `file://` and `http(s)://` are read in place (never
copied); any other scheme is refused up front, as Glance refuses locations no store serves."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from introspect.errors import UsageError
from introspect.sources import ByteSource, FileSource
from workers.errors import NoData, UnknownScheme
from workers.store.http import HttpSource

SCHEMES = ("file", "http", "https")


def check_location(location: str) -> str:
    """The location, if a store can read it; an unknown scheme is a clear error."""
    parts = urlsplit(location)
    if parts.scheme not in SCHEMES:
        scheme = parts.scheme or "(none)"
        known = ", ".join(f"{name}://" for name in SCHEMES)
        raise UnknownScheme(f"unknown store scheme {scheme!r} in {location!r}: locations must be {known}")
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise UnknownScheme(f"{location!r} names host {parts.netloc!r}: file:// locations must be local")
    if parts.scheme != "file" and not parts.netloc:
        raise UnknownScheme(f"{location!r} has no host")
    return location


def _path(location: str) -> Path:
    return Path(unquote(urlsplit(location).path))


def open_location(location: str, *, timeout: float = 30.0) -> ByteSource:
    """A ByteSource over the image at `location` (the caller closes it)."""
    check_location(location)
    if urlsplit(location).scheme == "file":
        try:
            return FileSource(_path(location))
        except UsageError as error:
            raise NoData(f"the image data at {location} cannot be read ({error}): import it again") from None
    return HttpSource(location, timeout=timeout)


def size_of(location: str) -> int:
    """Bytes at `location`, asked without reading them."""
    with open_location(location, timeout=10.0) as source:
        return source.size
