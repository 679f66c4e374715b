"""Image references, read as Nova's image service reads them (nova/image/glance.py).

Nova's `get_remote_image_service` takes an image ref without a `/` as a bare id served by the
default (configured) Glance, and anything else as an href whose last part is the id and whose
endpoint is "everything except the last 3 bits, which are version, 'images', and image_id"
(`_endpoint_from_image_ref`): `http://example.com:9292/v1/images/<id>` and `.../v2/images/<id>`
both name `http://example.com:9292`.

Nova then talks to whatever endpoint the href names. We do not: credentials go only to the
endpoints the operator configured, so an href whose endpoint is not one of them is refused
(`ImageRefError`) rather than followed; its endpoint only chooses among the configured ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

#: The path tail Nova strips off an href: a version, "images", the id.
HREF_TAIL = re.compile(r"^v\d+(\.\d+)?$")
#: Glance image ids are UUIDs; anything else cannot name an image (and must not build a URL path).
IMAGE_ID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
#: Longest ref we read: an URL of a sane length, not a megabyte pasted by mistake.
MAX_REF = 2048


class ImageRefError(ValueError):
    """An image reference we cannot use; the message says why and what to pass instead."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image id, and the endpoint the reference named (None for a bare id)."""

    id: str
    endpoint: str | None = None


def normalize_endpoint(url: str) -> str:
    """`http://Host:9292/v2/` and `http://host:9292` are the same Glance: lowercase scheme and host,
    no trailing slash, no version suffix (Nova strips `/v2` the same way)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImageRefError(f"{url!r} is not an http(s) endpoint: give it as http://host:9292")
    path = re.sub(r"/v\d+(\.\d+)?/?$", "", parts.path).rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def parse_image_ref(ref: str) -> ImageRef:
    """A bare id, or an href `<endpoint>/v1|v2/images/<id>`."""
    ref = ref.strip()
    if not ref or len(ref) > MAX_REF:
        raise ImageRefError(f"image reference of {len(ref)} characters: pass an image id or its href")
    if "/" not in ref:
        return ImageRef(_image_id(ref, ref))
    parts = ref.split("/")
    image_id = parts[-1]
    if len(parts) < 4 or parts[-2] != "images" or not HREF_TAIL.match(parts[-3]):
        raise ImageRefError(
            f"{ref!r} is not an image href: expected http://host:9292/v2/images/<id> (or /v1/) or a bare id"
        )
    return ImageRef(_image_id(image_id, ref), normalize_endpoint("/".join(parts[:-3])))


def _image_id(candidate: str, ref: str) -> str:
    if not IMAGE_ID.match(candidate):
        raise ImageRefError(f"{ref!r} does not end in an image id (a UUID): `glance image-list` shows them")
    return candidate
