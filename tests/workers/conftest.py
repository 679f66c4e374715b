"""Fixtures of the pipeline tests: real PostgreSQL and SQLite catalogs, real qemu-img images, a
claimed Redis database, real `introspect worker` processes."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.workers.services import (  # noqa: F401 - re-exported for the test modules
    CLAIM_KEY,
    INTROSPECT,
    Deployment,
    RedisDb,
    Worker,
    claim_redis_db,
    deployment_env,
    start_worker,
    wait_until,
)
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


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("pg_schema")


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    engine = make_engine(catalog_url)
    upgrade(engine)
    catalog = Catalog(engine)
    yield catalog
    catalog.dispose()


@pytest.fixture
def pg_catalog(pg_schema: str) -> Iterator[Catalog]:
    engine = make_engine(pg_schema)
    upgrade(engine)
    catalog = Catalog(engine)
    yield catalog
    catalog.dispose()


# -- images made by qemu-img ----------------------------------------------------------------------

#: name -> qemu-img create arguments (odd virtual sizes; each format the parsers may know).
IMAGE_RECIPES: dict[str, list[str]] = {
    "small.qcow2": ["-f", "qcow2", "{path}", "7M"],
    "huge.qcow2": ["-f", "qcow2", "-o", "cluster_size=65536", "{path}", "1T"],
    "stream.vmdk": ["-f", "vmdk", "-o", "adapter_type=lsilogic,subformat=streamOptimized", "{path}", "129M"],
    "sparse.vmdk": ["-f", "vmdk", "{path}", "1027M"],
    "disk.vhd": ["-f", "vpc", "{path}", "7M"],
    "disk.vhdx": ["-f", "vhdx", "{path}", "7M"],
    "disk.vdi": ["-f", "vdi", "{path}", "7M"],
    "disk.qed": ["-f", "qed", "{path}", "7M"],
    "backed.qcow2": ["-f", "qcow2", "-b", "small.qcow2", "-F", "qcow2", "{path}"],
}


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real images, made once per session with qemu-img (sparse, a few hundred KiB each)."""
    directory = tmp_path_factory.mktemp("images")
    made = {}
    for name, recipe in IMAGE_RECIPES.items():
        path = directory / name
        args = [arg.format(path=path) for arg in recipe]
        subprocess.run(["qemu-img", "create", "-q", *args], check=True, cwd=directory)
        made[name] = path
    return made


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
