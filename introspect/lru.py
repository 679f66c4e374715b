"""The one bounded cache of the library: at most `capacity` values, the least recently used
dropped first.

Every cache that parsers keep between lookups (mapping-table pages and decompressed clusters of the
guest views, the guest disk's blocks, a filesystem's FAT sectors, MFT records, chunks and trees)
is an `Lru`, so that re-reading what was just read costs nothing while the memory held stays
bounded whatever the image says. Values are never None: `get` answers None for a key not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most `capacity` values (none when it is 0); the least recently used one goes first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether `key` is kept; asking does not count as a use."""
        return key in self._items

    def get(self, key: K) -> V | None:
        """The value kept for `key` (now the most recently used), or None."""
        try:
            value = self._items[key]
        except KeyError:
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep `value` for `key`, dropping the least recently used value past the capacity."""
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value kept for `key`, else `make()`'s, kept."""
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    def find(self, match: Callable[[V], bool]) -> V | None:
        """A kept value that `match`es (now the most recently used), or None: for a cache looked up
        by what a value covers rather than by its key (a chunk holding an address)."""
        for key, value in self._items.items():
            if match(value):
                self._items.move_to_end(key)
                return value
        return None
