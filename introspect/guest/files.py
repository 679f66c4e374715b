"""What the fact gatherers share: a file of the guest read like any other file (`GuestFile`, the
`read(offset, length, what)` every parser here takes), the one way a fact's failure becomes a
note, and where a fact was read (`Source`).

A fact that cannot be read (a corrupt release file, a hive whose cell points past its bins) is a
note, and the other facts are still gathered; running out of the guest budget is not a note of
one fact: `BudgetExceeded` goes up, so the guest pass stops once and says so (`guest.budget`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from introspect.errors import BudgetExceeded, ImageError, TruncatedImage
from introspect.guest.fs.base import Filesystem, Kind, Node, resolve
from introspect.guest.model import Source
from introspect.model import Finding

T = TypeVar("T")
P = ParamSpec("P")


class GuestFile:
    """A regular file of the guest: `read` returns exactly the bytes asked for, through its
    filesystem, or raises `TruncatedImage` (a structure of the file runs past its end)."""

    def __init__(self, fs: Filesystem, node: Node, path: str) -> None:
        self.fs = fs
        self.node = node
        self.path = path
        self.size = node.size

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedImage(f"{what} ({self.path})", offset=offset, length=length, size=self.size)
        data = self.fs.read(self.node, offset, length)
        if len(data) < length:
            raise TruncatedImage(
                f"{what} ({self.path})", offset=offset, length=length, size=offset + len(data)
            )
        return data


def open_file(fs: Filesystem, path: str) -> GuestFile | None:
    """The regular file at `path` (links followed inside the guest), or None."""
    node = resolve(fs, path)
    if node is None or node.kind != Kind.FILE:
        return None
    return GuestFile(fs, node, path)


def attempt(
    notes: list[Finding], where: str, gather: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T | None:
    """`gather(*args, **kwargs)`, or None when what it reads is unreadable: the error becomes a
    note naming `where` (the volume and the file). Budget exhaustion is not caught (see the
    module docstring)."""
    try:
        return gather(*args, **kwargs)
    except BudgetExceeded:
        raise
    except ImageError as error:
        notes.append(error.rule.finding(f"{where}: {error}"))
        return None


def source(device: str, fs: Filesystem, path: str) -> Source:
    """Where a fact was read: this volume, its filesystem, the file's path."""
    return Source(device=device, filesystem=fs.name, path=path)
