"""What only the SQL catalog does, on SQLite, PostgreSQL and MariaDB (every test taking `catalog`
runs on all three): its status table, audit history, migrations and hot path. What every catalog does is checked once for
all of them in test_contract.py."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from itertools import product

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, create_engine, text

from tests.workers.conftest import PG_ADMIN_URL, SQL_URLS
from workers.catalog import TRANSITIONS, Catalog, Outcome, Selection, Source, Status
from workers.catalog.models import Base
from workers.catalog.sql import (
    CLAIM_POSTGRESQL,
    head_revision,
    make_engine,
    normalize_url,
    open_catalog,
    upgrade,
)
from workers.errors import CatalogConfigError, CatalogUnavailable, InvalidTransition, NotFound


def outcome(properties: dict[str, str], *, status: Status = Status.ACTIVE, version: int = 1, **extra):
    return Outcome(
        status=status,
        verdict={Status.ACTIVE: "ok", Status.REJECTED: "rejected"}.get(status, "error"),
        findings=extra.pop("findings", []),
        inspected_format=extra.pop("inspected_format", "qcow2"),
        inspected_virtual_size=extra.pop("inspected_virtual_size", 7 << 20),
        inspector_version=version,
        properties=properties,
        **extra,
    )


def saved(catalog: Catalog, **create) -> uuid.UUID:
    """An image with data, waiting for its first inspection (`saving`)."""
    image_id = catalog.create(**create)
    catalog.start_upload(image_id)
    catalog.set_data(image_id, location="file:///nowhere", size=1, checksum="0" * 64)
    return image_id


def inspected(catalog: Catalog, image_id: uuid.UUID, properties: dict[str, str], **extra) -> bool:
    claim = catalog.claim(image_id, token=uuid.uuid4().hex, task_id="task-1")
    return catalog.finish(claim, outcome(properties, **extra), task_id="task-1")


def walk_to(catalog: Catalog, status: Status) -> uuid.UUID:
    """An image brought to `status` through allowed moves only."""
    if status == Status.QUEUED:
        return catalog.create()
    if status == Status.SAVING:
        return saved(catalog)
    image_id = saved(catalog)
    claim = catalog.claim(image_id, token="t", task_id=None)
    if status != Status.IMPORTING:
        catalog.finish(claim, outcome({}, status=status), task_id=None)
    return image_id


def test_migrations_create_exactly_the_models(catalog: Catalog):
    with catalog.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == head_revision()
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_runs_once(catalog: Catalog):
    assert upgrade(catalog.engine) is False


def test_a_new_image_is_queued_with_what_was_declared(catalog: Catalog):
    image_id = catalog.create(name="disk", disk_format="vmdk", container_format="bare", owner="ops")
    record = catalog.get(image_id)
    assert (record.name, record.status, record.disk_format) == ("disk", Status.QUEUED, "vmdk")
    assert record.owner == "ops"
    assert record.created_at == record.updated_at
    assert record.size is None and record.virtual_size is None and record.deliveries == 0


@pytest.mark.parametrize(("seen", "to"), list(product(Status, Status)), ids=lambda s: str(s))
def test_every_transition_is_checked_against_the_table(catalog: Catalog, seen: Status, to: Status):
    image_id = walk_to(catalog, seen)
    assert catalog.get(image_id).status == seen
    if to in TRANSITIONS[seen]:
        assert catalog.transition(image_id, to) == seen
        assert catalog.get(image_id).status == to
    else:
        with pytest.raises(InvalidTransition, match=f"^image {image_id} is {seen}: it cannot become {to}$"):
            catalog.transition(image_id, to)
        assert catalog.get(image_id).status == seen


def test_data_is_set_only_while_saving(catalog: Catalog):
    image_id = catalog.create()
    with pytest.raises(InvalidTransition, match="can only be set while saving"):
        catalog.set_data(image_id, location="file:///x", size=1, checksum=None)


def test_a_stale_write_back_leaves_no_audit_row(catalog: Catalog):
    """(Claims and write-backs themselves: the contract suite, test_contract.py.)"""
    image_id = saved(catalog)
    stale = catalog.claim(image_id, token="first", task_id="a")
    newer = catalog.claim(image_id, token="second", task_id="b")
    assert catalog.finish(stale, outcome({"k": "stale"}), task_id="a") is False
    assert catalog.finish(newer, outcome({"k": "new"}), task_id="b") is True
    assert [(c.key, c.new, c.task_id) for c in catalog.history(image_id)] == [("k", "new", "b")]


def test_concurrent_claims_take_the_image_one_at_a_time(catalog: Catalog):
    image_id = saved(catalog)
    barrier = threading.Barrier(8)
    claims = []

    def claim(n: int) -> None:
        barrier.wait()
        claims.append(catalog.claim(image_id, token=f"t{n}", task_id=None))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(c.deliveries for c in claims) == list(range(1, 9))
    winners = [c for c in claims if catalog.finish(c, outcome({}), task_id=None)]
    assert len(winners) == 1
    assert winners[0].deliveries == 8


def test_on_postgresql_only_the_claim_commits_asynchronously(pg_catalog: Catalog):
    """The claim sets synchronous_commit off for its own transaction (what a server crash could
    lose, a retry redoes); the session, and so the write-back, stays synchronous."""
    catalog = pg_catalog
    image_id = saved(catalog)
    params = {"id": image_id, "token": "t", "now": datetime.now(UTC)}
    with catalog.engine.connect() as connection:  # one explicit transaction, to look inside it
        claimed = connection.execute(text(CLAIM_POSTGRESQL), params).all()
        inside = connection.execute(text("SHOW synchronous_commit")).scalar_one()
        connection.commit()
        after = connection.execute(text("SHOW synchronous_commit")).scalar_one()
    assert (len(claimed), inside, after) == (1, "off", "on")
    claim = catalog.claim(image_id, token="u", task_id=None)  # the pooled driver path
    assert claim.deliveries == 2
    assert catalog.finish(claim, outcome({"k": "v"}), task_id=None) is True
    with catalog.engine.connect() as connection:
        assert connection.execute(text("SHOW synchronous_commit")).scalar_one() == "on"


def test_write_back_replaces_introspected_values_and_keeps_admin_ones(catalog: Catalog):
    image_id = saved(catalog)
    inspected(catalog, image_id, {"disk_format": "qcow2", "a": "1", "b": "2", "c": "3"})
    catalog.set_admin(image_id, {"a": "admin-a", "c": "admin-c", "d": "admin-d"}, actor="alice")
    inspected(catalog, image_id, {"disk_format": "qcow2", "a": "10", "e": "5"})  # b and c disappeared
    assert catalog.effective(image_id) == {
        "disk_format": "qcow2",
        "a": "admin-a",
        "c": "admin-c",
        "d": "admin-d",
        "e": "5",
    }
    assert catalog.introspected(image_id) == {"disk_format": "qcow2", "a": "10", "e": "5"}
    shown = {p.key: p for p in catalog.properties(image_id)}
    assert shown["a"].source == Source.ADMIN and shown["a"].introspected.value == "10"
    assert shown["a"].admin.set_by == "alice"
    assert shown["e"].source == Source.INTROSPECTED and shown["e"].introspected.inspector_version == 1
    assert shown["e"].introspected.task_id == "task-1"
    catalog.unset_admin(image_id, ["a", "c"], actor="bob")
    assert catalog.effective(image_id) == {"disk_format": "qcow2", "a": "10", "d": "admin-d", "e": "5"}
    changes = [(c.key, c.old, c.new, c.source, c.actor) for c in catalog.history(image_id)]
    assert changes == [
        ("disk_format", None, "qcow2", Source.INTROSPECTED, "introspect"),
        ("a", None, "1", Source.INTROSPECTED, "introspect"),
        ("b", None, "2", Source.INTROSPECTED, "introspect"),
        ("c", None, "3", Source.INTROSPECTED, "introspect"),
        ("a", None, "admin-a", Source.ADMIN, "alice"),
        ("c", None, "admin-c", Source.ADMIN, "alice"),
        ("d", None, "admin-d", Source.ADMIN, "alice"),
        ("a", "1", "10", Source.INTROSPECTED, "introspect"),
        ("e", None, "5", Source.INTROSPECTED, "introspect"),
        ("b", "2", None, Source.INTROSPECTED, "introspect"),
        ("c", "3", None, Source.INTROSPECTED, "introspect"),
        ("a", "admin-a", None, Source.ADMIN, "bob"),
        ("c", "admin-c", None, Source.ADMIN, "bob"),
    ]


def test_keys_are_compared_byte_for_byte_and_values_keep_any_unicode(catalog: Catalog):
    """MariaDB's default collation would make `Key` and `key` one property, and its utf8 three
    bytes a character at most: the catalog's tables say utf8mb4 and a binary collation."""
    image_id = saved(catalog)
    values = {"os_distro": "debian", "OS_DISTRO": "other", "note": "Grüße 🖥️ \u202etxt.exe"}
    inspected(catalog, image_id, values)
    catalog.set_admin(image_id, {"Os_Distro": "admin"}, actor="alice")
    assert catalog.effective(image_id) == values | {"Os_Distro": "admin"}
    assert catalog.introspected(image_id) == values


