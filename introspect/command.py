"""The `introspect` console script. The library installs without the command line's packages
(Glance's import plugin needs the library alone), so the script says in one line which extra
brings them, instead of a traceback."""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec

from introspect import DISTRIBUTION, startup

#: What the command line imports, some only where a command prints a table: looked for (not
#: imported) up front, so that a missing one is this line whichever command runs.
NEEDS = ("click", "rich")

#: pydantic looks for plugins by scanning every installed distribution's entry points when it
#: builds its first model (~10 ms of a cold `introspect inspect`); the command has none to load.
#: Set PYDANTIC_DISABLE_PLUGINS yourself (to "" to let every plugin load) and it is kept.
PYDANTIC_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"


def main() -> None:
    missing = next((package for package in NEEDS if find_spec(package) is None), None)
    if missing is not None:
        sys.stderr.write(
            f"Error: the command line needs the {missing} package: pip install '{DISTRIBUTION}[cli]'\n"
        )
        sys.exit(2)
    os.environ.setdefault(PYDANTIC_PLUGINS, "__all__")
    startup.pause()  # until the command's imports are made (introspect.startup)
    try:
        from introspect.cli import main as command

        command()
    finally:
        startup.exiting()
