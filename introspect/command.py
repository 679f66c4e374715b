"""The `introspect` console script. The library installs without the command line's packages
(Glance's import plugin needs the library alone), so the script says in one line which extra
brings them, instead of a traceback."""

from __future__ import annotations

import gc
import os
import sys
from importlib.util import find_spec

from introspect import DISTRIBUTION

#: What the command line imports, some only where a command prints a table: looked for (not
#: imported) up front, so that a missing one is this line whichever command runs.
NEEDS = ("click", "rich")

#: pydantic looks for plugins by scanning every installed distribution's entry points when it
#: builds its first model (~10 ms of a cold `introspect inspect`); the command has none to load.
#: Set PYDANTIC_DISABLE_PLUGINS yourself (to "" to let every plugin load) and it is kept.
PYDANTIC_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"


#: Whether the collector is paused for start-up (see `main`), until `started()`.
_starting = False


def main() -> None:
    missing = next((package for package in NEEDS if find_spec(package) is None), None)
    if missing is not None:
        sys.stderr.write(
            f"Error: the command line needs the {missing} package: pip install '{DISTRIBUTION}[cli]'\n"
        )
        sys.exit(2)
    os.environ.setdefault(PYDANTIC_PLUGINS, "__all__")
    # Start-up makes tens of thousands of objects (modules, classes, functions) that live as long as
    # the process: the collector's passes over them while they are made, and its full collection at
    # exit, find nothing to free (~10 ms of a cold `introspect inspect`, a twelfth of it). So the
    # collector is paused until the command says start-up is over (`started`), what start-up made
    # is then frozen out of every later collection, and at exit all is: the process's memory goes
    # back to the system whole (the way Instagram's servers skip that collection).
    global _starting
    _starting = True
    gc.disable()
    try:
        from introspect.cli import main as command

        command()
    finally:
        started()
        gc.freeze()


def started() -> None:
    """Start-up is over (a command's imports are made): the collector runs again, as usual, over
    what is made from now on. Does nothing unless `main` paused it (a library, a test calling
    the commands, keeps its collector as it set it)."""
    global _starting
    if _starting:
        _starting = False
        gc.freeze()
        gc.enable()