def test_the_same_inspection_twice_gives_the_same_catalog_and_no_audit_rows(catalog: Catalog):
    image_id = saved(catalog)
    inspected(catalog, image_id, {"a": "1", "b": "2"})
    before = (catalog.values(image_id), catalog.history(image_id))
    inspected(catalog, image_id, {"a": "1", "b": "2"})
    assert (catalog.values(image_id), catalog.history(image_id)) == before


def test_a_new_inspector_version_is_recorded_without_an_audit_row(catalog: Catalog):
    image_id = saved(catalog)
    inspected(catalog, image_id, {"a": "1"})
    inspected(catalog, image_id, {"a": "1"}, version=2)
    assert [v.inspector_version for v in catalog.values(image_id)] == [2]
    assert len(catalog.history(image_id)) == 1


def test_setting_the_same_admin_value_again_is_not_a_change(catalog: Catalog):
    image_id = saved(catalog)
    catalog.set_admin(image_id, {"a": "x"}, actor="alice")
    catalog.set_admin(image_id, {"a": "x"}, actor="alice")
    assert len(catalog.history(image_id)) == 1


def test_declared_format_and_virtual_size_are_adopted_once_and_never_rewritten(catalog: Catalog):
    image_id = saved(catalog)
    inspected(catalog, image_id, {}, adopt_format="qcow2", adopt_virtual_size=7 << 20)
    inspected(
        catalog,
        image_id,
        {},
        adopt_format="vmdk",
        adopt_virtual_size=9 << 20,
        inspected_format="vmdk",
        inspected_virtual_size=9 << 20,
    )
    record = catalog.get(image_id)
    assert (record.disk_format, record.virtual_size) == ("qcow2", 7 << 20)
    assert record.mismatches == [
        "disk_format qcow2 but the content is vmdk",
        f"virtual_size {7 << 20} but the content says {9 << 20}",
    ]
    assert [r.id for r in catalog.mismatched()] == [image_id]


