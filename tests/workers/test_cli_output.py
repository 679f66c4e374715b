"""Output people and scripts can read: the openstack client's -f table|json|value|yaml|csv and
-c COLUMN on images list/show/history, status and rerun --dry-run, never truncated into a pipe
(the real command)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import yaml

from tests.workers.test_cli import run_cli

ENV = {"INTROSPECT_EAGER": "1"}


def test_formats_and_columns(tmp_path: Path, images: dict[str, Path]):
    imported = run_cli(tmp_path, "import", str(images["small.qcow2"]), str(images["disk.vhd"]), **ENV)
    ids = re.findall(r"^([0-9a-f-]{36})  ", imported.stderr, flags=re.MULTILINE)

    # the listing pages by id (random uuids), not by import order
    shown = sorted(zip(ids, [("small.qcow2", "qcow2"), ("disk.vhd", "vhd")], strict=True))
    listed_ids = [image_id for image_id, _ in shown]
    value = run_cli(tmp_path, "images", "list", "-f", "value", "-c", "id", "-c", "disk_format", **ENV)
    assert value.stdout.splitlines() == [f"{image_id} {fmt}" for image_id, (_, fmt) in shown]
    rows = list(csv.reader(io.StringIO(run_cli(tmp_path, "images", "list", "-f", "csv", **ENV).stdout)))
    assert rows[0] == [
        "id",
        "name",
        "status",
        "disk_format",
        "size",
        "virtual_size",
        "inspector_version",
        "updated_at",
    ]
    assert [row[:4] for row in rows[1:]] == [
        [image_id, name, "active", fmt] for image_id, (name, fmt) in shown
    ]
    listed = yaml.safe_load(run_cli(tmp_path, "images", "list", "-f", "yaml", "-c", "name", **ENV).stdout)
    assert listed == [{"name": name} for _, (name, _) in shown]
    as_json = run_cli(tmp_path, "images", "list", "-f", "json", **ENV).stdout.splitlines()
    assert [json.loads(line)["id"] for line in as_json] == listed_ids
    assert run_cli(tmp_path, "images", "list", "--json", **ENV).stdout.splitlines() == as_json
    only_vhd = run_cli(tmp_path, "images", "list", "--disk-format", "vhd", "-f", "value", "-c", "id", **ENV)
    assert only_vhd.stdout.split() == [ids[1]]

    status = run_cli(
        tmp_path, "images", "show", ids[0], "-f", "value", "-c", "status", "-c", "disk_format", **ENV
    )
    assert status.stdout.splitlines() == ["active", "qcow2"]
    shown = json.loads(
        run_cli(tmp_path, "images", "show", ids[0], "-f", "json", "-c", "properties", **ENV).stdout
    )
    assert {p["key"] for p in shown["properties"]} >= {"disk_format"} and list(shown) == ["properties"]
    table = run_cli(tmp_path, "images", "show", ids[0], "-c", "name", "-c", "status", **ENV).stdout
    assert re.search(r"│ name\s+│ small\.qcow2\s+│", table) and re.search(r"│ status\s+│ active\s+│", table)

    history = run_cli(tmp_path, "images", "history", ids[0], "-f", "csv", "-c", "key", "-c", "new", **ENV)
    keys = list(csv.reader(io.StringIO(history.stdout)))
    assert keys[0] == ["key", "new"] and ["disk_format", "qcow2"] in keys

    unknown = run_cli(tmp_path, "images", "list", "-c", "nope", **ENV)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.startswith("Error: -c 'nope': no such column: the columns are id, name, status, ")
    assert len(unknown.stderr.splitlines()) == 1


def test_nothing_is_truncated_into_a_pipe(tmp_path: Path, images: dict[str, Path]):
    name = "a-very-long-image-name-" * 8
    assert run_cli(tmp_path, "import", "--name", name, str(images["small.qcow2"]), **ENV).returncode == 0
    for args in (("images", "list"), ("images", "list", "-c", "name")):
        result = run_cli(tmp_path, *args, **ENV, COLUMNS="80")
        assert name in result.stdout and "…" not in result.stdout


def test_many_images_print_a_summary_and_v_everything(tmp_path: Path, images: dict[str, Path]):
    paths = [str(images[name]) for name in ("small.qcow2", "disk.vhd", "backed.qcow2")]
    result = run_cli(tmp_path, "import", *paths, **ENV)
    assert result.returncode == 1  # backed.qcow2 is rejected
    backed = re.findall(r"^([0-9a-f-]{36})  ", result.stderr, flags=re.MULTILINE)[2]
    assert result.stdout.splitlines() == [
        "3 images: active 2, rejected 1",
        f"{backed}  backed.qcow2  rejected  qcow2.backing_file",
    ]
    verbose = run_cli(tmp_path, "import", "-v", *paths, **ENV)
    assert verbose.stdout.count("introspected") > 6 and "3 images:" not in verbose.stdout


def test_status_and_the_dry_run_for_scripts(tmp_path: Path, images: dict[str, Path]):
    imported = run_cli(tmp_path, "import", "--disk-format", "vmdk", str(images["small.qcow2"]), **ENV)
    (image_id,) = re.findall(r"^([0-9a-f-]{36})  ", imported.stderr, flags=re.MULTILINE)
    dry_run = run_cli(tmp_path, "rerun", "--all", "--dry-run", "--json")
    assert [json.loads(line) for line in dry_run.stdout.splitlines()] == [
        {"action": "rerun", "id": image_id, "problems": []},
        {"action": "mismatch", "id": image_id, "problems": ["disk_format vmdk but the content is qcow2"]},
    ]
    assert dry_run.stderr == "1 image(s) would be re-run; 1 image(s) disagree with their last inspection\n"
    status = run_cli(
        tmp_path,
        "status",
        "--json",
        "-c",
        "broker",
        "-c",
        "catalog",
        INTROSPECT_BROKER_URL="redis://127.0.0.1:1/0",
    )
    assert status.returncode == 1
    state = json.loads(status.stdout)
    assert list(state) == ["broker", "catalog"]
    assert state["broker"]["reachable"] is False and "cannot reach the broker" in state["broker"]["error"]
    assert state["catalog"]["images"] == {"rejected": 1}
