"""The `introspect` console script. The library installs without the command line's packages
(Glance's import plugin needs the library alone), so the script says in one line which extra
brings them, instead of a traceback."""

from __future__ import annotations

import sys

from introspect import DISTRIBUTION


def main() -> None:
    try:
        from introspect.cli import main as command
    except ImportError as missing:
        sys.stderr.write(
            f"Error: the command line needs the {missing.name} package: pip install '{DISTRIBUTION}[cli]'\n"
        )
        sys.exit(2)
    command()
