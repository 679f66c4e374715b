"""A mapping that keeps at most `capacity` entries, dropping the least recently used: the table
caches of the filesystems (FAT sectors, cluster chains, MFT records, data runs), so that a lookup
re-reads nothing it just read while memory stays bounded whatever the image says."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most `capacity` values, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The value kept for `key`, or `make()`'s, kept."""
        try:
            value = self._items[key]
        except KeyError:
            value = make()
            self._items[key] = value
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return value
        self._items.move_to_end(key)
        return value
