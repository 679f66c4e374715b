"""Bad input is one line naming the field, the value and what is accepted (the real `introspect`
command, run as a subprocess), and read-only commands change nothing."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.workers.test_cli import assert_one_line, run_cli

USAGE = 2
ACCEPTED_URLS = re.escape(
    "use sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
    "or mariadb://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
)


def assert_usage_line(result, pattern: str) -> None:
    assert result.returncode == USAGE, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.fullmatch(pattern, result.stderr.strip()), result.stderr


# -- item 4: database URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "mysql+mysqldb://user:secret@db.example/catalog",
            r"its driver is not installed \(No module named .*\)",
        ),
        ("garbage", "not a database URL"),
        ("foo://host/db", "an unknown kind of database"),
        ("postgresql://user:secret@host:notaport/db", r"not a database URL \(.*'notaport'\)"),
    ],
    ids=["driver", "garbage", "unknown", "port"],
)
def test_a_bad_database_url_is_one_line(tmp_path: Path, images: dict[str, Path], url: str, reason: str):
    shown = re.escape(url.replace(":secret@", ":***@"))
    for args in (("images", "list"), ("db", "upgrade"), ("import", "--inline", str(images["small.qcow2"]))):
        result = run_cli(tmp_path, *args, INTROSPECT_DATABASE_URL=url)
        assert_one_line(result, rf"Error: INTROSPECT_DATABASE_URL '{shown}': {reason}: {ACCEPTED_URLS}")
        assert "secret" not in result.stderr
    assert not (tmp_path / "data").exists()


# -- item 4: policies -------------------------------------------------------------------------------------

POLICY_ERRORS = [
    ("[1, 2]", r"a policy is a JSON object \(.*\), not list"),
    (
        '{"severty": {}}',
        "severty: unknown key: the keys are severity, report_only, vmdk_create_types, max_virtual_size, verify_manifest, guest_os_distro",
    ),
    ('{"severity": {"qcow2.backing_file": "rejectt"}}', "severity.qcow2.backing_file: 'rejectt' is not a severity: use reject, warn, info"),
    ('{"severity": {"qcow2.no_such_rule": "warn"}}', "severity: unknown rule code 'qcow2.no_such_rule': `introspect rules` lists the codes"),
    ('{"severity": {"nope.*": "warn"}}', r"severity: unknown rule code 'nope\.\*': `introspect rules` lists the codes"),
    ('{"severity": ["qcow2.backing_file"]}', r"severity: an object of CODE: LEVEL is expected, not \['qcow2.backing_file'\]"),
    ('{"max_virtual_size": "big"}', "max_virtual_size = 'big': Input should be a valid integer.*"),
    ("{not json", "not JSON: .*"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "message"), POLICY_ERRORS, ids=[m[:20] for _, m in POLICY_ERRORS])
def test_a_bad_policy_is_one_line(tmp_path: Path, images: dict[str, Path], content: str, message: str):
    policy = tmp_path / "policy.json"
    policy.write_text(content)
    result = run_cli(tmp_path, "inspect", "--policy", str(policy), str(images["small.qcow2"]))
    assert_usage_line(result, rf"Error: --policy {re.escape(str(policy))}: {message}")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("qcow2.no_such_rule=warn", "--severity: unknown rule code 'qcow2.no_such_rule': `introspect rules` lists the codes"),
        ("qcow2.backing_file=fatal", "--severity qcow2.backing_file: 'fatal' is not a severity: expected CODE=reject|warn|info"),
        ("novalue", "--severity: 'novalue': expected CODE=reject|warn|info"),
    ],
)  # fmt: skip
def test_a_bad_severity_is_one_line(tmp_path: Path, images: dict[str, Path], option: str, message: str):
    result = run_cli(tmp_path, "inspect", "--severity", option, str(images["small.qcow2"]))
    assert_usage_line(result, re.escape(f"Error: {message}"))


def test_a_good_policy_with_a_glob_still_works(tmp_path: Path, images: dict[str, Path]):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"severity": {"qcow2.*": "info"}}))
    result = run_cli(tmp_path, "inspect", "--policy", str(policy), "--json", str(images["backed.qcow2"]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "ok"


# -- item 4: a malformed id ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["not-an-id", "http://glance.example:9292/v2/images/nope"])
def test_a_malformed_id_points_to_images_list(tmp_path: Path, ref: str):
    result = run_cli(tmp_path, "images", "show", ref)
    assert result.returncode == USAGE and "Traceback" not in result.stderr
    assert (
        f"'{ref}' does not end in an image id (a UUID): `introspect images list` shows the ids"
        in result.stderr
    )
    assert "glance image-list" not in result.stderr


# -- item 5: read-only commands change nothing -----------------------------------------------------------

READS = [
    ("images", "list"),
    ("images", "show", str(uuid.UUID(int=7))),
    ("images", "history", str(uuid.UUID(int=7))),
    ("download", str(uuid.UUID(int=7))),
    ("rerun", "--all", "--dry-run"),
]


@pytest.mark.parametrize("args", READS, ids=lambda a: " ".join(a[:2]))
def test_a_read_creates_no_catalog_in_the_data_directory(tmp_path: Path, args: tuple[str, ...]):
    result = run_cli(tmp_path, *args)
    database = tmp_path / "data" / "catalog.sqlite"
    assert_one_line(
        result,
        re.escape(
            f"Error: the catalog database sqlite:///{database} does not exist: `introspect db upgrade` creates it"
        )
        + r" \(.*\)",
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "args", [*READS, ("import", "--inline", "{image}"), ("db", "upgrade")], ids=lambda a: " ".join(a[:2])
)
def test_a_made_up_sqlite_directory_is_an_error(
    tmp_path: Path, images: dict[str, Path], args: tuple[str, ...]
):
    made_up = tmp_path / "no" / "such" / "dir"
    url = f"sqlite:///{made_up / 'catalog.sqlite'}"
    args = tuple(a.format(image=images["small.qcow2"]) for a in args)
    result = run_cli(tmp_path, *args, INTROSPECT_DATABASE_URL=url)
    assert_one_line(result, rf"Error: the catalog database {re.escape(url)} .*")
    assert not (tmp_path / "no").exists()


def test_the_default_data_directory_is_created_by_a_write(tmp_path: Path, images: dict[str, Path]):
    result = run_cli(tmp_path, "import", "--inline", str(images["small.qcow2"]))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "catalog.sqlite").is_file()
    assert run_cli(tmp_path, "images", "list").returncode == 0


@pytest.mark.parametrize("args", READS, ids=lambda a: " ".join(a[:2]))
def test_a_read_on_postgresql_creates_no_table(tmp_path: Path, pg_schema: str, args: tuple[str, ...]):
    result = run_cli(tmp_path, *args, INTROSPECT_DATABASE_URL=pg_schema)
    shown = pg_schema.replace("postgresql+psycopg", "postgresql+psycopg")
    assert_one_line(
        result, rf"Error: the catalog database {re.escape(shown)} holds no introspect catalog: .*"
    )
    schema = pg_schema.rsplit("%3D", 1)[1]
    engine = create_engine(pg_schema)
    try:
        assert inspect(engine).get_table_names(schema=schema) == []
        # and once `db upgrade` made it, the same read works
        assert run_cli(tmp_path, "db", "upgrade", INTROSPECT_DATABASE_URL=pg_schema).returncode == 0
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM images")).scalar() == 0
        assert run_cli(tmp_path, "images", "list", INTROSPECT_DATABASE_URL=pg_schema).returncode == 0
    finally:
        engine.dispose()
