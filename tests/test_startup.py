"""The console script's start-up: its collector paused until the command's imports are made."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from click.testing import CliRunner

from introspect.cli import main
from tests.test_cli import qcow2
from tests.workers.services import process_env


def collector(*args: str) -> dict[str, object]:
    """How an `introspect ARGS...` process's garbage collector ran: enabled or not as each image's
    inspection began (`inspected`), and when the process ended (`enabled`, `frozen` objects)."""
    code = (
        "import gc, json, sys\n"
        "import introspect.inspector as inspector\n"
        "seen = []\n"
        "real = inspector.inspect\n"
        "def spy(*args, **kwargs):\n"
        "    seen.append(gc.isenabled())\n"
        "    return real(*args, **kwargs)\n"
        "inspector.inspect = spy\n"
        "from introspect.command import main\n"
        "sys.argv = ['introspect', *sys.argv[1:]]\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "print(json.dumps({'inspected': seen, 'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count()}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=process_env()
    )
    state: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return state


def test_the_console_script_pauses_the_collector_for_start_up_only(tmp_path):
    """Start-up's objects live as long as the process: the collector is paused while they are made
    (`inspect`: until its first image is done; any other command: until it starts), then resumed
    with them frozen out of its passes, the last one at exit included."""
    image = qcow2(tmp_path)
    inspected = collector("inspect", str(image), str(image), str(image))
    assert inspected == {"inspected": [False, True, True], "enabled": True, "frozen": inspected["frozen"]}
    assert isinstance(inspected["frozen"], int) and inspected["frozen"] > 10_000
    for args in (("rules",), ("--help",), ("inspect", str(tmp_path / "missing.qcow2"))):
        ended = collector(*args)
        assert ended["enabled"] is True, args
        assert isinstance(ended["frozen"], int) and ended["frozen"] > 1_000, args


def test_the_commands_leave_a_library_callers_collector_as_it_was(tmp_path):
    """Only the console script pauses the collector: a program (a test) calling the commands keeps
    its own, and nothing of it is frozen."""
    frozen = gc.get_freeze_count()
    result = CliRunner().invoke(main, ["inspect", str(qcow2(tmp_path))])
    assert result.exit_code == 0, result.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