def test_a_raw_image_that_is_an_iso_is_no_mismatch(catalog: Catalog):
    image_id = saved(catalog, disk_format="raw")
    inspected(catalog, image_id, {}, inspected_format="iso")
    assert catalog.get(image_id).mismatches == []
    assert list(catalog.mismatched()) == []


def test_all_walks_the_whole_catalog_a_page_at_a_time(catalog: Catalog):
    """`all` and the paging over the whole table (each criterion: the contract suite, which
    names its images by id)."""
    ids = [saved(catalog) for _ in range(23)]
    for image_id in ids[::2]:
        inspected(catalog, image_id, {})
    catalog.create()  # queued: nothing to inspect, never selected
    pages = list(catalog.select_ids(Selection(all=True), batch=5))
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [i for page in pages for i in page] == sorted(ids)
    assert catalog.count(Selection(all=True)) == 23


def test_images_by_status_and_deletion(catalog: Catalog):
    first = saved(catalog)
    inspected(catalog, first, {"a": "1"})
    saved(catalog)
    catalog.create()
    assert catalog.counts() == {"active": 1, "saving": 1, "queued": 1}
    assert [r.status for r in catalog.images(statuses=["active", "queued"])] != []
    catalog.set_admin(first, {"b": "2"}, actor="alice")
    assert catalog.delete(first).id == first
    with pytest.raises(NotFound):
        catalog.history(first)
    assert catalog.counts() == {"saving": 1, "queued": 1}


