"""A LUKS volume's guest is its payload, encrypted: the opener says so (guest.encrypted), reads
nothing of the payload, and never needs a key."""

from __future__ import annotations

import re

import pytest

import introspect
from introspect.safety import GUEST_ENCRYPTED
from tests.conftest import fixture_group
from tests.formats.views2_disk import group, open_view
from tests.tools import qemu_info, recorded


def test_qemu_img_s_luks_volume_has_no_view_and_says_its_cipher():
    path = group() / "disk.luks"
    data = qemu_info(path)["format-specific"]["data"]
    with pytest.raises(introspect.ImageError) as raised:
        open_view(path)
    assert raised.value.rule is GUEST_ENCRYPTED
    assert f"LUKS1 volume encrypted with {data['cipher-alg'][:3]}-{data['cipher-mode']}" in str(raised.value)


def test_cryptsetup_s_luks2_volume_has_no_view():
    path = fixture_group("luks") / "cs-luks2.img"
    cipher = re.search(r"cipher:\s*(\S+)", recorded(path, "luksDump.txt")).group(1)
    with pytest.raises(introspect.ImageError, match=f"LUKS2 volume encrypted with {cipher}") as raised:
        open_view(path)
    assert raised.value.rule is GUEST_ENCRYPTED
