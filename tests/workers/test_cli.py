"""The pipeline's commands: flows run in-process with `--inline` (click's runner), and every
bad-input message checked on the real `introspect` command (one line, exit 1, no traceback)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import introspect
from introspect.cli import main
from tests.workers.services import INTROSPECT, process_env
from workers.catalog import Catalog, open_catalog
from workers.settings import get_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh embedded deployment (SQLite + local store under tmp_path), inline tasks."""
    for name in list(os.environ):
        if name.startswith("INTROSPECT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INTROSPECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INTROSPECT_EAGER", "1")
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def cli(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def catalog_of(data_dir: Path) -> Catalog:
    return open_catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")


def ids_of(result: Result) -> list[str]:
    return re.findall(r"^([0-9a-f-]{36})  ", result.stderr, flags=re.MULTILINE)


def test_import_inline_wait_shows_what_the_library_reports(data_dir: Path, images: dict[str, Path]):
    result = cli("import", "--wait", "-v", str(images["small.qcow2"]), str(images["stream.vmdk"]))
    ids = ids_of(result)
    assert len(ids) == 2
    catalog = catalog_of(data_dir)
    for image_id, name in zip(ids, ("small.qcow2", "stream.vmdk"), strict=True):
        report = introspect.inspect(images[name])
        assert catalog.effective(image_id) == report.properties
        record = catalog.get(image_id)
        assert record.name == name and record.size == images[name].stat().st_size
        assert f"{image_id}  {name}  {record.status}" in result.stdout
        for key, value in report.properties.items():
            assert re.search(rf"{re.escape(key)}\s+│ {re.escape(value)}\s+│ introspected", result.stdout)


def test_list_show_set_unset_history(data_dir: Path, images: dict[str, Path]):
    small = str(images["small.qcow2"])
    (image_id,) = ids_of(cli("import", "--disk-format", "qcow2", "--name", "base", small))
    cli("import", str(images["stream.vmdk"]))
    listed = [json.loads(line) for line in cli("images", "list", "--json").stdout.splitlines()]
    assert len(listed) == 2
    assert [
        r["id"]
        for r in json.loads(
            "["
            + ",".join(cli("images", "list", "--json", "--disk-format", "qcow2").stdout.splitlines())
            + "]"
        )
    ] == [image_id]
    assert "base" in cli("images", "list").stdout

    cli("images", "set", image_id, "hw_disk_bus=virtio", "os_distro=debian", "--user", "alice")
    cli("rerun", image_id)
    shown = json.loads(cli("images", "show", image_id, "--json").stdout)
    props = {p["key"]: p for p in shown["properties"]}
    assert props["hw_disk_bus"]["value"] == "virtio" and props["hw_disk_bus"]["source"] == "admin"
    assert props["hw_disk_bus"]["admin"]["set_by"] == "alice"
    for key, value in introspect.inspect(images["small.qcow2"], expect="qcow2").properties.items():
        if key not in ("hw_disk_bus", "os_distro"):
            assert props[key]["value"] == value and props[key]["source"] == "introspected"
            assert props[key]["introspected"]["inspector_version"] == introspect.INSPECTOR_VERSION

    cli("images", "unset", image_id, "os_distro", "--user", "bob")
    history = [json.loads(line) for line in cli("images", "history", image_id, "--json").stdout.splitlines()]
    admin = [(h["key"], h["old"], h["new"], h["source"], h["actor"]) for h in history if h["task_id"] is None]
    assert admin == [
        ("hw_disk_bus", None, "virtio", "admin", "alice"),
        ("os_distro", None, "debian", "admin", "alice"),
        ("os_distro", "debian", None, "admin", "bob"),
    ]
    assert all(h["task_id"] for h in history if h["source"] == "introspected")
    assert "os_distro" in cli("images", "history", image_id).stdout


def test_rerun_dry_run_lists_the_selection_and_every_mismatch(data_dir: Path, images: dict[str, Path]):
    declared_vmdk = CliRunner().invoke(main, ["import", "--disk-format", "vmdk", str(images["small.qcow2"])])
    assert declared_vmdk.exit_code == 1  # rejected: the content is qcow2
    (vmdk_id,) = ids_of(declared_vmdk)
    (qcow2_id,) = ids_of(cli("import", str(images["huge.qcow2"])))
    result = cli("rerun", "--all", "--dry-run")
    assert f"would re-run {vmdk_id}" in result.stdout and f"would re-run {qcow2_id}" in result.stdout
    assert "2 image(s) would be re-run" in result.stdout
    if catalog_of(data_dir).get(vmdk_id).inspected_format == "qcow2":
        assert f"mismatch {vmdk_id}: disk_format vmdk but the content is qcow2" in result.stdout
        assert "1 image(s) disagree with their last inspection" in result.stdout
    only = cli("rerun", "--disk-format", "vmdk", "--dry-run").stdout
    assert f"would re-run {vmdk_id}" in only and qcow2_id not in only.split("image(s) would")[0]
    # for scripts: a row per image and action, the counts on stderr
    rows = cli("rerun", "--disk-format", "vmdk", "--dry-run", "-f", "value", "-c", "action", "-c", "id")
    assert rows.stdout.splitlines() == [f"rerun {vmdk_id}", f"mismatch {vmdk_id}"]
    assert rows.stderr.strip() == "1 image(s) would be re-run; 1 image(s) disagree with their last inspection"
    as_json = [json.loads(line) for line in cli("rerun", "--all", "--dry-run", "--json").stdout.splitlines()]
    assert {
        "action": "mismatch",
        "id": vmdk_id,
        "problems": ["disk_format vmdk but the content is qcow2"],
    } in as_json
    assert sorted(row["id"] for row in as_json if row["action"] == "rerun") == sorted([vmdk_id, qcow2_id])


def test_rerun_inline_summary(data_dir: Path, images: dict[str, Path]):
    cli("import", str(images["small.qcow2"]), str(images["disk.vhd"]))
    result = cli("rerun", "--all")
    assert re.search(r"ran 2 inspection\(s\) \(job [0-9a-f]{32}\)", result.stderr)
    counts = catalog_of(data_dir).counts()
    for status, count in counts.items():
        assert re.search(rf"{status}\s+│ {count}", result.stdout)


def test_location_is_registered_without_copying(
    data_dir: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("INTROSPECT_LOCATION_ROOTS", str(images["disk.vdi"].parent))
    get_settings.cache_clear()
    location = images["disk.vdi"].as_uri()
    (image_id,) = ids_of(cli("import", "--location", location))
    record = catalog_of(data_dir).get(image_id)
    assert record.location == location and record.checksum is None
    assert record.size == images["disk.vdi"].stat().st_size
    assert not (data_dir / "images").exists()
    assert catalog_of(data_dir).effective(image_id) == introspect.inspect(images["disk.vdi"]).properties


def test_download_and_delete(data_dir: Path, images: dict[str, Path], tmp_path: Path):
    (image_id,) = ids_of(cli("import", str(images["stream.vmdk"])))
    target = tmp_path / "copy.vmdk"
    cli("download", image_id, "-o", str(target))
    assert target.read_bytes() == images["stream.vmdk"].read_bytes()
    stored = data_dir / "images" / image_id
    assert stored.exists()
    cli("delete", image_id)
    assert not stored.exists()
    assert catalog_of(data_dir).counts() == {}


def test_db_upgrade(data_dir: Path):
    assert re.fullmatch(r"sqlite:///.*catalog\.sqlite: upgraded to 0003\n", cli("db", "upgrade").stdout)
    assert cli("db", "upgrade").stdout.endswith(": already at 0003\n")


# -- bad input: one line, exit 1, no traceback (the real command) ------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = process_env(INTROSPECT_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [*INTROSPECT, *args], env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def assert_one_line(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.fullmatch(pattern, result.stderr.strip()), result.stderr


UNKNOWN = str(uuid.UUID(int=42))
NO_IMAGE = re.escape(f"Error: no image with id {UNKNOWN}: `introspect images list` shows the ids")


def failing(*args: str) -> Result:
    """In-process: an error click reports itself (exit 1, one line); anything else would raise here."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


@pytest.mark.parametrize(
    "args",
    [
        ("images", "show", UNKNOWN),
        ("images", "history", UNKNOWN),
        ("images", "set", UNKNOWN, "a=b"),
        ("images", "unset", UNKNOWN, "a"),
        ("delete", UNKNOWN),
        ("download", UNKNOWN),
        ("rerun", UNKNOWN),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_unknown_image_id(data_dir: Path, args: tuple[str, ...]):
    cli("db", "upgrade")
    shown = re.escape(args[2] if len(args) > 2 and args[0] == "images" else args[1])
    assert re.fullmatch(NO_IMAGE.replace(re.escape(UNKNOWN), shown), failing(*args).stderr.strip())


def test_not_an_image_reference_is_a_usage_error(data_dir: Path):
    result = CliRunner().invoke(main, ["images", "show", "not-an-id"])
    assert result.exit_code == 2
    assert "'not-an-id' does not end in an image id (a UUID)" in result.output


def test_an_href_names_its_image(data_dir: Path):
    """Nova's and Glance's hrefs (v2 and v1) are accepted wherever an id is."""
    cli("db", "upgrade")
    for href in (
        f"http://glance.example:9292/v2/images/{UNKNOWN}",
        f"http://glance.example:9292/v1/images/{UNKNOWN}",
    ):
        assert re.fullmatch(NO_IMAGE, failing("images", "show", href).stderr.strip())


def test_unknown_image_id_on_the_real_command(tmp_path: Path):
    assert run_cli(tmp_path, "db", "upgrade").returncode == 0
    assert_one_line(run_cli(tmp_path, "images", "show", UNKNOWN), NO_IMAGE)


def test_file_not_found(data_dir: Path):
    assert failing("import", "/no/such/disk.qcow2").stderr == "Error: /no/such/disk.qcow2: no such file\n"


def test_unknown_location_scheme(data_dir: Path):
    assert failing("import", "--location", "s3://bucket/disk.img").stderr == (
        "Error: unknown store scheme 's3' in 's3://bucket/disk.img': locations must be file://, http://, https://\n"
    )


@pytest.mark.parametrize("args", [("import", "{image}"), ("worker",), ("rerun", "--all")], ids=lambda a: a[0])
def test_broker_down_names_the_url(tmp_path: Path, images: dict[str, Path], args: tuple[str, ...]):
    url = f"redis://127.0.0.1:{closed_port()}/3"
    args = tuple(a.format(image=images["small.qcow2"]) for a in args)
    result = run_cli(tmp_path, *args, INTROSPECT_BROKER_URL=url)
    assert_one_line(result, rf"Error: cannot reach the broker at {re.escape(url)}: .*")
    assert not (tmp_path / "data" / "images").exists()  # nothing uploaded before the broker was checked


def test_status_with_the_broker_down(tmp_path: Path):
    url = f"redis://127.0.0.1:{closed_port()}/3"
    result = run_cli(tmp_path, "status", INTROSPECT_BROKER_URL=url)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"broker   cannot reach the broker at {url}" in result.stdout
    assert re.search(r"^catalog  the catalog database sqlite:///\S+ does not exist: ", result.stdout, re.M)


@pytest.mark.parametrize(
    "args", [("images", "list"), ("import", "--inline", "{image}"), ("db", "upgrade")], ids=lambda a: a[0]
)
def test_database_unreachable(tmp_path: Path, images: dict[str, Path], args: tuple[str, ...]):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    args = tuple(a.format(image=images["small.qcow2"]) for a in args)
    result = run_cli(tmp_path, *args, INTROSPECT_DATABASE_URL=url)
    assert_one_line(result, rf"Error: the catalog database {re.escape(url)} is unavailable: .*")


def test_bad_arguments(data_dir: Path, images: dict[str, Path]):
    result = CliRunner().invoke(main, ["import", "--disk-format", "floppy", str(images["small.qcow2"])])
    assert result.exit_code == 2 and "'floppy': known formats are" in result.stderr
    result = CliRunner().invoke(main, ["images", "set", UNKNOWN, "novalue"])
    assert result.exit_code == 2 and "'novalue': expected KEY=VALUE" in result.stderr
    assert failing("rerun").stderr.startswith("Error: say what to re-run: --all, ")


def test_a_setting_that_is_not_one_is_one_line_naming_it(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INTROSPECT_EAGER", "maybe")
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["images", "list"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: INTROSPECT_EAGER: Input should be a valid boolean, unable to interpret input"
    ]
