"""Untrusted text stays text in the pipeline's commands (the real `introspect` command, run as a
subprocess): names, paths, keys, values and finding messages with rich markup, escape sequences
and right-to-left overrides are printed literally, and one such name never breaks a listing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.workers.test_cli import run_cli

ESC, RLO = "\x1b", "\u202e"
#: A style tag, a clear-screen sequence and a right-to-left override in one file name (a file name
#: cannot hold the `/` of a closing tag: image names can, see UNBALANCED).
EVIL = f"evil[red]name{ESC}[2J{RLO}gpj.qcow2"
SHOWN = r"evil[red]name\x1b[2J\u202egpj.qcow2"
UNBALANCED = "evil[/]name"
SPOOF = "[link=http://evil.example]trusted[/link] [bold]x[/bold]"


def _clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "MarkupError" not in result.stderr
    for stream in (result.stdout, result.stderr):
        assert ESC not in stream and RLO not in stream


def test_untrusted_names_paths_and_messages_print_literally(tmp_path: Path, images: dict[str, Path]):
    evil = tmp_path / EVIL
    shutil.copy(images["small.qcow2"], evil)
    backed = tmp_path / "backed[red].qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "[/]", "-F", "qcow2", str(backed), "7M"],
        check=True,
    )
    env = {"INTROSPECT_EAGER": "1", "COLUMNS": "300"}

    imported = run_cli(tmp_path, "import", "--wait", str(evil), **env)
    _clean(imported)
    assert imported.returncode == 0, imported.stderr
    assert SHOWN in imported.stderr and SHOWN in imported.stdout
    (evil_id,) = re.findall(r"^([0-9a-f-]{36})  ", imported.stderr, flags=re.MULTILINE)

    for name in (SPOOF, UNBALANCED):
        _clean(run_cli(tmp_path, "import", "--wait", "--name", name, str(images["disk.vhd"]), **env))
    rejected = run_cli(tmp_path, "import", "--wait", str(backed), **env)
    _clean(rejected)
    assert "the backing file '[/]'" in rejected.stdout
    (backed_id,) = re.findall(r"^([0-9a-f-]{36})  ", rejected.stderr, flags=re.MULTILINE)

    listed = run_cli(tmp_path, "images", "list", **env)
    _clean(listed)
    assert listed.returncode == 0, listed.stderr
    for name in (SHOWN, SPOOF, UNBALANCED, "backed[red].qcow2"):
        assert name in listed.stdout
    shown = run_cli(tmp_path, "images", "show", backed_id, **env)
    _clean(shown)
    assert "backed[red].qcow2" in shown.stdout and "the backing file '[/]'" in shown.stdout
    assert "file://" in shown.stdout
    history = run_cli(tmp_path, "images", "history", evil_id, **env)
    _clean(history)
    assert history.returncode == 0 and "disk_format" in history.stdout
    as_json = json.loads(run_cli(tmp_path, "images", "show", evil_id, "--json", **env).stdout)
    assert as_json["name"] == EVIL  # JSON carries the real value, escaped by JSON itself


def test_error_messages_escape_what_they_quote(tmp_path: Path):
    """A path in an error message is printed with its control characters escaped too."""
    result = run_cli(tmp_path, "import", "--inline", f"/no/such/{EVIL}")
    _clean(result)
    assert result.stderr.strip() == f"Error: /no/such/{SHOWN}: no such file"
