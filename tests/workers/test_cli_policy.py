"""One policy everywhere: INTROSPECT_POLICY (the JSON of `inspect --policy`) is honoured by
`inspect`, `--inline` imports and re-runs, and the worker's tasks, and so is `--policy FILE` by
each command's own inspections; a bad one is one line before anything happens (the real command,
in-process where the environment plays no part, a real Redis and a real worker)."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner

from introspect.cli import main
from tests.workers.services import RedisDb, deployment_env, start_worker
from tests.workers.test_cli import assert_one_line, data_dir, ids_of, run_cli
from workers.settings import get_settings

__all__ = ["data_dir"]  # the fixture

DEMOTE = {"severity": {"qcow2.backing_file": "info"}}


def policy_file(tmp_path: Path, content: object, name: str = "policy.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


def test_inspect_import_and_rerun_honour_introspect_policy(tmp_path: Path, images: dict[str, Path]):
    backed = str(images["backed.qcow2"])
    assert run_cli(tmp_path, "inspect", backed).returncode == 1
    env = {"INTROSPECT_POLICY": policy_file(tmp_path, DEMOTE), "INTROSPECT_EAGER": "1"}
    assert run_cli(tmp_path, "inspect", backed, **env).returncode == 0
    imported = run_cli(tmp_path, "import", backed, **env)
    assert imported.returncode == 0, imported.stderr
    (image_id,) = re.findall(r"^([0-9a-f-]{36})  ", imported.stderr, flags=re.MULTILINE)
    # the same image re-run without the policy is rejected, and with it active again
    assert run_cli(tmp_path, "rerun", "--inline", image_id).returncode == 0
    shown = run_cli(tmp_path, "images", "show", image_id, "-f", "value", "-c", "status")
    assert shown.stdout.strip() == "rejected"
    assert run_cli(tmp_path, "rerun", "--inline", image_id, **env).returncode == 0
    shown = run_cli(tmp_path, "images", "show", image_id, "-f", "value", "-c", "status", **env)
    assert shown.stdout.strip() == "active"


@pytest.mark.parametrize(
    "args", [("import", "--inline", "{image}"), ("worker",), ("rerun", "--inline", "--all")]
)
def test_a_bad_introspect_policy_is_one_line(tmp_path: Path, images: dict[str, Path], args: tuple[str, ...]):
    env = {"INTROSPECT_POLICY": policy_file(tmp_path, {"severity": {"qcow2.nope": "info"}})}
    args = tuple(a.format(image=images["small.qcow2"]) for a in args)
    result = run_cli(tmp_path, *args, **env)
    assert_one_line(
        result,
        re.escape(
            f"Error: INTROSPECT_POLICY {env['INTROSPECT_POLICY']}: severity: unknown rule code 'qcow2.nope': "
            "`introspect rules` lists the codes"
        ),
    )
    assert not (tmp_path / "data" / "images").exists()


def test_the_policy_option_is_for_the_commands_own_inspections(
    data_dir: Path, tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
):
    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, list(args))
        return result.exit_code, result.stderr

    demote = policy_file(tmp_path, DEMOTE)
    imported = CliRunner().invoke(
        main, ["import", "--inline", "--policy", demote, str(images["backed.qcow2"])]
    )
    assert imported.exit_code == 0, imported.output
    (image_id,) = ids_of(imported)
    assert run("rerun", "--inline", image_id)[0] == 0  # no policy: rejected again
    shown = CliRunner().invoke(main, ["images", "show", image_id, "-f", "value", "-c", "status"])
    assert shown.stdout == "rejected\n"
    assert run("rerun", "--inline", "--policy", demote, image_id)[0] == 0
    shown = CliRunner().invoke(main, ["images", "show", image_id, "-f", "value", "-c", "status"])
    assert shown.stdout == "active\n"
    # where the command only queues, a worker inspects under its own policy: said, not ignored
    monkeypatch.delenv("INTROSPECT_EAGER")
    get_settings.cache_clear()
    assert run("rerun", "--policy", demote, image_id) == (
        1,
        f"Error: --policy {demote}: the inspections are queued, and a worker inspects under its own "
        "policy (`introspect worker --policy FILE`, or INTROSPECT_POLICY): add --inline to inspect "
        "here under this one\n",
    )
    bad = policy_file(tmp_path, {"severity": {"qcow2.nope": "info"}}, "bad.json")
    for args in (
        ("worker",),
        ("rerun", "--inline", "--all"),
        ("import", "--inline", str(images["small.qcow2"])),
    ):
        assert run(*args, "--policy", bad) == (
            1,
            f"Error: --policy {bad}: severity: unknown rule code 'qcow2.nope': `introspect rules` lists the codes\n",
        )


@pytest.mark.services
@pytest.mark.slow
def test_the_workers_tasks_honour_introspect_policy(
    redis_db: RedisDb, tmp_path: Path, images: dict[str, Path]
):
    env = deployment_env(
        tmp_path / "data",
        broker_url=redis_db.url,
        prefix=redis_db.prefix,
        queue=f"q-{secrets.token_hex(4)}",
        database_url=None,
    )
    (tmp_path / "data").mkdir()
    # `worker --policy`: the tasks of its pool processes too
    worker = start_worker(
        env, tmp_path / "worker.log", "--concurrency", "1", "--policy", policy_file(tmp_path, DEMOTE)
    )
    try:
        cli_env = {k: v for k, v in env.items() if k.startswith("INTROSPECT_") and k != "INTROSPECT_DATA_DIR"}
        result = run_cli(tmp_path, "import", "--wait", str(images["backed.qcow2"]), **cli_env)
        assert result.returncode == 0, result.stderr
        assert "backed.qcow2  active" in result.stdout
    finally:
        worker.stop()
