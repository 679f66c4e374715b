"""An EFI System Partition's loaders: \\EFI\\BOOT\\BOOT{X64,AA64,IA32...}.EFI and vendors' loaders,
each with its PE architecture, and shim."""

from __future__ import annotations

from introspect.guest.fs.base import Filesystem
from introspect.guest.model import Loader
from introspect.model import Finding


def inspect_esp(fs: Filesystem, device: str, notes: list[Finding]) -> list[Loader]:
    """The EFI loaders on `fs` (none when it holds no /EFI directory)."""
    raise NotImplementedError
