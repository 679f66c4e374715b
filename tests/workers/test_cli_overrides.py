"""What may go into the catalog (the real `introspect` command on PostgreSQL, which enforces column
sizes, where SQLite does not): admin overrides checked by Glance's rules and printed, names and
users within bounds, and `file://` locations confined to INTROSPECT_LOCATION_ROOTS."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.workers.test_cli import assert_one_line, run_cli

LONG = "k" * 100_000


@pytest.fixture
def pg(tmp_path: Path, pg_schema: str, images: dict[str, Path]) -> tuple[Path, dict[str, str], str]:
    """A deployment on its own PostgreSQL schema, with one image (small.qcow2) inspected inline."""
    env = {"INTROSPECT_DATABASE_URL": pg_schema, "INTROSPECT_EAGER": "1", "COLUMNS": "300"}
    result = run_cli(tmp_path, "import", str(images["small.qcow2"]), **env)
    assert result.returncode == 0, result.stderr
    (image_id,) = re.findall(r"^([0-9a-f-]{36})  ", result.stderr, flags=re.MULTILINE)
    return tmp_path, env, image_id


REFUSED = [
    ("status=active", r"key 'status' is an image attribute, not a property: it cannot be set here"),
    ("id=x", r"key 'id' is an image attribute, not a property: .*"),
    ("checksum=x", r"key 'checksum' is an image attribute, not a property: .*"),
    ("introspect_verdict=ok", r"key 'introspect_verdict': introspect_\* keys are written by inspections: --force sets it anyway"),
    ("os_glance_import_task=x", r"key 'os_glance_import_task': the os_glance_ prefix is reserved to Glance"),
    (" =x", r"key ' ': a property key is letters, digits and _ \. : - \(starting with a letter or digit\)"),
    ("a\nb=x", r"key 'a\\nb': a property key is .*"),
    (f"{LONG}=x", r"key 'k{40}\.\.\.' is 100000 characters long: at most 255"),
    ("hw_disk_bus=", r"hw_disk_bus: an empty value: `introspect images unset IMAGE hw_disk_bus` drops an override"),
    ("hw_disk_bus= ", r"hw_disk_bus: an empty value: .*"),
    ("hw_disk_bus=sc\nsi", r"hw_disk_bus: the value 'sc\\nsi' holds control characters \(a newline\?\): one line of text"),
    ("os_distro=\x1b[2J", r"os_distro: the value '\\x1b\[2J' holds control characters .*"),
    (f"os_distro={'v' * 70_000}", r"os_distro: a value of 70000 bytes: at most 65535"),
]  # fmt: skip


def test_set_refuses_what_glance_would_not_take(pg: tuple[Path, dict[str, str], str]):
    tmp_path, env, image_id = pg
    for pair, message in REFUSED:
        result = run_cli(tmp_path, "images", "set", image_id, pair, **env)
        assert_one_line(result, f"Error: {message}")
        assert "DataError" not in result.stderr
    history = run_cli(tmp_path, "images", "history", image_id, "--json", **env)
    assert '"source": "admin"' not in history.stdout  # nothing was written


def test_set_prints_what_changed_and_force_sets_own_keys(pg: tuple[Path, dict[str, str], str]):
    tmp_path, env, image_id = pg
    result = run_cli(tmp_path, "images", "set", image_id, "hw_disk_bus=virtio", "disk_format=raw", **env)
    assert result.returncode == 0, result.stderr
    assert "hw_disk_bus: (none) -> virtio (admin)" in result.stdout
    assert "disk_format: qcow2 (introspected) -> raw (admin)" in result.stdout
    again = run_cli(tmp_path, "images", "set", image_id, "hw_disk_bus=virtio", **env)
    assert again.stdout.strip() == "hw_disk_bus: virtio (admin), unchanged"
    forced = run_cli(tmp_path, "images", "set", image_id, "--force", "introspect_note=checked", **env)
    assert forced.stdout.strip() == "introspect_note: (none) -> checked (admin)"
    unset = run_cli(tmp_path, "images", "unset", image_id, "disk_format", **env)
    assert unset.stdout.strip() == "disk_format: raw (admin) -> qcow2 (introspected)"


def test_names_and_users_beyond_the_columns_are_refused(pg: tuple[Path, dict[str, str], str], images):
    tmp_path, env, image_id = pg
    long = "u" * 300
    refused = {
        ("images", "set", image_id, "--user", long, "os_distro=debian"): "--user 'u{40}...' is 300 characters long: at most 255",
        ("images", "unset", image_id, "--user", long, "os_distro"): "--user 'u{40}...' is 300 characters long: at most 255",
        ("images", "set", image_id, "--user", "al\nice", "os_distro=debian"): r"--user 'al\\nice' holds control characters .*",
        ("import", "--name", long, str(images["disk.vhd"])): "--name 'u{40}...' is 300 characters long: at most 255",
        ("import", "--name", " ", str(images["disk.vhd"])): "--name ' ' is empty: give one with a visible character",
        ("import", "--owner", long, str(images["disk.vhd"])): "--owner 'u{40}...' is 300 characters long: at most 255",
    }  # fmt: skip
    for args, message in refused.items():
        result = run_cli(tmp_path, *args, **env)
        assert_one_line(result, f"Error: {message}")
        assert "DataError" not in result.stderr
    listed = run_cli(tmp_path, "images", "list", "--json", **env)
    assert len(listed.stdout.splitlines()) == 1  # nothing imported


def test_file_locations_are_confined_to_the_roots(tmp_path: Path, images: dict[str, Path]):
    env = {"INTROSPECT_EAGER": "1"}
    shadow = run_cli(tmp_path, "import", "--location", "file:///etc/shadow", **env)
    assert_one_line(
        shadow,
        re.escape(
            "Error: file:///etc/shadow: no directory is open to file:// locations (INTROSPECT_LOCATION_ROOTS): "
            "upload the file instead (`introspect import FILE`)"
        ),
    )
    roots = tmp_path / "images"
    roots.mkdir()
    inside = roots / "disk.vdi"
    inside.write_bytes(images["disk.vdi"].read_bytes())
    (roots / "escape.img").symlink_to("/etc/passwd")
    env["INTROSPECT_LOCATION_ROOTS"] = f"{roots}:{tmp_path / 'other'}"
    for location in ("file:///etc/shadow", (roots / "escape.img").as_uri(), f"file://{roots}/../../x"):
        refused = run_cli(tmp_path, "import", "--location", location, **env)
        assert_one_line(refused, rf"Error: {re.escape(location)}: it is outside INTROSPECT_LOCATION_ROOTS .*")
    accepted = run_cli(tmp_path, "import", "--location", inside.as_uri(), **env)
    assert accepted.returncode == 0, accepted.stderr
    (image_id,) = re.findall(r"^([0-9a-f-]{36})  ", accepted.stderr, flags=re.MULTILINE)
    # narrowed afterwards: download no longer serves it
    env["INTROSPECT_LOCATION_ROOTS"] = str(tmp_path / "other")
    refused = run_cli(tmp_path, "download", image_id, "-o", str(tmp_path / "copy"), **env)
    assert_one_line(
        refused, rf"Error: {re.escape(inside.as_uri())}: it is outside INTROSPECT_LOCATION_ROOTS .*"
    )
    assert not (tmp_path / "copy").exists()
    # an upload stays the store's own, whatever the roots
    uploaded = run_cli(tmp_path, "import", str(images["disk.vdi"]), **env)
    (upload_id,) = re.findall(r"^([0-9a-f-]{36})  ", uploaded.stderr, flags=re.MULTILINE)
    assert run_cli(tmp_path, "download", upload_id, "-o", str(tmp_path / "copy"), **env).returncode == 0
    assert (tmp_path / "copy").read_bytes() == images["disk.vdi"].read_bytes()


def test_a_disk_format_override_is_counted_by_the_audit(tmp_path: Path, images: dict[str, Path]):
    env = {"INTROSPECT_EAGER": "1"}
    imported = run_cli(tmp_path, "import", str(images["small.qcow2"]), str(images["disk.vhd"]), **env)
    overridden, agreeing = re.findall(r"^([0-9a-f-]{36})  ", imported.stderr, flags=re.MULTILINE)
    assert run_cli(tmp_path, "images", "set", overridden, "disk_format=vmdk", **env).returncode == 0
    assert run_cli(tmp_path, "images", "set", agreeing, "disk_format=vhd", **env).returncode == 0
    audit = run_cli(tmp_path, "rerun", "--all", "--dry-run", **env)
    assert audit.returncode == 0, audit.stderr
    assert (
        f"mismatch {overridden}: disk_format overridden by an admin as vmdk but the content is qcow2"
        in audit.stdout
    )
    assert f"mismatch {agreeing}" not in audit.stdout
    assert "1 image(s) disagree with their last inspection" in audit.stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_delete_keeps_the_history_in_a_tombstone(
    tmp_path: Path, images: dict[str, Path], backend: str, request
):
    env = {"INTROSPECT_EAGER": "1"}
    if backend == "postgresql":
        env["INTROSPECT_DATABASE_URL"] = request.getfixturevalue("pg_schema")
    imported = run_cli(tmp_path, "import", str(images["small.qcow2"]), **env)
    (image_id,) = re.findall(r"^([0-9a-f-]{36})  ", imported.stderr, flags=re.MULTILINE)
    assert (
        run_cli(tmp_path, "images", "set", image_id, "os_distro=debian", "--user", "alice", **env).returncode
        == 0
    )
    before = run_cli(tmp_path, "images", "history", image_id, "--json", **env).stdout
    assert run_cli(tmp_path, "delete", image_id, **env).returncode == 0
    gone = run_cli(tmp_path, "images", "history", image_id, **env)
    assert_one_line(
        gone, re.escape(f"Error: no image with id {image_id}: `introspect images list` shows the ids")
    )
    kept = run_cli(tmp_path, "images", "history", "--deleted", image_id, "--json", **env)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout == before and '"actor": "alice"' in kept.stdout
    table = run_cli(
        tmp_path, "images", "history", "--deleted", image_id, "-c", "key", "-c", "actor", **env
    ).stdout
    assert re.search(r"│ os_distro\s+│ alice\s+│", table)
    never = run_cli(tmp_path, "images", "history", "--deleted", str(uuid.UUID(int=9)), **env)
    assert_one_line(never, r"Error: no deleted image with id 00000000-0000-0000-0000-000000000009: .*")
