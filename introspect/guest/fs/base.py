"""What a filesystem module provides, and the one path walk every filesystem shares.

Each module in `introspect.guest.fs` declares its on-disk structures once (named as in its spec)
and exports `FILESYSTEM`, a `FilesystemType`: `probe(disk)` (a few small reads of the volume's
superblock area: is this filesystem here?) and `open(disk)`, which returns a `Filesystem`. A
filesystem answers four questions, each with bounded reads through its `Disk`:

- `root()`: the root directory's node;
- `lookup(directory, name)`: one directory entry, or None;
- `read(node, offset, length)`: a file's bytes (clamped to its size; holes read as zeros);
- `readlink(node)`: a symbolic link's target;
- `list(directory, limit)`: at most `limit` names of a directory (kernels in /boot, loaders in an ESP).

A filesystem that finds a name by reading its directory's entries in order (ext, XFS, FAT, ISO
9660) keeps a `DirectoryIndex` per directory: the entries one lookup parsed are not parsed again
by the next lookup in the same directory (/etc, /usr/bin are each searched several times).

Paths are walked here, not in each filesystem: `resolve` follows symbolic links inside the guest
only (absolute targets resolved against this filesystem's root, never the host's), at most
`MAX_SYMLINKS` of them per walk, so a loop of links ends with `LoopDetected`. Every filesystem
clamps what it reads (counts, lengths, extents) and raises `CorruptFilesystem` (or `LoopDetected`)
when its structures contradict themselves; `TruncatedImage` when they point past the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, NamedTuple, Protocol, TypeVar

from introspect.errors import ImageError
from introspect.guest.disk import Disk

#: Symbolic links followed in one walk (Linux's own limit is 40).
MAX_SYMLINKS = 40
#: Path components in one walk (after links are expanded).
MAX_COMPONENTS = 256
#: A symbolic link's target is at most this long (PATH_MAX).
MAX_LINK_TARGET = 4096
#: Entries a `DirectoryIndex` remembers: /usr/bin of a full system holds about 2,000. Past them a
#: lookup parses the directory again from its start, as it streams by, so that the memory held
#: stays bounded whatever a hostile directory holds (at worst about 1.5 MiB for 4096 names of 255
#: bytes, themselves 1 MiB of directory blocks that the guest budget pays for).
MAX_INDEXED_ENTRIES = 4096
#: Directories whose `DirectoryIndex` a filesystem keeps (least recently used dropped first): the
#: directories of one inspection's paths.
MAX_INDEXED_DIRECTORIES = 16

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kind(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


class Node(NamedTuple):
    """One file, directory or link. `id` is the filesystem's own handle (an inode number, an MFT
    record, a directory entry's first cluster); `size` is in bytes, as the filesystem states it."""

    id: Hashable
    kind: Kind
    size: int


