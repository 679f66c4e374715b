"""One module per image format; `PROBED` lists those detection tries, in priority order.

The order only matters for a polyglot (two formats claim the file): the first one listed is
parsed, and the report says the file is a polyglot, which rejects it anyway. `raw` is not probed:
it is what a file is when no format claims it and libmagic agrees it can be a disk.

This is the registry: adding a format is its module (see `introspect.formats.base`) and its line
in `PROBED`. Everything else is derived from it: the names `inspect(expect=...)` accepts, the
Report's `details` union (`introspect.report`), and what a declared format is satisfied by.
"""

from __future__ import annotations

from typing import Any

from introspect.formats import (
    bochs,
    cloop,
    dmg,
    iso,
    luks,
    parallels,
    qcow,
    qcow2,
    qed,
    raw,
    vdi,
    vhd,
    vhdx,
    vmdk,
)
from introspect.formats.base import Format

PROBED: tuple[Format[Any], ...] = (
    qcow2.FORMAT,
    qcow.FORMAT,
    qed.FORMAT,
    vmdk.FORMAT,
    vhdx.FORMAT,
    vhd.FORMAT,
    vdi.FORMAT,
    parallels.FORMAT,
    luks.FORMAT,
    bochs.FORMAT,
    cloop.FORMAT,
    dmg.FORMAT,
    iso.FORMAT,
)
RAW: Format[Any] = raw.FORMAT
ALL: tuple[Format[Any], ...] = (*PROBED, RAW)
BY_NAME: dict[str, Format[Any]] = {f.name: f for f in ALL}

#: Declared disk_format -> the detected formats that satisfy it, when more than itself does (the
#: formats that name it in `Format.satisfies`): {"raw": {"raw", "iso"}}.
SATISFIES: dict[str, frozenset[str]] = {
    word: frozenset({word, *(f.name for f in ALL if word in f.satisfies)})
    for word in sorted({word for f in ALL for word in f.satisfies})
}

#: Names people and tools use for the same formats: qemu's -f names, Glance's words.
ALIASES: dict[str, str] = {"vpc": "vhd", "parallels": "ploop", "qcow2": "qcow2"}


def canonical_name(name: str) -> str:
    """The `format` word for a name a user, Glance or qemu-img gave ("vpc" -> "vhd")."""
    lowered = name.strip().lower()
    return ALIASES.get(lowered, lowered)


def satisfies(declared: str, found: str) -> bool:
    """Does content detected as `found` satisfy an image declared as `declared`? The same format
    does (whatever name either is given in: "vpc" is "vhd"), and so does a format that declares the
    word in `Format.satisfies` (an ISO satisfies a declared `raw`)."""
    declared, found = canonical_name(declared), canonical_name(found)
    return declared == found or found in SATISFIES.get(declared, ())