@pytest.mark.parametrize("catalog_url", SQL_URLS[1:], indirect=True)
def test_first_uses_at_once_migrate_once(catalog_url: str):
    """Workers starting together on a new database server's database (an advisory lock on
    PostgreSQL, a named one on MariaDB): one migrates, the others wait and find it done."""
    engines = [make_engine(catalog_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    ran: list[bool] = []
    errors: list[BaseException] = []

    def first_use(engine) -> None:
        barrier.wait()
        try:
            ran.append(upgrade(engine))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=first_use, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert (errors, sorted(ran)) == ([], [False, False, False, True])


def test_open_catalog_migrates_on_first_use_and_is_cached_per_process(catalog_url: str):
    opened = open_catalog(catalog_url)
    assert opened is open_catalog(catalog_url)
    assert opened.counts() == {}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres:secret@127.0.0.1:1/test",
            "postgresql+psycopg://postgres:***@127.0.0.1:1/test",
        ),
        ("sqlite:////proc/no/such/dir/catalog.sqlite", "sqlite:////proc/no/such/dir/catalog.sqlite"),
        (
            "mariadb://introspect:secret@127.0.0.1:1/test",
            "mariadb+pymysql://introspect:***@127.0.0.1:1/test?charset=utf8mb4",
        ),
    ],
)
def test_an_unreachable_database_is_one_clear_error(url: str, shown: str):
    message = f"^the catalog database {re.escape(shown)} is unavailable: "
    with pytest.raises(CatalogUnavailable, match=message):
        upgrade(make_engine(url))


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mariadb://u:p@h/db", "mariadb+pymysql://u:p@h/db?charset=utf8mb4"),
        ("mysql://u:p@h:3306/db", "mysql+pymysql://u:p@h:3306/db?charset=utf8mb4"),
        ("mysql+pymysql://u@h/db?charset=utf8", "mysql+pymysql://u@h/db?charset=utf8"),
        ("sqlite:///x.sqlite", "sqlite:///x.sqlite"),
    ],
)
def test_a_url_without_a_driver_gets_the_one_the_pipeline_installs(url: str, driver: str):
    assert normalize_url(url).render_as_string(hide_password=False) == driver


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "oracle://scott:tiger@db/orcl",
            "the catalog database URL oracle://scott:***@db/orcl names 'oracle', a database the catalog "
            "does not support: use sqlite, postgresql or mariadb (mysql)",
        ),
        (
            "catalog.sqlite",
            "the catalog database URL 'catalog.sqlite' is not a URL: use sqlite:///PATH, "
            "postgresql://USER@HOST/DB or mariadb://USER:PASSWORD@HOST/DB",
        ),
        (
            "mariadb+nosuchdriver://u:secret@h/db",
            "the catalog database mariadb+nosuchdriver://u:***@h/db?charset=utf8mb4 needs the driver "
            "'nosuchdriver', which cannot be loaded (Can't load plugin: sqlalchemy.dialects:"
            "mariadb.nosuchdriver): install introspect-images[pipeline]",
        ),
    ],
)
def test_a_url_the_catalog_cannot_use_is_one_clear_error(url: str, message: str):
    with pytest.raises(CatalogConfigError, match=f"^{re.escape(message)}$"):
        open_catalog(url)


@pytest.mark.mariadb
def test_on_mariadb_the_catalog_reads_committed_in_utf8mb4(mariadb_database: str):
    """The server's defaults (REPEATABLE READ, latin1) are not what the catalog runs in."""
    catalog = migrated(mariadb_database)
    try:
        with catalog.engine.connect() as connection:
            isolation = connection.execute(text("SELECT @@tx_isolation")).scalar_one()
            tables = connection.execute(
                text(
                    "SELECT table_name, table_collation FROM information_schema.tables"
                    " WHERE table_schema = DATABASE() AND table_name <> 'alembic_version'"
                )
            ).all()
        assert isolation == "READ-COMMITTED"
        assert sorted(tables) == [
            ("deleted_images", "utf8mb4_bin"),
            ("image_properties", "utf8mb4_bin"),
            ("images", "utf8mb4_bin"),
            ("property_history", "utf8mb4_bin"),
        ]
    finally:
        catalog.dispose()


# -- the hot path (claim and write-back go straight to the driver): its failures --------------------


