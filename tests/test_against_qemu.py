"""Every tool-made fixture that qemu-img could open: introspect names the same format (in Glance's
words) and the same virtual size. This is the promise `introspect inspect --json DIR` makes."""

from __future__ import annotations

import json

import pytest

import introspect
from introspect.formats import BY_NAME
from tests.conftest import FIXTURES

HOSTILE = "hostile"
RECORDS = sorted(p for p in FIXTURES.glob("*/*.qemu-img.json") if p.parent.name != HOSTILE)


def test_there_are_many_records():
    assert len(RECORDS) >= 140, "run `make fixtures`"


@pytest.mark.parametrize(
    "record", RECORDS, ids=lambda p: f"{p.parent.name}/{p.name.removesuffix('.qemu-img.json')}"
)
def test_same_format_and_virtual_size_as_qemu_img(record):
    info = json.loads(record.read_text())
    image = record.with_name(record.name.removesuffix(".qemu-img.json"))
    report = introspect.inspect(image)
    assert report.format is not None
    assert BY_NAME[report.format].load().qemu_name == info["format"], report.findings
    if report.container_format == "bare":
        assert report.virtual_size == info["virtual-size"], report.findings
