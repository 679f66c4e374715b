"""Where images and their properties live: a SQL database (SQLite by default, PostgreSQL for many
workers), reached only through `Catalog`."""

from workers.catalog.models import DONE, TRANSITIONS, Source, Status
from workers.catalog.records import Change, Claim, ImageRecord, Outcome, Property, PropertyValue, Selection
from workers.catalog.sql import Catalog, open_catalog, upgrade

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
    "open_catalog",
    "upgrade",
]
