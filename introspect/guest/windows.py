"""A Windows system volume's facts: the SOFTWARE hive (version, build, product, edition), the
architecture from ntoskrnl.exe's PE header, and the virtio drivers installed."""

from __future__ import annotations

from introspect.guest.fs.base import Filesystem
from introspect.guest.model import OperatingSystem
from introspect.model import Finding


def inspect_windows(fs: Filesystem, device: str, notes: list[Finding]) -> OperatingSystem | None:
    """The Windows system on `fs`, or None when `fs` holds none."""
    raise NotImplementedError
