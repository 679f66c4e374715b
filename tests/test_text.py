"""Untrusted text printed as what it is: escapes for what would drive a terminal or reorder a line."""

from __future__ import annotations

import pytest

from introspect.text import literal


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("disk.qcow2", "disk.qcow2"),
        ("évier 日本.vmdk", "évier 日本.vmdk"),
        ("evil\x1b[2Jname", "evil\\x1b[2Jname"),
        ("abc\u202edcba.exe", "abc\\u202edcba.exe"),
        ("line\nbreak\r", "line\\x0abreak\\x0d"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b31m", "c1\\x9b31m"),
        ("back\\x1b", "back\\x1b"),
        ("[bold]x[/]", "[bold]x[/]"),
    ],
)
def test_literal(text, shown):
    assert literal(text) == shown
