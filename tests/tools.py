"""Read what the real tools recorded beside each fixture (never what introspect said)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def qemu_info(image: Path) -> dict[str, Any]:
    """`qemu-img info -f FMT --output=json IMAGE`, as recorded by fixtures/lib.sh at build time."""
    return json.loads(image.with_name(image.name + ".qemu-img.json").read_text())


def recorded(image: Path, suffix: str) -> str:
    """Any other tool output recorded as IMAGE.SUFFIX (sfdisk.json, isoinfo.txt, descriptor.txt...)."""
    return image.with_name(f"{image.name}.{suffix}").read_text()
