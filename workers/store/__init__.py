"""Where image bytes live: a local directory store for uploads, and locations read in place
(`file://`, `http(s)://`) for images registered without copying."""

from workers.store.http import HttpSource
from workers.store.local import LocalStore, Stored
from workers.store.locations import SCHEMES, check_location, open_location, size_of

__all__ = ["SCHEMES", "HttpSource", "LocalStore", "Stored", "check_location", "open_location", "size_of"]
