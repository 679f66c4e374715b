"""Where images and their properties live: the `CatalogBackend` contract (backend.py), and this
project's SQL catalog (SQLite by default, PostgreSQL or MariaDB for many workers), reached only through
`Catalog`. workers/backends.py picks the configured backend (this one, or Glance's)."""

from __future__ import annotations

from workers.catalog.backend import CatalogBackend
from workers.catalog.models import DONE, TRANSITIONS, Source, Status
from workers.catalog.records import Change, Claim, ImageRecord, Outcome, Property, PropertyValue, Selection
from workers.catalog.sql import Catalog, open_catalog, upgrade

__all__ = [
    "DONE",
    "TRANSITIONS",
    "Catalog",
    "CatalogBackend",
    "Change",
    "Claim",
    "ImageRecord",
    "Outcome",
    "Property",
    "PropertyValue",
    "Selection",
    "Source",
    "Status",
    "open_catalog",
    "upgrade",
]
