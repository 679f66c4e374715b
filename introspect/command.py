"""The `introspect` console script. The library installs without the command line's packages
(Glance's import plugin needs the library alone), so the script says in one line which extra
brings them, instead of a traceback."""

from __future__ import annotations

import sys
from importlib.util import find_spec

from introspect import DISTRIBUTION

#: What the command line imports, some only where a command prints a table: looked for (not
#: imported) up front, so that a missing one is this line whichever command runs.
NEEDS = ("click", "rich")


def main() -> None:
    missing = next((package for package in NEEDS if find_spec(package) is None), None)
    if missing is not None:
        sys.stderr.write(
            f"Error: the command line needs the {missing} package: pip install '{DISTRIBUTION}[cli]'\n"
        )
        sys.exit(2)
    from introspect.cli import main as command

    command()
