"""The poller and the `introspect glance` commands, against the real Glance."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import introspect
from tests.glance.fixtures import THROUGH_BOTH, Admin, Peer, inspect_now, use_settings
from tests.glance.peer import Api
from tests.workers.services import INTROSPECT, process_env
from workers.glance.catalog import GlanceCatalog
from workers.glance.cli import glance_group
from workers.glance.client import GlanceClient
from workers.glance.ownership import desired_properties
from workers.glance.settings import get_glance_settings
from workers.glance.sync import parse_since, sync_pass

ID = "b8b2c6f7-7345-4e2f-afa2-eedaba9cbbe3"


def test_since_is_read_as_utc() -> None:
    assert parse_since("2026-11-29T16:00:00Z") == "2026-11-29T16:00:00Z"
    assert parse_since("2026-11-29 17:00:00+01:00") == "2026-11-29T16:00:00Z"
    assert parse_since("2026-11-29T16:00:00") == "2026-11-29T16:00:00Z"
    with pytest.raises(ValueError, match="is not a time: use ISO 8601"):
        parse_since("yesterday")


def utc_now(delta: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.glance
@THROUGH_BOTH
def test_sync_dispatches_each_changed_image_once(
    images: dict[str, Path], admin: Admin, client: GlanceClient
) -> None:
    before = admin.uploaded(images["disk.vdi"])
    since = utc_now(1)
    import time

    time.sleep(1.1)  # Glance's updated_at has one-second resolution
    fresh = [admin.uploaded(images[name]) for name in ("disk.vhd", "ide.vmdk")]
    queued = admin.create("no data yet", "raw")
    dispatched: list[str] = []

    def dispatch(image: dict[str, object]) -> None:
        dispatched.append(str(image["id"]))
        inspect_now(GlanceCatalog(client), str(image["id"]))

    first = sync_pass(client, dispatch, since=since)
    assert set(fresh) <= set(dispatched) and before not in dispatched and queued not in dispatched
    assert first.newest is not None and first.newest >= since
    dispatched.clear()
    second = sync_pass(client, dispatch, since=since)  # our write-backs changed updated_at: seen, skipped
    assert not set(fresh) & set(dispatched)
    assert second.up_to_date >= len(fresh)


@pytest.fixture
def cli_env(peer: Peer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The service's settings for the peer (the keystone peer's: a clouds.yaml, Glance found in
    the catalog), in this process's environment."""
    env = {**peer.env, "INTROSPECT_GLANCE_CACHE_DIR": str(tmp_path / "cache")}
    use_settings(monkeypatch, env)
    yield env
    get_glance_settings.cache_clear()


@pytest.mark.glance
@THROUGH_BOTH
def test_cli_inspect_show_and_sync(
    cli_env: dict[str, str], images: dict[str, Path], admin: Admin, api: Api, tmp_path: Path
) -> None:
    runner = CliRunner()
    image_id = admin.uploaded(images["buslogic.vmdk"])
    href = f"{api.url}/v2/images/{image_id}"
    done = runner.invoke(glance_group, ["inspect", href])
    assert done.exit_code == 0, done.output
    assert f"{image_id}  inspected  image {image_id}: " in done.output

    # `add`: introspect writes no hw_scsi_model for BusLogic (QEMU has none), so none to replace
    admin.patch(image_id, [{"op": "add", "path": "/hw_scsi_model", "value": "virtio-scsi"}])
    v1 = href.replace("/v2/", "/v1/")
    again = runner.invoke(glance_group, ["inspect", "--json", "--force", v1])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assert (summary["state"], summary["written"], summary["data_bytes"]) == ("inspected", True, 0)
    assert admin.get(image_id)["hw_scsi_model"] == "virtio-scsi"

    shown = runner.invoke(glance_group, ["show", image_id])
    assert shown.exit_code == 0, shown.output
    assert "vmware_adaptertype = busLogic  (introspected)" in shown.output
    assert "hw_scsi_model = virtio-scsi  (someone else's)" in shown.output
    as_json = json.loads(runner.invoke(glance_group, ["show", "--json", image_id]).output)
    sources = {p["key"]: (p["value"], p["source"]) for p in as_json["properties"]}
    assert sources["vmware_adaptertype"] == ("busLogic", "introspected")
    assert sources["hw_scsi_model"] == ("virtio-scsi", "someone else's")
    assert as_json["id"] == image_id and as_json["introspect_written"]["inspector"]
    shown = runner.invoke(glance_group, ["show", "-f", "yaml", "-c", "id", "-c", "status", image_id])
    assert yaml.safe_load(shown.stdout) == [{"id": image_id, "status": "active"}]

    # --policy: `glance inspect`'s own inspections run under it; where `sync` queues, it is refused
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"max_virtual_size": 1 << 30}))  # the image is 1 GiB + 3 MiB
    args = ["inspect", "--force", "--policy", str(strict), "-f", "value", "-c", "state", "-c", "verdict"]
    refused = runner.invoke(glance_group, [*args, image_id])
    assert (refused.exit_code, refused.stdout) == (1, "inspected rejected\n")
    assert "image.virtual_size_limit" in admin.get(image_id)["introspect_findings"].split(",")
    queued = runner.invoke(glance_group, ["sync", "--policy", str(strict)])
    assert queued.exit_code == 1 and "the inspections are queued" in queued.output

    synced = runner.invoke(glance_group, ["sync", "--inline", "--since", utc_now(3600)])
    assert synced.exit_code == 0, synced.output
    assert "0 images changed since" in synced.output


@pytest.mark.glance
@THROUGH_BOTH
def test_cli_refusals_are_one_line(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    elsewhere = runner.invoke(glance_group, ["inspect", f"http://elsewhere:9292/v2/images/{ID}"])
    assert elsewhere.exit_code == 1
    assert "which is not a configured endpoint" in elsewhere.output
    missing = runner.invoke(glance_group, ["inspect", ID])
    assert missing.exit_code == 0  # a deleted image is an outcome, not a failure
    assert f"{ID}  deleted" in missing.output
    bad = runner.invoke(glance_group, ["sync", "--since", "soon"])
    assert bad.exit_code == 2 and "is not a time" in bad.output


@pytest.mark.glance
def test_the_pipeline_commands_work_on_glance_images(
    cli_env: dict[str, str], images: dict[str, Path], admin: Admin, api: Api
) -> None:
    """INTROSPECT_CATALOG=glance: `introspect rerun` and `introspect images show` (the pipeline's
    own commands, a real process) read and write Glance, and take an href as well as an id."""
    image_id = admin.uploaded(images["ide.vmdk"])
    href = f"{api.url}/v2/images/{image_id}"
    env = process_env(**cli_env, INTROSPECT_CATALOG="glance")
    rerun = subprocess.run([*INTROSPECT, "rerun", "--inline", href], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    want = desired_properties(introspect.inspect(images["ide.vmdk"]))
    image = admin.get(image_id)
    assert {key: image.get(key) for key in want} == want
    assert image["vmware_adaptertype"] == "ide" and image["hw_disk_bus"] == "ide"
    shown = subprocess.run(
        [*INTROSPECT, "images", "show", "--json", image_id], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert image_id in shown.stdout and "vmware_adaptertype" in shown.stdout
