"""`make demo` is the README's first command: it runs here as a newcomer runs it (the real
`introspect` command, images qemu-img makes, no broker, SQLite), and what it shows is true."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers.services import ROOT, process_env
from workers.demo import OS_RELEASE

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def test_the_demo_runs_to_the_end(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "workers.demo", "--keep", str(tmp_path)],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # qemu-img made layered.qcow2 with a backing file: the one image rejected, and import says so
    assert "4 images: active 3, rejected 1" in out
    assert re.search(r"^\S+  layered\.qcow2  rejected  qcow2\.backing_file$", out, flags=re.MULTILINE)
    overridden = re.search(
        r"^# override kept after the re-run: (\w+) = (\S+) \(source admin\)$", out, re.MULTILINE
    )
    assert overridden, out
    back = re.search(
        rf"^# unset: the introspected value is back: {overridden[1]} = (\S+)$", out, re.MULTILINE
    )
    assert back and back[1] != overridden[2], out
    assert out.rstrip().endswith(f"demo done; catalog and store kept in {tmp_path / 'data'}")
    assert (tmp_path / "data").is_dir()
    # The Linux disk holds this machine's os-release and shell: the guest pass says what they say.
    os_release = next(path for path in map(Path, OS_RELEASE) if path.exists())
    release = dict(
        line.split("=", 1)
        for line in os_release.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    env = {k: v for k, v in process_env().items() if not k.startswith("INTROSPECT_")}
    env["INTROSPECT_DATA_DIR"] = str(tmp_path / "data")

    def introspect(*arguments: str) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("introspect")), *arguments],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout

    (linux,) = [
        r
        for r in map(json.loads, introspect("images", "list", "--json").splitlines())
        if r["name"] == "linux.qcow2"
    ]
    shown = json.loads(introspect("images", "show", linux["id"], "--json"))
    found = {p["key"]: p["value"] for p in shown["properties"]}
    assert found["os_type"] == "linux"
    assert found["introspect_os_id"] == release["ID"].strip('"')
    assert found["os_version"] == release["VERSION_ID"].strip('"')
    assert found["architecture"] == platform.machine()
    assert "# linux.qcow2: what the guest pass read in its partition" in out
