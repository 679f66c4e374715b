"""One module per image format, and the registry that says which to probe, in what order.

The order only matters for a polyglot (two formats claim the file): the first one listed is
parsed, and the report says the file is a polyglot, which rejects it anyway. `raw` is not probed:
it is what a file is when no format claims it and libmagic agrees it can be a disk.

Adding a format is its module (see `introspect.formats.base`) and its entry in `REGISTERED`, with
the signatures its probe needs: a format's module (its structures, its pydantic models, its rules)
is imported only when a file carries one of its signatures, so inspecting a qcow2 does not build
the other thirteen formats' models. Everything else is derived from the registry: the names
`inspect(expect=...)` accepts, what a declared format is satisfied by, and the Report's `details`
(validated by the model of the format they name, `introspect.report`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from introspect.formats.base import Format, Head


class Registered(NamedTuple):
    """A format: its `format` word and module, and `signatures`, the (offset, bytes) its probe
    needs one of before it can claim a file (its module's own constants, which
    tests/test_registry.py checks): an offset from the start of the head, or, negative, from the
    end of the tail, as the probe slices it. Empty for raw, which is never probed.

    `satisfies`: declared `disk_format` words this content also satisfies (an ISO is a `raw` image
    to everyone who reads it byte by byte). `sized_by_file`: the virtual size is the file's size
    (raw, ISO), so it is unknown when only a head of the image can be read (a compressed stream)."""

    name: str
    module: str
    signatures: tuple[tuple[int, bytes], ...]
    satisfies: frozenset[str] = frozenset()
    sized_by_file: bool = False

    def load(self) -> Format[Any]:
        """The format itself, its module imported on first use (then a dict lookup)."""
        fmt: Format[Any] = imported(f"{__name__}.{self.module}").FORMAT
        return fmt

    def carried_by(self, head: Head) -> bool:
        """Could the probe claim this head? (No signature present: it cannot, unloaded.)"""
        for offset, magic in self.signatures:
            if offset >= 0:
                if head.data.startswith(magic, offset):
                    return True
            elif head.tail.startswith(magic, max(0, len(head.tail) + offset)):  # as tail[offset:] starts
                return True
        return False


#: Modules whose import has completed, by name. Not sys.modules: another thread's import puts a
#: module there before its body has run (import_module waits for it; a lookup there would not).
_IMPORTED: dict[str, ModuleType] = {}


def imported(name: str) -> ModuleType:
    """The module `name`, imported once (a registry's `load` runs for every file inspected)."""
    module = _IMPORTED.get(name)
    if module is None:
        module = _IMPORTED[name] = importlib.import_module(name)
    return module


_QCOW_MAGIC = (0, b"QFI\xfb")  # qcow and qcow2 share it; the version tells them apart
_TEXT_FIRST_BYTES = (b"#", b"v", b" ", b"\t", b"\r", b"\n")  # how a VMDK descriptor can begin

#: The probed formats, in probe order, then raw.
REGISTERED: tuple[Registered, ...] = (
    Registered("qcow2", "qcow2", (_QCOW_MAGIC,)),
    Registered("qcow", "qcow", (_QCOW_MAGIC,)),
    Registered("qed", "qed", ((0, b"QED\0"),)),
    Registered("vmdk", "vmdk", ((0, b"KDMV"), (0, b"COWD"), *((0, first) for first in _TEXT_FIRST_BYTES))),
    Registered("vhdx", "vhdx", ((0, b"vhdxfile"),)),
    # A VHD's footer ends the file (512 bytes; 511 from Virtual PC before 2004); a dynamic VHD
    # keeps a copy at the start.
    Registered("vhd", "vhd", ((0, b"conectix"), (-512, b"conectix"), (-511, b"conectix"))),
    Registered("vdi", "vdi", ((0x40, (0xBEDA107F).to_bytes(4, "little")),)),
    Registered("ploop", "parallels", ((0, b"WithoutFreeSpace"), (0, b"WithouFreSpacExt"))),
    Registered("luks", "luks", ((0, b"LUKS\xba\xbe"),)),
    Registered("bochs", "bochs", ((0, b"Bochs Virtual HD Image\0"),)),
    Registered("cloop", "cloop", ((0, b"#!/bin/sh\n#V"),)),
    Registered("dmg", "dmg", ((-512, b"koly"),)),
    # The first volume descriptor, at sector 16 of 2048 bytes: ISO 9660's, or UDF's BEA01.
    Registered(
        "iso",
        "iso",
        ((0x8001, b"CD001"), (0x8001, b"BEA01")),
        satisfies=frozenset({"raw"}),
        sized_by_file=True,
    ),
    Registered("raw", "raw", (), sized_by_file=True),
)
PROBED: tuple[Registered, ...] = REGISTERED[:-1]
RAW: Registered = REGISTERED[-1]
BY_NAME: dict[str, Registered] = {entry.name: entry for entry in REGISTERED}

#: Declared disk_format -> the detected formats that satisfy it, when more than itself does (the
#: formats that name it in `Registered.satisfies`): {"raw": {"raw", "iso"}}.
SATISFIES: dict[str, frozenset[str]] = {
    word: frozenset({word, *(entry.name for entry in REGISTERED if word in entry.satisfies)})
    for word in sorted({word for entry in REGISTERED for word in entry.satisfies})
}

#: Names people and tools use for the same formats: qemu's -f names, Glance's words.
ALIASES: dict[str, str] = {"vpc": "vhd", "parallels": "ploop", "qcow2": "qcow2"}


#: The signatures at offset 0, by their first byte, and the others: what `claiming` tests, so that
#: a head is compared with the few signatures its first byte allows rather than with every format's.
_AT_START: dict[int, list[tuple[bytes, Registered]]] = {}
_ELSEWHERE: list[tuple[int, bytes, Registered]] = []
for _entry in PROBED:
    for _offset, _magic in _entry.signatures:
        if _offset == 0:
            _AT_START.setdefault(_magic[0], []).append((_magic, _entry))
        else:
            _ELSEWHERE.append((_offset, _magic, _entry))


def carried(head: Head) -> set[str]:
    """The names of the probed formats whose signature the head carries: `Registered.carried_by`
    of each, found by the head's first byte and the few signatures elsewhere."""
    data, tail = head.data, head.tail
    names = (
        {entry.name for magic, entry in _AT_START.get(data[0], ()) if data.startswith(magic)}
        if data
        else set()
    )
    for offset, magic, entry in _ELSEWHERE:
        if entry.name not in names and (
            data.startswith(magic, offset)
            if offset > 0
            else tail.startswith(magic, max(0, len(tail) + offset))
        ):
            names.add(entry.name)
    return names


def claiming(head: Head) -> list[Format[Any]]:
    """The probed formats whose probe claims this head, in probe order (a module is imported only
    when the head carries one of its signatures)."""
    names = carried(head)
    if not names:
        return []
    return [fmt for entry in PROBED if entry.name in names and (fmt := entry.load()).probe(head)]


def every_format() -> tuple[Format[Any], ...]:
    """Every registered format, loaded (for what needs them all: the Report's JSON schema, tests)."""
    return tuple(entry.load() for entry in REGISTERED)


def canonical_name(name: str) -> str:
    """The `format` word for a name a user, Glance or qemu-img gave ("vpc" -> "vhd")."""
    lowered = name.strip().lower()
    return ALIASES.get(lowered, lowered)


def satisfies(declared: str, found: str) -> bool:
    """Does content detected as `found` satisfy an image declared as `declared`? The same format
    does (whatever name either is given in: "vpc" is "vhd"), and so does a format that declares the
    word in `Registered.satisfies` (an ISO satisfies a declared `raw`)."""
    declared, found = canonical_name(declared), canonical_name(found)
    return declared == found or found in SATISFIES.get(declared, ())
