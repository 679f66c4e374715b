"""Which catalog a process uses: INTROSPECT_CATALOG names one of `BACKENDS`.

Each backend is a module with a `backend(settings)` function returning its `CatalogBackend`
(workers/catalog/backend.py), and, if opening it can create or change anything (a database's
schema), a `reader(settings)` for read-only commands that never does. The module is imported only when chosen, so a SQL deployment never
imports the Glance client; and no backend imports this module, so the catalogs and the Glance
package never import each other (tests/workers/test_imports.py checks there is no import circle).

Adding a backend: its module, one line below, one fixture line in tests/workers/catalog/test_contract.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from workers.errors import PipelineError

if TYPE_CHECKING:
    from workers.catalog.backend import CatalogBackend
    from workers.settings import Settings

BACKENDS: dict[str, str] = {
    "sql": "workers.catalog.sql",  # SQLite (default), PostgreSQL or MariaDB: INTROSPECT_DATABASE_URL
    "glance": "workers.glance.catalog",  # an OpenStack Glance: INTROSPECT_GLANCE_*
}


def open_backend(settings: Settings, *, write: bool = True) -> CatalogBackend:
    """The catalog INTROSPECT_CATALOG names (`sql` by default); with `write=False`, opened so that
    nothing in it is created or changed (its `reader`, where it has one)."""
    module = BACKENDS.get(settings.catalog)
    if module is None:
        known = ", ".join(BACKENDS)
        raise PipelineError(f"INTROSPECT_CATALOG={settings.catalog!r} names no catalog: use one of {known}")
    loaded = importlib.import_module(module)
    opener = loaded.backend if write else getattr(loaded, "reader", loaded.backend)
    backend = cast("Callable[[Settings], CatalogBackend]", opener)
    return backend(settings)