def migrated(url: str | URL) -> Catalog:
    """A catalog of its own on `url` (not the process's cached one): dispose it when done."""
    engine = make_engine(url)
    upgrade(engine)
    return Catalog(engine)


def test_the_write_back_stores_the_outcome_as_the_models_read_it(catalog: Catalog):
    image_id = saved(catalog)
    findings = [{"code": "qcow2.backing_file", "severity": "warn", "message": "a backing file"}]
    claim = catalog.claim(image_id, token="t", task_id="task-9")
    assert catalog.finish(claim, outcome({"a": "1"}, findings=findings), task_id="task-9", job_id="job-1")
    record = catalog.get(image_id)
    assert (record.verdict, record.findings, record.inspected_format) == ("ok", findings, "qcow2")
    assert (record.inspection_task, record.job_id, record.inspector_version) == ("task-9", "job-1", 1)
    assert record.inspected_at is not None and record.inspected_at.tzinfo is not None
    assert record.inspected_at == record.updated_at >= record.created_at
    (value,) = catalog.values(image_id)
    assert (value.task_id, value.set_at, value.set_by) == ("task-9", record.inspected_at, None)
    assert [(c.at, c.actor) for c in catalog.history(image_id)] == [(record.inspected_at, "introspect")]


def test_a_write_back_interrupted_midway_writes_nothing_and_keeps_no_lock(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
):
    """A time limit can stop a task anywhere: the write-back is all or nothing, and on SQLite
    the write lock goes with the transaction (on MariaDB, the image row's lock)."""
    image_id = saved(catalog)
    inspected(catalog, image_id, {"a": "1"})
    claim = catalog.claim(image_id, token="t", task_id="task-2")

    class Stopped(BaseException):
        pass

    def stop(*_: object) -> None:
        raise Stopped

    if catalog.engine.dialect.name != "postgresql":  # the diff runs between the claim's CAS and the rows
        monkeypatch.setattr("workers.catalog.sql._write_back", stop)
        with pytest.raises(Stopped):
            catalog.finish(claim, outcome({"a": "2"}), task_id="task-2")
        monkeypatch.undo()
    other = migrated(catalog.engine.url)  # another process, as far as locks go
    try:
        assert other.get(image_id).claim_token == "t"  # still claimed by the interrupted delivery
        assert other.introspected(image_id) == {"a": "1"}
        other.set_admin(image_id, {"b": "x"}, actor="alice")  # takes the write lock at once
    finally:
        other.dispose()
    assert catalog.finish(claim, outcome({"a": "2"}), task_id="task-2") is True
    assert catalog.introspected(image_id) == {"a": "2"}


def test_a_locked_sqlite_catalog_is_transient_and_counts_no_delivery(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    catalog = migrated(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    image_id = saved(catalog)
    monkeypatch.setattr("workers.catalog.sql.SQLITE_LOCK_TIMEOUT", 0.05)
    holder = sqlite3.connect(tmp_path / "catalog.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogUnavailable, match=r"is unavailable: database is locked$"):
            catalog.claim(image_id, token="t", task_id=None)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert catalog.get(image_id).deliveries == 0
    assert catalog.claim(image_id, token="t", task_id=None).deliveries == 1
    catalog.dispose()


def test_a_dropped_postgresql_connection_is_transient_and_replaced(pg_schema: str):
    """The server ends the catalog's connections between the claim and the write-back: the
    write-back fails as CatalogUnavailable (the task retries), and the next one reconnects."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    catalog = migrated(f"{pg_schema}&application_name={name}")
    image_id = saved(catalog)
    claim = catalog.claim(image_id, token="t", task_id=None)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :n"
                ),
                {"n": name},
            ).scalar_one()
    finally:
        admin.dispose()
    assert ended >= 1
    with pytest.raises(CatalogUnavailable, match=r"^the catalog database postgresql"):
        catalog.finish(claim, outcome({"a": "1"}), task_id=None)
    assert catalog.finish(claim, outcome({"a": "1"}), task_id=None) is True
    catalog.dispose()
    reader = migrated(pg_schema)  # the catalog's other pool lost its connection too
    try:
        assert reader.introspected(image_id) == {"a": "1"}
    finally:
        reader.dispose()
