"""Read what the real tools recorded beside each fixture (never what introspect said), and
derive hostile variants of real images one declared structure at a time."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any, TypeVar

from introspect.structure import Structure, pack

S = TypeVar("S", bound=Structure)


def qemu_info(image: Path) -> dict[str, Any]:
    """`qemu-img info -f FMT --output=json IMAGE`, as recorded by fixtures/lib.sh at build time."""
    return json.loads(image.with_name(image.name + ".qemu-img.json").read_text())


def qemu_img_check(image: Path, fmt: str) -> dict[str, Any]:
    """`qemu-img check -f FMT --output=json IMAGE`, run now (on a copy a test cut, say); its JSON is
    printed whatever it finds, with a nonzero exit status when it finds corruptions."""
    checked = subprocess.run(
        ["qemu-img", "check", "-f", fmt, "--output=json", str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    result: dict[str, Any] = json.loads(checked.stdout)
    return result


def recorded(image: Path, suffix: str) -> str:
    """Any other tool output recorded as IMAGE.SUFFIX (sfdisk.json, isoinfo.txt, descriptor.txt...)."""
    return image.with_name(f"{image.name}.{suffix}").read_text()


def rewrite(data: bytearray, kind: type[S], offset: int | None = None, /, **changes: Any) -> S:
    """Change fields of the `kind` structure at `offset` (its declared OFFSET by default) in a
    real image's bytes, in place: unpack, `dataclasses.replace`, pack. Returns the new structure."""
    at = getattr(kind, "OFFSET", 0) if offset is None else offset
    new = dataclasses.replace(kind.unpack(data, at), **changes)
    put(data, new, at)
    return new


def put(data: bytearray, value: Structure, offset: int | None = None) -> None:
    """Write the structure `value` into an image's bytes at `offset` (its declared OFFSET by default)."""
    at = getattr(value, "OFFSET", 0) if offset is None else offset
    data[at : at + value.SIZE] = pack(value)
