"""A Linux root filesystem's facts: os-release (and older release files), the architecture from
the ELF header of a system binary, the installed kernels, qemu-guest-agent and cloud-init."""

from __future__ import annotations

from introspect.guest.fs.base import Filesystem
from introspect.guest.model import OperatingSystem
from introspect.model import Finding


def inspect_linux(fs: Filesystem, device: str, notes: list[Finding]) -> OperatingSystem | None:
    """The Linux system whose root is `fs`, or None when `fs` is not a Linux root."""
    raise NotImplementedError
