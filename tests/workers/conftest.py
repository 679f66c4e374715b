"""Fixtures of the pipeline tests: real PostgreSQL, MariaDB and SQLite catalogs, real qemu-img
images, a claimed Redis database, real `introspect worker` processes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.workers.mariadb import MariaDb, MariaDbError
from tests.workers.services import CLAIM_KEY, RedisDb, claim_redis_db, make_images
from workers.catalog import Catalog
from workers.catalog.sql import make_engine, upgrade

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


# -- catalogs ---------------------------------------------------------------------------------------


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of this test's own, dropped afterwards."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDb]:
    """A MariaDB server of this session's own (tests/workers/mariadb.py), stopped at its end."""
    try:
        server = MariaDb.start(tmp_path_factory.mktemp("mariadb"))
    except MariaDbError as error:
        pytest.fail(str(error))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mariadb_database(mariadb_server: MariaDb) -> Iterator[str]:
    """The URL of a MariaDB database of this test's own, dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    url = mariadb_server.database(name)
    try:
        yield url
    finally:
        mariadb_server.drop(name)


#: The SQL catalogs every SQL test runs on: fixture names, each with its marks.
SQL_URLS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("pg_schema", id="postgresql", marks=pytest.mark.services),
    pytest.param("mariadb_database", id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=SQL_URLS)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    url: str = request.getfixturevalue(request.param)
    return url


@contextmanager
def migrated_catalog(url: str) -> Iterator[Catalog]:
    engine = make_engine(url)
    upgrade(engine)
    catalog = Catalog(engine)
    try:
        yield catalog
    finally:
        catalog.dispose()


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with migrated_catalog(catalog_url) as catalog:
        yield catalog


@pytest.fixture
def pg_catalog(pg_schema: str) -> Iterator[Catalog]:
    with migrated_catalog(pg_schema) as catalog:
        yield catalog


@pytest.fixture(params=SQL_URLS[1:])
def server_catalog(request: pytest.FixtureRequest) -> Iterator[Catalog]:
    """A catalog on each database server many workers share: PostgreSQL, MariaDB."""
    with migrated_catalog(request.getfixturevalue(request.param)) as catalog:
        yield catalog


# -- images made by qemu-img ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real images, made once per session with qemu-img (tests.workers.services.IMAGE_RECIPES)."""
    return make_images(tmp_path_factory.mktemp("images"))


# -- Redis ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_db() -> Iterator[RedisDb]:
    db, client = claim_redis_db(REDIS_HOST, REDIS_PORT)
    claimed = RedisDb(REDIS_HOST, REDIS_PORT, db, f"introspect-test-{secrets.token_hex(4)}:", client)
    try:
        yield claimed
    finally:
        claimed.cleanup()
        client.delete(CLAIM_KEY)
        client.close()