class Filesystem(Protocol):
    """An opened filesystem (see the module docstring)."""

    #: The filesystem's name as `blkid` reports its TYPE: ext2, ext3, ext4, xfs, btrfs, vfat, ntfs, iso9660.
    name: str
    #: Its label and UUID (or serial), as blkid reports them, when it has them.
    label: str | None
    uuid: str | None
    #: FAT, NTFS and ISO 9660 without Rock Ridge compare names without case.
    case_sensitive: bool

    def root(self) -> Node: ...

    def lookup(self, directory: Node, name: str) -> Node | None: ...

    def read(self, node: Node, offset: int, length: int) -> bytes: ...

    def readlink(self, node: Node) -> str: ...

    def list(self, directory: Node, limit: int) -> list[str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesystemType:
    """One filesystem: `name` as blkid reports it, `probe` (is it on this volume?), `open`."""

    name: str
    probe: Callable[[Disk], bool]
    open: Callable[[Disk], Filesystem]


class CorruptFilesystem(ImageError):
    """A filesystem's structures contradict themselves or their clamps: what was being read stops
    there (the guest pass records it as `guest.unreadable` and goes on with the other volumes)."""

    def __init__(self, filesystem: str, message: str) -> None:
        from introspect.safety import GUEST_UNREADABLE

        super().__init__(GUEST_UNREADABLE, f"{filesystem}: {message}")


class LoopDetected(ImageError):
    """A cycle in directories, extent trees or symbolic links (`guest.loop`)."""

    def __init__(self, what: str) -> None:
        from introspect.safety import GUEST_LOOP

        super().__init__(GUEST_LOOP, f"a loop in {what}: the walk stopped there")


class DirectoryIndex(Generic[K, V]):
    """A directory's entries (name -> what the filesystem makes of it), as far as lookups parsed
    them: `entries()` parses the directory from its start, in order, and a lookup goes on from
    where the last one stopped. The first entry of a name wins, as in a linear search. When parsing
    fails, the error goes up and the next lookup that needs more parses from the start again (it
    meets the same error), so an index answers exactly what a linear search would."""

    __slots__ = ("_complete", "_entries", "_known", "_rest")

    def __init__(self, entries: Callable[[], Iterator[tuple[K, V]]]) -> None:
        self._entries = entries
        self._known: dict[K, V] = {}
        self._rest: Iterator[tuple[K, V]] | None = None
        self._complete = False

    def find(self, name: K) -> V | None:
        """The entry of `name`, or None when the directory has none."""
        found = self._known.get(name)
        if found is not None or self._complete:
            return found
        if len(self._known) < MAX_INDEXED_ENTRIES:
            if self._rest is None:
                self._rest = self._entries()
            try:
                for entry, value in self._rest:
                    self._known.setdefault(entry, value)
                    if entry == name:
                        return value
                    if len(self._known) >= MAX_INDEXED_ENTRIES:
                        break
                else:
                    self._complete = True
                    return None
            except BaseException:
                self._rest = None
                raise
            self._rest = None
        # Past MAX_INDEXED_ENTRIES: the rest of the directory is searched as it streams by.
        for entry, value in self._entries():
            if entry == name:
                return value
        return None


def resolve(fs: Filesystem, path: str, *, follow: bool = True) -> Node | None:
    """The node at `path` (absolute, inside this filesystem), or None when a component is
    missing or not a directory. Symbolic links are followed inside the guest (the last one too
    when `follow`); `..` never climbs above the root, as in the kernel."""
    pending = _components(path)
    stack: list[Node] = [fs.root()]
    links = 0
    steps = 0
    while pending:
        steps += 1
        if steps > MAX_COMPONENTS + MAX_SYMLINKS * MAX_COMPONENTS:
            raise LoopDetected(f"the path {path!r}")
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            if len(stack) > 1:
                stack.pop()
            continue
        directory = stack[-1]
        if directory.kind != Kind.DIRECTORY:
            return None
        node = fs.lookup(directory, name)
        if node is None:
            return None
        if node.kind == Kind.SYMLINK and (pending or follow):
            links += 1
            if links > MAX_SYMLINKS:
                raise LoopDetected(f"the symbolic links of {path!r}")
            target = fs.readlink(node)
            if target.startswith("/"):
                stack = [stack[0]]
            pending = _components(target) + pending
            continue
        stack.append(node)
    return stack[-1]


def read_file(fs: Filesystem, path: str, limit: int) -> bytes | None:
    """The first `limit` bytes of the regular file at `path` (links followed), or None when there
    is no such file."""
    node = resolve(fs, path)
    if node is None or node.kind != Kind.FILE:
        return None
    return fs.read(node, 0, min(node.size, limit))


def exists(fs: Filesystem, path: str) -> bool:
    """Is there anything at `path` (a dangling link counts as nothing)?"""
    return resolve(fs, path) is not None


def list_directory(fs: Filesystem, path: str, limit: int) -> list[str]:
    """At most `limit` names in the directory at `path` (none when it is not one)."""
    node = resolve(fs, path)
    if node is None or node.kind != Kind.DIRECTORY:
        return []
    return fs.list(node, limit)


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part]
