"""workers/commands.py declares the service side's commands so that `introspect --help` lists them
without importing them: every declaration must say what the command it names says, and be
present exactly when its extra is installed."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import click
import pytest

from tests.workers.services import ROOT, process_env
from workers import commands

DECLARED = {**commands.PIPELINE, **commands.GLANCE}
#: Distributions whose import name is not their name, lowercased, with `-` and `.` as `_`.
IMPORT_NAMES = {"pyyaml": "yaml", "openstacksdk": "openstack"}


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_each_declaration_is_listed_as_its_command_would_be(name):
    declared = DECLARED[name]
    command = declared.load()
    assert command.name == name
    assert (command.hidden, command.deprecated, command.short_help) == (False, False, None)
    listed = click.Command(name, help=declared.help)  # what --help shows before the import
    for limit in range(3, 300):
        assert listed.get_short_help_str(limit) == command.get_short_help_str(limit), limit


def _imports(extra: str) -> set[str]:
    """The import names of an extra's own packages (pyproject.toml), not those of the extras it names."""
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = set()
    for requirement in requirements[extra]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert name is not None, requirement
        if name.group() != "introspect-images":
            lowered = name.group().lower()
            names.add(IMPORT_NAMES.get(lowered, lowered.replace("-", "_").replace(".", "_")))
    return names


def test_a_command_is_there_when_every_package_of_its_extra_is():
    assert set(commands.PIPELINE_NEEDS) == _imports("pipeline")
    assert set(commands.GLANCE_NEEDS) == _imports("pipeline") | _imports("glance")
    assert all(declared.installed() for declared in DECLARED.values())  # this venv has every extra


def _help(width: int, *, loaded: bool) -> str:
    """`introspect --help` in a new process, every plugin command imported first when `loaded`."""
    code = "from introspect.cli import main\n"
    if loaded:
        code += (
            "import click\n"
            "context = click.Context(main)\n"
            "for name in main.list_commands(context):\n"
            "    main.get_command(context, name)\n"
            "assert not main.lazy_commands\n"
        )
    code += "main(['--help'])\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(COLUMNS=str(width)),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("width", [50, 80, 200])
def test_help_from_the_declarations_is_the_help_of_the_commands(width):
    listed = _help(width, loaded=False)
    assert listed == _help(width, loaded=True)
    for name in DECLARED:
        assert re.search(rf"^  {name} ", listed, flags=re.MULTILINE), name
