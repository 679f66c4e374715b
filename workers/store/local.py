"""The local directory store: one file per image, named by its id, under the store directory.

An upload is read once: sha256 and size (and, for an OVA, its members' digests: see `tap`) are
computed in the same pass that writes the bytes.
It goes to a temporary name, is fsynced, then renamed into place (and the directory fsynced), so
the store never holds half an image under a real name, whatever kills the process. Runs of zero
bytes are skipped rather than written, so sparse disk images stay sparse.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from workers.errors import NoData

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Stored:
    """Where an upload landed, with what was measured on the way in."""

    location: str
    size: int
    checksum: str


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """Image files under `root`, addressed by `file://` URIs."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(
        self,
        image_id: uuid.UUID,
        stream: BinaryIO,
        *,
        progress: Callable[[int], None] | None = None,
        tap: Callable[[bytes], None] | None = None,
    ) -> Stored:
        """Stream `stream` in as image `image_id`; `progress` gets the byte count of each chunk,
        `tap` each chunk itself (what else the one pass computes: an OVA's member digests)."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / str(image_id)
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{image_id}.", suffix=".part")
        digest = hashlib.sha256()
        size = 0
        zeros = bytes(CHUNK)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                    if tap is not None:
                        tap(chunk)
                    size += len(chunk)
                    if chunk == zeros[: len(chunk)]:
                        out.seek(len(chunk), os.SEEK_CUR)
                    else:
                        out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                out.truncate(size)
                out.flush()
                os.fsync(out.fileno())
            Path(temporary).replace(final)
            _fsync_directory(self.root)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return Stored(location=final.as_uri(), size=size, checksum=digest.hexdigest())

    def owns(self, location: str) -> bool:
        """Whether `location` is a file this store wrote (and so may delete)."""
        parts = urlsplit(location)
        if parts.scheme != "file":
            return False
        path = Path(unquote(parts.path))
        return path.parent == self.root.resolve() or path.parent == self.root

    def delete(self, location: str) -> None:
        """Remove an image file of this store; locations registered in place are never touched."""
        if not self.owns(location):
            return
        Path(unquote(urlsplit(location).path)).unlink(missing_ok=True)

    def path_of(self, location: str) -> Path:
        if not self.owns(location):
            raise NoData(f"{location} is not in the store at {self.root}")
        return Path(unquote(urlsplit(location).path))
