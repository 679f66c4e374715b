"""The worker logs through Python's logging, as JSON lines into --log-file when asked, and each
inspection logs its image id, verdict, duration and bytes read (a real worker, a real Redis)."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.workers.services import INTROSPECT, RedisDb, Worker, deployment_env, wait_until
from tests.workers.test_cli import run_cli

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_worker_json_log_file_and_one_line_per_inspection(
    redis_db: RedisDb, tmp_path: Path, images: dict[str, Path]
):
    data = tmp_path / "data"
    data.mkdir()
    env = deployment_env(
        data,
        broker_url=redis_db.url,
        prefix=redis_db.prefix,
        queue=f"q-{secrets.token_hex(4)}",
        database_url=None,
    )
    log = tmp_path / "worker.jsonl"
    with (tmp_path / "worker.out").open("wb") as out:
        process = subprocess.Popen(
            [
                *INTROSPECT,
                "worker",
                "-c",
                "1",
                "--log-level",
                "info",
                "--log-format",
                "json",
                "--log-file",
                str(log),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(process, tmp_path / "worker.out")
    try:
        wait_until(lambda: log.exists() and " ready." in log.read_text(), timeout=90, what="the worker")
        cli_env = {k: v for k, v in env.items() if k.startswith("INTROSPECT_") and k != "INTROSPECT_DATA_DIR"}
        result = run_cli(tmp_path, "import", "--wait", str(images["small.qcow2"]), **cli_env)
        assert result.returncode == 0, result.stderr
        image_id = result.stderr.split()[0]

        def inspected() -> list[dict]:
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            return [line for line in lines if line.get("image_id") == image_id]

        wait_until(inspected, what="the inspection's log line")
        (line,) = inspected()
        assert line["level"] == "INFO" and line["logger"] == "workers.pipeline" and line["verdict"] == "ok"
        assert line["bytes_read"] > 0 and line["reads"] > 0 and line["duration_s"] >= 0
        assert line["message"].startswith(f"inspected {image_id}: ok in ")
    finally:
        worker.stop()


def test_configure_sends_the_listeners_info_lines_to_the_file_as_json(tmp_path: Path):
    """What `glance listen` and `glance sync` call with their --log-* options."""
    import logging

    from workers.logs import HANDLER, configure

    path = tmp_path / "listen.jsonl"
    root = logging.getLogger()
    level = root.level
    try:
        configure("INFO", path, "json")
        configure("INFO", path, "json")  # twice: still one handler of ours
        assert [h.get_name() for h in root.handlers].count(HANDLER) == 1
        logging.getLogger("workers.glance.listener").info(
            "%s: %s", "inspected", "done", extra={"image_id": "x"}
        )
        logging.getLogger("workers.glance.listener").debug("below the level")
    finally:
        for handler in [h for h in root.handlers if h.get_name() == HANDLER]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert line["message"] == "inspected: done" and line["image_id"] == "x" and line["level"] == "INFO"
