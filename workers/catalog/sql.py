"""The SQL catalog: SQLite by default, PostgreSQL or MariaDB (MySQL) for many workers
(SQLAlchemy 2.x Core, except an inspection's claim and write-back: plain SQL handed to the
driver, see "the hot path" below).

Every status change is a compare-and-swap (`UPDATE ... WHERE status = :seen`) checked against
`TRANSITIONS`; an inspection's write-back is a compare-and-swap on the claim token it was given,
so a stale delivery can never overwrite a newer one, and it touches only `introspected`
property rows, so it can never lose an admin's write. Migrations (Alembic) run on first use.

SQLite runs in WAL mode with synchronous=NORMAL: a commit is atomic and survives any process
dying (a killed worker included); only an OS crash or power loss may undo the last commits
before the next checkpoint, never leaving the file inconsistent. PostgreSQL commits durably.
MariaDB runs its catalog's transactions in READ COMMITTED (as Galera clusters are usually run:
every statement sees what others committed, and InnoDB takes no gap locks for them), with
tables in utf8mb4 under a binary collation (models.py), so keys compare as on the others.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from introspect.report import INSPECTOR_VERSION
from workers.catalog.models import (
    DONE,
    TRANSITIONS,
    Source,
    Status,
    history,
    images,
    properties,
    tombstones,
    utcnow,
)
from workers.catalog.records import (
    Change,
    Claim,
    ImageRecord,
    Outcome,
    Property,
    PropertyValue,
    Selection,
    Stale,
)
from workers.errors import (
    CatalogConfigError,
    CatalogUnavailable,
    InvalidTransition,
    NoData,
    NotFound,
    PipelineError,
    Superseded,
    UpToDate,
)
from workers.settings import mask
from workers.store import open_location

if TYPE_CHECKING:
    from introspect.sources import ByteSource
    from workers.catalog.backend import CatalogBackend
    from workers.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")
#: pg_advisory_xact_lock key that serializes concurrent upgrades of one PostgreSQL database.
MIGRATION_LOCK = 0x696E7472  # "intr"
#: GET_LOCK name (and seconds it waits) that serializes concurrent upgrades of one MariaDB database.
MARIADB_MIGRATION_LOCK = "introspect-catalog-migration"
MARIADB_MIGRATION_WAIT = 300
#: MariaDB's error for a statement it does not support (GET_LOCK on some Galera versions).
ER_NOT_SUPPORTED_YET = 1235
#: The dialect names of MariaDB and MySQL (`mariadb://` and `mysql://`; one code path).
MYSQL = frozenset({"mysql", "mariadb"})
#: Seconds a pooled MariaDB connection is kept: below the server's wait_timeout (8 h by default),
#: and proxies in front of Galera (HAProxy, MaxScale) often drop idle connections sooner.
MARIADB_POOL_RECYCLE = 3600
#: The driver a server's URL gets when it names none (those the pipeline extra installs).
DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
#: The databases a catalog URL may name.
DIALECTS = frozenset({"sqlite", "postgres", *DRIVERS})
#: How long a SQLite transaction waits for the write lock, and its first and longest pause.
SQLITE_LOCK_TIMEOUT = 60.0
SQLITE_FIRST_WAIT = 0.00005
SQLITE_LONGEST_WAIT = 0.002
#: A status compare-and-swap that keeps losing to other writers gives up after this many tries.
CAS_ATTEMPTS = 5
#: Where an inspection may start from (the statuses whose transitions include `importing`).
CLAIMABLE = sorted(status for status, targets in TRANSITIONS.items() if Status.IMPORTING in targets)


def normalize_url(url: str | URL) -> URL:
    """The URL with its driver: `postgresql://` means psycopg 3 here, `mariadb://` and `mysql://`
    PyMySQL (the drivers the pipeline extra installs), and MariaDB speaks utf8mb4. A URL that is
    not one, or names a database the catalog does not support, is a `CatalogConfigError`."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CatalogConfigError(
            f"the catalog database URL {mask(str(url))!r} is not a URL: use sqlite:///PATH, "
            "postgresql://USER@HOST/DB or mariadb://USER:PASSWORD@HOST/DB"
        ) from None
    dialect, _, driver = parsed.drivername.partition("+")
    if dialect not in DIALECTS:
        raise CatalogConfigError(
            f"the catalog database URL {parsed.render_as_string(hide_password=True)} names {dialect!r}, "
            "a database the catalog does not support: use sqlite, postgresql or mariadb (mysql)"
        )
    if dialect == "postgres":
        dialect = "postgresql"
    if dialect in DRIVERS:
        parsed = parsed.set(drivername=f"{dialect}+{driver or DRIVERS[dialect]}")
    if dialect in MYSQL and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (pysqlite's own transaction handling
    # defers the write lock, and a deferred reader that later writes fails at once with "database
    # is locked" instead of waiting).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; no fsync per commit in WAL
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """The "begin" event of SQLite engines: BEGIN IMMEDIATE (see `_begin_immediate`)."""
    raw: Any = connection.connection.driver_connection
    _begin_immediate(raw)


def _begin_immediate(raw: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock ourselves. SQLite's own busy handler sleeps
    1, 2, 5, 10... ms between tries, far longer than our transactions hold the lock (well under a
    millisecond), so two busy workers would spend most of their time asleep."""
    deadline = time.monotonic() + SQLITE_LOCK_TIMEOUT
    delay = SQLITE_FIRST_WAIT
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, SQLITE_LONGEST_WAIT)
        else:
            return


@contextmanager
def _committed(raw: Any) -> Iterator[None]:
    """One transaction on a driver connection that begins by itself (PyMySQL): COMMIT, or
    ROLLBACK on any exception (a time limit's included)."""
    try:
        yield
    except BaseException:
        raw.rollback()
        raise
    raw.commit()


@contextmanager
def _immediate(raw: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on a driver connection: BEGIN IMMEDIATE, then COMMIT, or ROLLBACK on
    any exception (a time limit's included: the write lock must never outlive the transaction)."""
    _begin_immediate(raw)
    with _committed(raw):
        yield


def make_engine(url: str | URL, *, create_directory: bool = True) -> Engine:
    """An engine for `url`, with SQLite made safe for several processes. A SQLite file's directory
    is created only with `create_directory` (the data directory's own catalog): a directory that a
    configured URL names and that does not exist is a typo, not a new empty catalog."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            directory = Path(parsed.database).parent
            if not create_directory and not directory.is_dir():
                shown = parsed.render_as_string(hide_password=True)
                raise PipelineError(
                    f"the catalog database {shown} names a directory that does not exist: {directory}"
                )
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                shown = parsed.render_as_string(hide_password=True)
                reason = f"cannot create {directory}: {error.strerror}"
                raise CatalogUnavailable(f"the catalog database {shown} is unavailable: {reason}") from None
        engine = _create_engine(parsed, connect_args={"timeout": 0})  # see _sqlite_begin
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # No pre-ping: it would cost a round trip per transaction. A connection the server dropped
    # fails its next statement, SQLAlchemy discards it, and the caller (a task) retries.
    if parsed.get_backend_name() in MYSQL:
        return _create_engine(parsed, isolation_level="READ COMMITTED", pool_recycle=MARIADB_POOL_RECYCLE)
    return _create_engine(parsed)


def _create_engine(url: URL, **options: Any) -> Engine:
    """create_engine, with a driver that is not installed said in one line."""
    try:
        return create_engine(url, **options)
    except (NoSuchModuleError, ImportError) as error:
        raise CatalogConfigError(
            f"the catalog database {url.render_as_string(hide_password=True)} needs the driver "
            f"{url.get_driver_name()!r}, which cannot be loaded ({error}): install introspect-images[pipeline]"
        ) from None


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with _guarded(engine), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest migration; True when something ran. Safe to call from many
    processes at once (an advisory lock on PostgreSQL, a named lock on MariaDB, BEGIN IMMEDIATE
    on SQLite)."""
    with _guarded(engine), engine.connect() as connection, _named_lock(connection), connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        if MigrationContext.configure(connection).get_current_revision() == head_revision():
            return False
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return True


@contextmanager
def _named_lock(connection: Connection) -> Iterator[None]:
    """MariaDB: a named lock of the session around the migration's transaction (it outlives the
    commits its DDL makes, and is released only once the new revision is committed, so the next
    holder sees it). Taken and released outside any transaction."""
    if connection.dialect.name not in MYSQL:
        yield
        return
    lock = {"name": MARIADB_MIGRATION_LOCK, "wait": MARIADB_MIGRATION_WAIT}
    try:
        held = connection.execute(text("SELECT GET_LOCK(:name, :wait)"), lock).scalar()
        connection.commit()  # ends the transaction the SELECT began; the lock stays
    except DBAPIError as error:
        if not error.orig or error.orig.args[:1] != (ER_NOT_SUPPORTED_YET,):
            raise
        # Galera on MariaDB 10.6.13 and 10.11.3 refused GET_LOCK (MDEV-30473, undone by
        # MDEV-31325); elsewhere on Galera the lock is the node's own. Without it, of two first
        # uses racing, one fails on a table the other created, and its next try finds the head.
        connection.rollback()
        yield
        return
    if held != 1:
        raise CatalogUnavailable(
            f"the catalog database {describe(connection.engine)} is unavailable: another process "
            f"held its migration lock for {MARIADB_MIGRATION_WAIT} s"
        )
    try:
        yield
    finally:
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), lock)
        connection.commit()


def describe(engine: Engine) -> str:
    """The database URL without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def _guarded(engine: Engine) -> Iterator[None]:
    """The database being unreachable (or locked past the timeout) is transient: say which one."""
    try:
        yield
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        message = f"the catalog database {describe(engine)} is unavailable: {reason}"
        raise CatalogUnavailable(message) from error
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        raise CatalogUnavailable(f"the catalog database {describe(engine)} dropped the connection") from error


# -- the hot path: an inspection's claim and write-back ---------------------------------------------
# Plain SQL sent straight to the driver (see `Catalog._driver`): SQLAlchemy's per-statement work
# (execution context, events, parameter processing, result wrapping) cost more than the database's
# own, and these statements run twice per image. Written with `:name` parameters, as `text()`
# takes them; `_pyformat` rewrites them for psycopg and PyMySQL. Everything else in this module
# uses Core.

#: Take the image for an inspection: moves it only from a status whose transitions include
#: `importing`, counts one more delivery (then CLAIM_SQL hands back what the inspection needs).
CLAIM_UPDATE_SQL = f"""
UPDATE images SET status = 'importing', claim_token = :token, deliveries = deliveries + 1, updated_at = :now
WHERE id = :id AND status IN ({", ".join(f"'{status}'" for status in CLAIMABLE)})
"""
#: What a claim returns: what the inspection needs of the image (`Claim`).
CLAIMED_COLUMNS = "deliveries, location, disk_format, virtual_size, container_format, member_digests"
CLAIM_SQL = f"{CLAIM_UPDATE_SQL}RETURNING {CLAIMED_COLUMNS}\n"

#: The claim on PostgreSQL commits asynchronously (without waiting for its WAL to reach the disk;
#: "the behavior for any one transaction is determined by the setting in effect when it commits",
#: and set_config(..., true) sets it for this statement's own transaction only). What a server
#: crash could lose is a claim whose inspection then fails on the dropped connection and is
#: retried from the start; the write-back's synchronous commit flushes the claim with it. A worker
#: that dies still counts: the commit is visible at once, only its flush is deferred. Measured
#: here: claim, inspection and write-back of one small image in 1.1 ms of wall time, not 1.5.
CLAIM_POSTGRESQL = f"""
WITH claimed AS ({CLAIM_SQL})
SELECT {CLAIMED_COLUMNS} FROM claimed
WHERE set_config('synchronous_commit', 'off', true) = 'off'
"""

#: Write the inspection onto the image if the claim is still ours (the compare-and-swap on the
#: claim token). Only an image that declared nothing adopts what its first inspection found.
FINISH_IMAGE_SQL = """
UPDATE images SET
    status = :status, verdict = :verdict, findings = :findings,
    inspected_format = :format, inspected_virtual_size = :vsize,
    inspector_version = :version, inspected_at = :now, inspection_task = :task,
    job_id = :job, claim_token = NULL, deliveries = 0, updated_at = :now,
    disk_format = COALESCE(disk_format, :adopt_format),
    virtual_size = COALESCE(virtual_size, :adopt_vsize),
    container_format = COALESCE(container_format, :adopt_container)
WHERE id = :id AND status = 'importing' AND claim_token = :token
"""

#: The whole write-back as one statement on PostgreSQL (one round trip, in autocommit): every
#: part of a WITH sees the same snapshot, so `old` is what the image had before this statement,
#: and nothing but the `images` update happens unless that update won the claim. It does what
#: the step-by-step path in `Catalog._finish_sqlite` does (audit rows in the same order: the
#: new values in the report's order, then the keys that disappeared, sorted); the tests run both.
FINISH_POSTGRESQL = f"""
WITH won AS ({FINISH_IMAGE_SQL} RETURNING id),
new AS (
    SELECT key, value, ord
    FROM unnest(CAST(:keys AS TEXT[]), CAST(:values AS TEXT[])) WITH ORDINALITY AS t(key, value, ord)
),
old AS (
    SELECT key, value, inspector_version FROM image_properties
    WHERE image_id = :id AND source = 'introspected' AND EXISTS (SELECT FROM won)
),
upserted AS (
    INSERT INTO image_properties (image_id, key, source, value, inspector_version, task_id, set_by, set_at)
    SELECT :id, new.key, 'introspected', new.value, :version, :task, NULL, :now
    FROM new LEFT JOIN old ON old.key = new.key
    WHERE EXISTS (SELECT FROM won)
        AND (old.key IS NULL OR old.value <> new.value OR old.inspector_version IS DISTINCT FROM :version)
    ON CONFLICT (image_id, key, source) DO UPDATE SET
        value = EXCLUDED.value, inspector_version = EXCLUDED.inspector_version,
        task_id = EXCLUDED.task_id, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at
),
deleted AS (
    DELETE FROM image_properties
    WHERE image_id = :id AND source = 'introspected' AND EXISTS (SELECT FROM won)
        AND key <> ALL (CAST(:keys AS TEXT[]))
),
audited AS (
    INSERT INTO property_history (image_id, key, old, new, source, actor, at, task_id)
    SELECT :id, COALESCE(new.key, old.key), old.value, new.value, 'introspected', 'introspect', :now, :task
    FROM new FULL JOIN old ON old.key = new.key
    WHERE EXISTS (SELECT FROM won) AND old.value IS DISTINCT FROM new.value
    ORDER BY new.ord NULLS LAST, old.key
)
SELECT count(*) FROM won
"""

# SQLite's steps of the write-back, run in one BEGIN IMMEDIATE transaction after FINISH_IMAGE_SQL
# won the claim; the rows come from `_write_back` (the diff is computed in Python: SQLite is
# in-process, so a statement costs no round trip).
INTROSPECTED_SQLITE = """
SELECT key, value, inspector_version FROM image_properties WHERE image_id = :id AND source = 'introspected'
"""
UPSERT_SQLITE = """
INSERT INTO image_properties (image_id, key, source, value, inspector_version, task_id, set_by, set_at)
VALUES (:image_id, :key, 'introspected', :value, :inspector_version, :task_id, NULL, :set_at)
ON CONFLICT (image_id, key, source) DO UPDATE SET
    value = excluded.value, inspector_version = excluded.inspector_version,
    task_id = excluded.task_id, set_by = excluded.set_by, set_at = excluded.set_at
"""
DELETE_SQLITE = """
DELETE FROM image_properties WHERE image_id = :image_id AND source = 'introspected' AND key = :key
"""
HISTORY_SQLITE = """
INSERT INTO property_history (image_id, key, old, new, source, actor, at, task_id)
VALUES (:image_id, :key, :old, :new, :source, :actor, :at, :task_id)
"""


# MariaDB has no UPDATE ... RETURNING: the claim is CLAIM_UPDATE_SQL then this read, in one
# transaction (the row lock the UPDATE took keeps it ours until the commit), and the write-back
# the steps of SQLite's path (a round trip each) in one transaction. `key` is a reserved word there.
CLAIMED_MARIADB = f"""
SELECT {CLAIMED_COLUMNS} FROM images WHERE id = :id AND claim_token = :token
"""
INTROSPECTED_MARIADB = """
SELECT `key`, value, inspector_version FROM image_properties WHERE image_id = :id AND source = 'introspected'
"""
UPSERT_MARIADB = """
INSERT INTO image_properties (image_id, `key`, source, value, inspector_version, task_id, set_by, set_at)
VALUES (:image_id, :key, 'introspected', :value, :inspector_version, :task_id, NULL, :set_at)
ON DUPLICATE KEY UPDATE
    value = VALUES(value), inspector_version = VALUES(inspector_version),
    task_id = VALUES(task_id), set_by = VALUES(set_by), set_at = VALUES(set_at)
"""
DELETE_MARIADB = """
DELETE FROM image_properties WHERE image_id = :image_id AND source = 'introspected' AND `key` = :key
"""
HISTORY_MARIADB = """
INSERT INTO property_history (image_id, `key`, old, new, source, actor, at, task_id)
VALUES (:image_id, :key, :old, :new, :source, :actor, :at, :task_id)
"""


@cache
def _pyformat(sql: str) -> str:
    """`:name` parameters as psycopg's and PyMySQL's `%(name)s` (the SQL above has no `::` casts
    and no `%`)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


_CATALOGS: dict[tuple[int, str], Catalog] = {}
_CATALOGS_LOCK = threading.Lock()


def open_catalog(url: str | URL, *, migrate: bool = True, create_directory: bool = True) -> Catalog:
    """The process's catalog for `url`, migrated on first use. Cached per process id, so that a
    forked worker child never shares its parent's connections. Without `migrate` nothing is
    created or changed: the database must exist and hold the newest schema (`require_schema`)."""
    key = (os.getpid(), str(url))
    with _CATALOGS_LOCK:
        catalog = _CATALOGS.get(key)
        if catalog is None:
            if not migrate:
                _require_file(url)
            engine = make_engine(url, create_directory=create_directory and migrate)
            if migrate:
                upgrade(engine)
            else:
                require_schema(engine)
            catalog = _CATALOGS[key] = Catalog(engine)
        return catalog


#: How a read-only command's refusal ends when there is no catalog to read.
NO_CATALOG_FIX = "`introspect db upgrade` creates it (or check INTROSPECT_DATABASE_URL, INTROSPECT_DATA_DIR)"


def _require_file(url: str | URL) -> None:
    """A SQLite catalog to be read must be there already (connecting would create an empty one)."""
    parsed = normalize_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        if not Path(database).is_file():
            shown = parsed.render_as_string(hide_password=True)
            raise PipelineError(f"the catalog database {shown} does not exist: {NO_CATALOG_FIX}")


def require_schema(engine: Engine) -> None:
    """A read-only command's check: the catalog is at the newest migration; otherwise one line
    saying so (migrations run only from write commands and `introspect db upgrade`)."""
    where = f"the catalog database {describe(engine)}"
    revision, head = current_revision(engine), head_revision()
    if revision is None:
        raise PipelineError(f"{where} holds no introspect catalog: {NO_CATALOG_FIX}")
    if revision != head:
        raise PipelineError(f"{where} is at revision {revision}, not {head}: run `introspect db upgrade`")


def backend(settings: Settings) -> CatalogBackend:
    """The catalog of INTROSPECT_CATALOG=sql (workers/backends.py): INTROSPECT_DATABASE_URL, or
    SQLite under the data directory. (Typed as the contract, so mypy checks `Catalog` keeps it.)"""
    return open_catalog(settings.catalog_url, create_directory=settings.database_url is None)


def reader(settings: Settings) -> CatalogBackend:
    """The same catalog for commands that only read: never created, never migrated."""
    return open_catalog(settings.catalog_url, migrate=False)


def _upsert(engine: Engine) -> Insert:
    """INSERT ... ON CONFLICT (image, key, source) DO UPDATE of the value columns only. With
    RETURNING, SQLAlchemy sends a list of rows as one multi-row INSERT ("insertmanyvalues"): one
    round trip, where a plain executemany costs one per row (or a pipeline sync with psycopg).
    MariaDB: INSERT ... ON DUPLICATE KEY UPDATE (the primary key is the only unique key), which
    PyMySQL's executemany already sends as one multi-row INSERT."""
    columns = ("value", "inspector_version", "task_id", "set_by", "set_at")
    if engine.dialect.name in MYSQL:
        upsert = mysql.insert(properties)
        return upsert.on_duplicate_key_update({column: upsert.inserted[column] for column in columns})
    dialect_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(properties)
    return statement.on_conflict_do_update(
        index_elements=[properties.c.image_id, properties.c.key, properties.c.source],
        set_={column: statement.excluded[column] for column in columns},
    ).returning(properties.c.key)


class Catalog:
    """Images, their properties and their history, in one SQL database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = "mariadb" if engine.dialect.name in MYSQL else engine.dialect.name
        # A pool of its own whose connections stay in autocommit: switching a pooled connection
        # back and forth costs a SET round trip each way.
        self._autocommit = (
            create_engine(engine.url, isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else None
        )
        self._property_upsert = _upsert(engine)
        self._history_insert = insert(history).returning(history.c.id)  # one round trip, see _upsert
        # The hot path's SQL in the driver's parameter style, and the conversions SQLAlchemy would
        # apply to its parameters (so that a value is stored exactly as the Core path stores it).
        self._claim_sql, self._finish_sql = {
            "postgresql": (_pyformat(CLAIM_POSTGRESQL), _pyformat(FINISH_POSTGRESQL)),
            "mariadb": (_pyformat(CLAIM_UPDATE_SQL), _pyformat(FINISH_IMAGE_SQL)),
        }.get(self._dialect, (CLAIM_SQL, FINISH_IMAGE_SQL))
        self._bind_id = _binder(images.c.id, engine)
        self._bind_moment = _binder(images.c.updated_at, engine)
        self._bind_json = _binder(images.c.findings, engine)

    @property
    def url(self) -> str:
        return describe(self.engine)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self._autocommit is not None:
            self._autocommit.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with _guarded(self.engine), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _driver(self) -> Iterator[Any]:
        """A pooled connection of the driver itself (sqlite3, psycopg or PyMySQL), for the hot
        path's plain SQL. On PostgreSQL it is in autocommit (no BEGIN and COMMIT round trips: each
        statement there is atomic on its own); on SQLite and MariaDB the caller begins (MariaDB:
        the first statement does) and commits. A driver error becomes the exception SQLAlchemy
        would have raised, so `_guarded` treats it the same way (a database that is gone or locked
        is CatalogUnavailable), and a connection the server dropped is discarded."""
        engine = self._autocommit or self.engine
        dbapi_error = engine.dialect.loaded_dbapi.Error
        with _guarded(self.engine):
            pooled = engine.raw_connection()
            try:
                yield pooled.driver_connection
            except dbapi_error as error:
                gone = engine.dialect.is_disconnect(error, pooled.dbapi_connection, None)
                if gone:
                    pooled.invalidate(error)
                raise DBAPIError.instance(
                    None, None, error, dbapi_error, connection_invalidated=gone
                ) from error
            finally:
                pooled.close()  # back to the pool, rolled back if a transaction was left open

    # -- images ---------------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str | None = None,
        disk_format: str | None = None,
        container_format: str | None = None,
        owner: str | None = None,
    ) -> uuid.UUID:
        """A new image record, `queued` (no data yet)."""
        image_id = uuid.uuid4()
        now = utcnow()
        with self._transaction() as connection:
            connection.execute(
                insert(images).values(
                    id=image_id,
                    name=name,
                    status=Status.QUEUED,
                    disk_format=disk_format,
                    container_format=container_format,
                    owner=owner,
                    created_at=now,
                    updated_at=now,
                    deliveries=0,
                )
            )
        return image_id

    def get(self, image_id: uuid.UUID | str) -> ImageRecord:
        image_id = _uuid(image_id)
        with self._transaction() as connection:
            row = connection.execute(select(images).where(images.c.id == image_id)).first()
        if row is None:
            raise NotFound(image_id)
        return ImageRecord.model_validate(row._asdict())

    def images(
        self, *, statuses: Iterable[str] = (), formats: Iterable[str] = (), batch: int = 500
    ) -> Iterator[ImageRecord]:
        """Every image matching, oldest id first, fetched a page at a time."""
        clause = _filters(statuses=list(statuses), formats=list(formats))
        for page in self._pages(select(images).where(clause), batch):
            for row in page:
                yield ImageRecord.model_validate(row._asdict())

    def transition(self, image_id: uuid.UUID, to: Status, **values: Any) -> Status:
        """Move the image to `to` if the table allows it from where it is; returns where it was."""
        for _ in range(CAS_ATTEMPTS):
            with self._transaction() as connection:
                seen = _status(connection, image_id)
                if to not in TRANSITIONS[seen]:
                    raise InvalidTransition(f"image {image_id} is {seen}: it cannot become {to}")
                moved = connection.execute(
                    update(images)
                    .where(images.c.id == image_id, images.c.status == seen)
                    .values(status=to, updated_at=utcnow(), **values)
                ).rowcount
            if moved == 1:
                return seen
        raise InvalidTransition(f"image {image_id}: other writers keep changing its status; try again")

    def start_upload(self, image_id: uuid.UUID) -> None:
        self.transition(image_id, Status.SAVING)

    def set_data(
        self,
        image_id: uuid.UUID,
        *,
        location: str,
        size: int | None,
        checksum: str | None,
        member_digests: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        """Record where the bytes are, once they are all there (the image stays `saving` until an
        inspection claims it), with the tar members' digests the upload took, if any."""
        with self._transaction() as connection:
            seen = _status(connection, image_id)
            if seen != Status.SAVING:
                raise InvalidTransition(f"image {image_id} is {seen}: its data can only be set while saving")
            connection.execute(
                update(images)
                .where(images.c.id == image_id, images.c.status == Status.SAVING)
                .values(
                    location=location,
                    size=size,
                    checksum=checksum,
                    member_digests=_digests_column(member_digests),
                    updated_at=utcnow(),
                )
            )

    def delete(self, image_id: uuid.UUID | str) -> ImageRecord:
        """Remove the image with its properties; returns what it was. A tombstone keeps the record
        and the whole audit history, in the same transaction (`deleted_history`)."""
        record = self.get(image_id)
        with self._transaction() as connection:
            rows = connection.execute(
                select(history).where(history.c.image_id == record.id).order_by(history.c.id)
            )
            changes = [
                Change.model_validate(_without(row._asdict(), "image_id")).model_dump(mode="json")
                for row in rows
            ]
            connection.execute(
                insert(tombstones).values(
                    id=record.id,
                    name=record.name,
                    deleted_at=utcnow(),
                    record=record.model_dump(mode="json", exclude={"claim_token", "disk_format_override"}),
                    history=changes,
                )
            )
            for table in (history, properties):
                connection.execute(delete(table).where(table.c.image_id == record.id))
            connection.execute(delete(images).where(images.c.id == record.id))
        return record

    def counts(self) -> dict[str, int]:
        """Images by status."""
        with self._transaction() as connection:
            rows = connection.execute(select(images.c.status, func.count()).group_by(images.c.status))
            return {status: count for status, count in rows}

    # -- inspections ----------------------------------------------------------------------------

    def claim(
        self,
        image_id: uuid.UUID | str,
        *,
        token: str,
        task_id: str | None,
        force: bool = True,
        unmoved_since: datetime | None = None,
    ) -> Claim:
        """Take the image for an inspection: -> `importing`, a fresh claim token, one more delivery
        counted (committed before anything is read, so a worker that dies still counts; on
        PostgreSQL without waiting for the flush, see CLAIM_POSTGRESQL).

        One conditional UPDATE: it moves the image only from a status whose transitions include
        `importing`, so checking and moving are one atomic step (and one round trip). Unforced
        (never on the hot path), an image this inspector version already finished is `UpToDate`:
        its data never changes under the same id here. With `unmoved_since`, see `_claim_unmoved`."""
        image_id = _uuid(image_id)
        if unmoved_since is not None:
            return self._claim_unmoved(image_id, token, unmoved_since)
        if not force:
            _refuse_up_to_date(self.get(image_id))
        params = {"id": self._bind_id(image_id), "token": token, "now": self._bind_moment(utcnow())}
        with self._driver() as raw:
            if self._dialect == "postgresql":
                row = raw.execute(self._claim_sql, params).fetchone()
            elif self._dialect == "mariadb":
                row = None
                with _committed(raw), raw.cursor() as cursor:
                    if cursor.execute(self._claim_sql, params) == 1:  # rows matched (FOUND_ROWS)
                        cursor.execute(_pyformat(CLAIMED_MARIADB), params)
                        row = cursor.fetchone()
            else:
                with _immediate(raw):
                    rows = raw.execute(self._claim_sql, params).fetchall()  # all: the UPDATE completes
                row = rows[0] if rows else None
        if row is not None:
            deliveries, location, disk_format, virtual_size, container_format, digests = row
            return Claim(
                image_id=image_id,
                token=token,
                deliveries=deliveries,
                location=location,
                disk_format=disk_format,
                virtual_size=virtual_size,
                container_format=container_format,
                member_digests=_json(digests),
            )
        with self._transaction() as connection:
            seen = _status(connection, image_id)
        if seen == Status.QUEUED:
            raise NoData(f"image {image_id} has no data yet (queued): upload it before inspecting")
        raise InvalidTransition(f"image {image_id} is {seen}: it cannot be inspected")

    def _claim_unmoved(self, image_id: uuid.UUID, token: str, marked: datetime) -> Claim:
        """A sweep's delivery claims the image only if nothing moved it since the sweep marked it
        (`updated_at` still the mark): a delivery that claimed it meanwhile, or finished it, wins,
        and this one is `Superseded`. So however many copies of its message the broker holds, a
        sweep never takes an image from a live inspection, nor counts a delivery it did not make."""
        claimable = [str(status) for status in CLAIMABLE]
        with self._transaction() as connection:
            moved = connection.execute(
                update(images)
                .where(images.c.id == image_id, images.c.status.in_(claimable), images.c.updated_at == marked)
                .values(
                    status=Status.IMPORTING,
                    claim_token=token,
                    deliveries=images.c.deliveries + 1,
                    updated_at=utcnow(),
                )
            ).rowcount
            row = connection.execute(
                select(
                    images.c.deliveries,
                    images.c.location,
                    images.c.disk_format,
                    images.c.virtual_size,
                    images.c.container_format,
                    images.c.member_digests,
                ).where(images.c.id == image_id)
            ).first()
        if row is None:
            raise NotFound(image_id)
        if moved != 1:
            raise Superseded(
                f"image {image_id} moved since the sweep queued it again: another delivery has it"
            )
        return Claim(
            image_id=image_id,
            token=token,
            deliveries=row.deliveries,
            location=row.location,
            disk_format=row.disk_format,
            virtual_size=row.virtual_size,
            container_format=row.container_format,
            member_digests=row.member_digests,
        )

    def open_location(self, location: str) -> ByteSource:
        """The store's bytes at a claim's location (file://, http(s)://)."""
        return open_location(location)

    def release(self, claim: Claim) -> None:
        """An inspection that stops for a transient fault (it will be retried) gives its delivery
        back, so that only deliveries that died count towards the poison limit. The image moved
        (`updated_at`): the sweep's deadline starts again from the retry."""
        with self._transaction() as connection:
            connection.execute(
                update(images)
                .where(
                    images.c.id == claim.image_id,
                    images.c.claim_token == claim.token,
                    images.c.deliveries > 0,
                )
                .values(deliveries=images.c.deliveries - 1, updated_at=utcnow())
            )

    # -- the sweep (workers/sweep.py) ---------------------------------------------------------------

    def take_stale(self, *, pending_before: datetime, importing_before: datetime, limit: int) -> list[Stale]:
        """Images whose inspection stopped moving, oldest first, at most `limit`: `saving` with a
        location (their bytes are complete: an inspection was queued) since before `pending_before`,
        `importing` since before `importing_before`. Each is marked (`updated_at` set to now) in the
        same transaction, so that no other sweep takes it again before its deadline comes round;
        on PostgreSQL the rows another transaction holds are skipped (FOR UPDATE SKIP LOCKED), so
        sweeps of many workers never wait on each other, nor on a claim. One query on the status
        index: the `saving` and `importing` rows are the few in flight."""
        stale = or_(
            (images.c.status == Status.SAVING)
            & images.c.location.is_not(None)
            & (images.c.updated_at < pending_before),
            (images.c.status == Status.IMPORTING) & (images.c.updated_at < importing_before),
        )
        query = (
            select(images.c.id, images.c.status, images.c.updated_at)
            .where(stale)
            .order_by(images.c.updated_at)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        now = utcnow()
        with self._transaction() as connection:
            rows = list(connection.execute(query))
            if rows:
                connection.execute(
                    update(images).where(images.c.id.in_([row.id for row in rows])).values(updated_at=now)
                )
        return [Stale(image_id=row.id, status=row.status, seen=row.updated_at, marked=now) for row in rows]

    def give_back(self, taken: Iterable[Stale]) -> None:
        """Remove a sweep's mark from images it could not queue (the broker was away), so that the
        next sweep takes them at once; an image that moved meanwhile keeps its new time."""
        rows = [{"b_id": stale.image_id, "b_marked": stale.marked, "b_seen": stale.seen} for stale in taken]
        if not rows:
            return
        with self._transaction() as connection:
            connection.execute(
                update(images)
                .where(images.c.id == bindparam("b_id"), images.c.updated_at == bindparam("b_marked"))
                .values(updated_at=bindparam("b_seen")),
                rows,
            )

    def finish(
        self, claim: Claim, outcome: Outcome, *, task_id: str | None, job_id: str | None = None
    ) -> bool:
        """Write an inspection back in one transaction, if the claim is still ours (False if a newer
        delivery took the image over). Introspected values are replaced, introspected keys that
        disappeared are dropped, admin rows are never touched; audit rows only for real changes."""
        if outcome.status not in DONE:
            raise InvalidTransition(f"an inspection cannot end in {outcome.status}")
        params: dict[str, Any] = {
            "id": self._bind_id(claim.image_id),
            "token": claim.token,
            "status": str(outcome.status),
            "verdict": outcome.verdict,
            "findings": self._bind_json(outcome.findings),
            "format": outcome.inspected_format,
            "vsize": outcome.inspected_virtual_size,
            "version": outcome.inspector_version,
            "now": self._bind_moment(utcnow()),
            "task": task_id,
            "job": job_id,
            "adopt_format": outcome.adopt_format,
            "adopt_vsize": outcome.adopt_virtual_size,
            "adopt_container": outcome.adopt_container_format,
        }
        with self._driver() as raw:
            if self._dialect == "postgresql":
                params |= {"keys": list(outcome.properties), "values": list(outcome.properties.values())}
                return bool(raw.execute(self._finish_sql, params).fetchone()[0])
            if self._dialect == "mariadb":
                return self._finish_mariadb(raw, params, outcome)
            return self._finish_sqlite(raw, params, outcome)

    def _finish_sqlite(self, raw: sqlite3.Connection, params: dict[str, Any], outcome: Outcome) -> bool:
        """The write-back on SQLite, in one BEGIN IMMEDIATE transaction: the compare-and-swap on the
        claim token first, then (only if it won) the introspected rows it replaces, read under the
        same lock, so nothing can change them between the read and the write."""
        with _immediate(raw):
            if raw.execute(self._finish_sql, params).rowcount != 1:
                return False  # a newer delivery holds the image: nothing was written
            old = {
                key: (value, version)
                for key, value, version in raw.execute(INTROSPECTED_SQLITE, {"id": params["id"]})
            }
            rows, changes, gone = _write_back(params["id"], old, outcome, params["task"], params["now"])
            if rows:
                raw.executemany(UPSERT_SQLITE, rows)
            if gone:
                raw.executemany(DELETE_SQLITE, [{"image_id": params["id"], "key": key} for key in gone])
            if changes:
                raw.executemany(HISTORY_SQLITE, changes)
        return True

    def _finish_mariadb(self, raw: Any, params: dict[str, Any], outcome: Outcome) -> bool:
        """The write-back on MariaDB: SQLite's steps, in one transaction. The compare-and-swap on
        the claim token locks the image's row, so no other write-back of this image can run
        until the commit; admin writes touch other rows."""
        with _committed(raw), raw.cursor() as cursor:
            if cursor.execute(self._finish_sql, params) != 1:
                return False  # a newer delivery holds the image: nothing was written
            cursor.execute(_pyformat(INTROSPECTED_MARIADB), {"id": params["id"]})
            old = {key: (value, version) for key, value, version in cursor.fetchall()}
            rows, changes, gone = _write_back(params["id"], old, outcome, params["task"], params["now"])
            if rows:
                cursor.executemany(_pyformat(UPSERT_MARIADB), rows)
            if gone:
                deleted = [{"image_id": params["id"], "key": key} for key in gone]
                cursor.executemany(_pyformat(DELETE_MARIADB), deleted)
            if changes:
                cursor.executemany(_pyformat(HISTORY_MARIADB), changes)
        return True

    # -- properties -----------------------------------------------------------------------------

    def values(self, image_id: uuid.UUID | str) -> list[PropertyValue]:
        """Every stored value of every key, both sources."""
        rows = self._rows_of(properties, image_id, properties.c.key)
        return [PropertyValue.model_validate(row) for row in rows]

    def _rows_of(self, table: Table, image_id: uuid.UUID | str, order: Any) -> list[dict[str, Any]]:
        """One image's rows of `properties` or `history` (NotFound when there is no such image)."""
        image_id = _uuid(image_id)
        with self._transaction() as connection:
            _status(connection, image_id)
            rows = connection.execute(select(table).where(table.c.image_id == image_id).order_by(order))
            return [_without(row._asdict(), "image_id") for row in rows]

    def properties(self, image_id: uuid.UUID | str) -> list[Property]:
        """Each key with its effective value: the admin's when there is one."""
        by_key: dict[str, dict[Source, PropertyValue]] = {}
        for value in self.values(image_id):
            by_key.setdefault(value.key, {})[value.source] = value
        result = []
        for key, sources in by_key.items():
            winner = sources.get(Source.ADMIN) or sources[Source.INTROSPECTED]
            result.append(
                Property(
                    key=key,
                    value=winner.value,
                    source=winner.source,
                    introspected=sources.get(Source.INTROSPECTED),
                    admin=sources.get(Source.ADMIN),
                )
            )
        return result

    def effective(self, image_id: uuid.UUID | str) -> dict[str, str]:
        return {prop.key: prop.value for prop in self.properties(image_id)}

    def introspected(self, image_id: uuid.UUID | str) -> dict[str, str]:
        return {v.key: v.value for v in self.values(image_id) if v.source == Source.INTROSPECTED}

    def set_admin(self, image_id: uuid.UUID | str, values: Mapping[str, str], *, actor: str) -> None:
        """Admin overrides: only `admin` rows are written, so no inspection can undo them."""
        image_id = _uuid(image_id)
        now = utcnow()
        with self._transaction() as connection:
            _status(connection, image_id)
            old = _admin_values(connection, image_id, values)
            rows = [
                {
                    "image_id": image_id,
                    "key": key,
                    "source": Source.ADMIN,
                    "value": value,
                    "inspector_version": None,
                    "task_id": None,
                    "set_by": actor,
                    "set_at": now,
                }
                for key, value in values.items()
            ]
            changes = [
                _change(image_id, key, old.get(key), value, Source.ADMIN, None, now, actor=actor)
                for key, value in values.items()
                if old.get(key) != value
            ]
            if rows:
                connection.execute(self._property_upsert, rows)
            if changes:
                connection.execute(self._history_insert, changes)

    def unset_admin(self, image_id: uuid.UUID | str, keys: Iterable[str], *, actor: str) -> None:
        """Drop admin overrides: the introspected value (if any) is effective again."""
        image_id = _uuid(image_id)
        keys = list(keys)
        now = utcnow()
        with self._transaction() as connection:
            _status(connection, image_id)
            old = _admin_values(connection, image_id, keys)
            missing = [key for key in keys if key not in old]
            if missing:
                raise PipelineError(
                    f"image {image_id} has no admin value for {', '.join(missing)}: "
                    "`introspect images show` lists which keys an admin set"
                )
            connection.execute(
                delete(properties).where(
                    properties.c.image_id == image_id,
                    properties.c.source == Source.ADMIN,
                    properties.c.key.in_(keys),
                )
            )
            connection.execute(
                insert(history),
                [
                    _change(image_id, key, old[key], None, Source.ADMIN, None, now, actor=actor)
                    for key in keys
                ],
            )

    def history(self, image_id: uuid.UUID | str) -> list[Change]:
        return [Change.model_validate(row) for row in self._rows_of(history, image_id, history.c.id)]

    def deleted_history(self, image_id: uuid.UUID | str) -> list[Change]:
        """The audit history of a deleted image, from its tombstone."""
        image_id = _uuid(image_id)
        with self._transaction() as connection:
            kept = connection.execute(
                select(tombstones.c.history).where(tombstones.c.id == image_id)
            ).scalar()
        if kept is None:
            raise PipelineError(
                f"no deleted image with id {image_id}: `introspect images list` shows the live ones"
            )
        return [Change.model_validate(change) for change in kept]

    # -- selections (re-runs) -------------------------------------------------------------------

    def select_ids(
        self, selection: Selection, *, batch: int = 500, exclude_job: str | None = None
    ) -> Iterator[list[uuid.UUID]]:
        """The ids a re-run takes, a page at a time (keyset pagination: memory is one page);
        `exclude_job` leaves out those a job already finished."""
        query = select(images.c.id).where(_selection(selection))
        if exclude_job is not None:
            query = query.where(or_(images.c.job_id.is_(None), images.c.job_id != exclude_job))
        for page in self._pages(query, batch):
            yield [row.id for row in page]

    def count(self, selection: Selection) -> int:
        with self._transaction() as connection:
            return int(connection.execute(select(func.count()).where(_selection(selection))).scalar_one())

    def mismatched(self, *, batch: int = 500) -> Iterator[ImageRecord]:
        """Images whose declared disk_format/virtual_size, or an admin's disk_format override,
        disagree with their last inspection."""
        override = (
            select(properties.c.value)
            .where(
                properties.c.image_id == images.c.id,
                properties.c.source == Source.ADMIN,
                properties.c.key == "disk_format",
            )
            .scalar_subquery()
        )
        query = select(images, override.label("disk_format_override")).where(
            images.c.inspected_at.is_not(None),
            or_(
                images.c.disk_format != images.c.inspected_format,
                images.c.virtual_size != images.c.inspected_virtual_size,
                override != images.c.inspected_format,
            ),
        )
        for page in self._pages(query, batch):
            for row in page:
                record = ImageRecord.model_validate(row._asdict())
                if record.mismatches:
                    yield record

    def job_progress(self, job_id: str) -> dict[str, int]:
        """Images finished by a re-run job, by status."""
        with self._transaction() as connection:
            rows = connection.execute(
                select(images.c.status, func.count())
                .where(images.c.job_id == job_id)
                .group_by(images.c.status)
            )
            return {status: count for status, count in rows}

    def statuses(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Status]:
        ids = list(ids)
        with self._transaction() as connection:
            rows = connection.execute(select(images.c.id, images.c.status).where(images.c.id.in_(ids)))
            return {image_id: Status(status) for image_id, status in rows}

    # -- helpers --------------------------------------------------------------------------------

    def _pages(self, query: Any, batch: int) -> Iterator[list[Any]]:
        last: uuid.UUID | None = None
        while True:
            page_query = query.order_by(images.c.id).limit(batch)
            if last is not None:
                page_query = page_query.where(images.c.id > last)
            with self._transaction() as connection:
                page = list(connection.execute(page_query))
            if not page:
                return
            yield page
            last = page[-1].id


def _refuse_up_to_date(record: ImageRecord) -> None:
    if record.status in DONE and record.inspector_version == INSPECTOR_VERSION:
        raise UpToDate(
            f"image {record.id}: its data was already inspected by inspector version {INSPECTOR_VERSION}"
        )


def _status(connection: Connection, image_id: uuid.UUID) -> Status:
    status = connection.execute(select(images.c.status).where(images.c.id == image_id)).scalar()
    if status is None:
        raise NotFound(image_id)
    return Status(status)


def _admin_values(connection: Connection, image_id: uuid.UUID, keys: Iterable[str]) -> dict[str, str]:
    rows = connection.execute(
        select(properties.c.key, properties.c.value).where(
            properties.c.image_id == image_id,
            properties.c.source == Source.ADMIN,
            properties.c.key.in_(list(keys)),
        )
    )
    return {key: value for key, value in rows}


def _binder(column: Any, engine: Engine) -> Callable[[Any], Any]:
    """What SQLAlchemy does to a parameter for `column` before handing it to the driver (SQLite:
    a UUID as 32 hex digits, a datetime as text, JSON as text; psycopg: JSON wrapped)."""
    dialect = engine.dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


def _write_back(
    image_id: Any,
    old: dict[str, tuple[str, int | None]],
    outcome: Outcome,
    task_id: str | None,
    now: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The introspected rows to upsert, the audit rows, and the keys that disappeared (`image_id`
    and `now` are copied into the rows as given: as the driver takes them)."""
    rows, changes = [], []
    for key, value in outcome.properties.items():
        previous = old.get(key)
        if previous == (value, outcome.inspector_version):
            continue
        rows.append(
            {
                "image_id": image_id,
                "key": key,
                "source": Source.INTROSPECTED,
                "value": value,
                "inspector_version": outcome.inspector_version,
                "task_id": task_id,
                "set_by": None,
                "set_at": now,
            }
        )
        if previous is None or previous[0] != value:
            old_value = previous[0] if previous else None
            changes.append(_change(image_id, key, old_value, value, Source.INTROSPECTED, task_id, now))
    gone = sorted(key for key in old if key not in outcome.properties)
    changes.extend(
        _change(image_id, key, old[key][0], None, Source.INTROSPECTED, task_id, now) for key in gone
    )
    return rows, changes, gone


def _uuid(image_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(image_id, uuid.UUID):
        return image_id
    try:
        return uuid.UUID(image_id)
    except ValueError:
        raise NotFound(image_id) from None


def _without(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in keys}


def _change(
    image_id: uuid.UUID,
    key: str,
    old: str | None,
    new: str | None,
    source: Source,
    task_id: str | None,
    at: Any,
    *,
    actor: str | None = None,
) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "key": key,
        "old": old,
        "new": new,
        "source": source,
        "actor": actor or ("introspect" if source == Source.INTROSPECTED else "admin"),
        "at": at,
        "task_id": task_id,
    }


def _filters(*, statuses: list[str], formats: list[str]) -> ColumnElement[bool]:
    clause: ColumnElement[bool] = true()
    if statuses:
        clause = clause & images.c.status.in_(statuses)
    if formats:
        clause = clause & images.c.disk_format.in_(formats)
    return clause


def _selection(selection: Selection) -> ColumnElement[bool]:
    selection.require()
    # An image still `queued` has nothing to inspect; every other status can be re-run.
    clause = images.c.status != Status.QUEUED
    clause = clause & _filters(statuses=[str(s) for s in selection.statuses], formats=selection.formats)
    if selection.ids:
        clause = clause & images.c.id.in_(selection.ids)
    if selection.failed:
        clause = clause & (images.c.status == Status.ERROR)
    if selection.inspector_older_than is not None:
        clause = clause & or_(
            images.c.inspector_version.is_(None), images.c.inspector_version < selection.inspector_older_than
        )
    return clause


def _digests_column(digests: Mapping[int, Mapping[str, str]] | None) -> dict[str, dict[str, str]] | None:
    """Member digests as the JSON column keeps them (object keys are strings); None when empty."""
    if not digests:
        return None
    return {str(offset): dict(by_algorithm) for offset, by_algorithm in digests.items()}


def _json(value: Any) -> Any:
    """A JSON column read by a raw statement: PostgreSQL's driver decodes it, SQLite's and
    MariaDB's hand back its text."""
    return json.loads(value) if isinstance(value, str | bytes) else value
