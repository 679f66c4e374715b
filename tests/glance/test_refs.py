"""Image references, read as Nova's image service reads them (nova/image/glance.py)."""

from __future__ import annotations

import pytest

from workers.glance.refs import ImageRef, ImageRefError, normalize_endpoint, parse_image_ref

ID = "b8b2c6f7-7345-4e2f-afa2-eedaba9cbbe3"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (ID, ImageRef(ID)),
        (f"  {ID}\n", ImageRef(ID)),
        (f"http://example.com:9292/v2/images/{ID}", ImageRef(ID, "http://example.com:9292")),
        # Nova's own docstring example: the v1 form names the same endpoint
        (f"http://example.com:9292/v1/images/{ID}", ImageRef(ID, "http://example.com:9292")),
        (f"https://Cloud.Example.com/image/v2/images/{ID}", ImageRef(ID, "https://cloud.example.com/image")),
        (f"http://example.com:9292/v2.1/images/{ID}", ImageRef(ID, "http://example.com:9292")),
    ],
)
def test_refs(ref: str, expected: ImageRef) -> None:
    assert parse_image_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "pass an image id or its href"),
        ("x" * 3000, "pass an image id or its href"),
        ("not-an-id", "does not end in an image id"),
        (f"http://example.com:9292/v2/images/{ID}/file", "is not an image href"),
        (f"http://example.com:9292/v2/snapshots/{ID}", "is not an image href"),
        (f"http://example.com:9292/images/{ID}", "is not an image href"),
        (f"file:///v2/images/{ID}", r"is not an http\(s\) endpoint"),
        ("http://example.com:9292/v2/images/../../etc", "is not an image href"),
        (f"http://example.com:9292/v2/images/{ID[:-1]}%2F", "does not end in an image id"),
    ],
)
def test_bad_refs(ref: str, message: str) -> None:
    with pytest.raises(ImageRefError, match=message):
        parse_image_ref(ref)


def test_endpoint_normalized_as_nova_strips_the_version() -> None:
    assert normalize_endpoint("http://Glance:9292/v2/") == "http://glance:9292"
    assert normalize_endpoint("http://glance:9292") == "http://glance:9292"
