"""An installer's media (an ISO): the distribution and version it installs, from the volume id,
.disk/info, .treeinfo or Windows' sources/idwbinfo.txt, matched against osinfo-db when installed."""

from __future__ import annotations

from introspect.guest.fs.base import Filesystem
from introspect.guest.model import OperatingSystem
from introspect.model import Finding


def inspect_media(fs: Filesystem, device: str, notes: list[Finding]) -> OperatingSystem | None:
    """The system this installer media installs, or None when `fs` is not one."""
    raise NotImplementedError
