"""Where images and their properties live: a SQL database (SQLite by default, PostgreSQL for many
workers), reached only through `Catalog`; or an OpenStack Glance (workers/glance/catalog.py),
which offers the same operations. `configured_catalog(settings)` picks the one configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.catalog.models import DONE, TRANSITIONS, Source, Status
from workers.catalog.records import Change, Claim, ImageRecord, Outcome, Property, PropertyValue, Selection
from workers.catalog.sql import Catalog, open_catalog, upgrade

if TYPE_CHECKING:
    from workers.glance.catalog import GlanceCatalog
    from workers.settings import Settings


def configured_catalog(settings: Settings) -> Catalog | GlanceCatalog:
    """The catalog INTROSPECT_CATALOG names: `sql` (default) or `glance`."""
    if settings.catalog == "glance":
        from workers.glance.catalog import GlanceCatalog

        return GlanceCatalog.from_settings()
    return open_catalog(settings.catalog_url)


__all__ = [
    "DONE",
    "TRANSITIONS",
    "Catalog",
    "Change",
    "Claim",
    "ImageRecord",
    "Outcome",
    "Property",
    "PropertyValue",
    "Selection",
    "Source",
    "Status",
    "configured_catalog",
    "open_catalog",
    "upgrade",
]
