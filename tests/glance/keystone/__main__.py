"""`python -m tests.glance.keystone venv` builds the cached Keystone venv and its bootstrapped
template (`make keystone-venv`) and prints its path."""

from __future__ import annotations

import argparse
import sys

from tests.glance.keystone import build_venv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.glance.keystone")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "venv", help="build the cached venv (keystone + pyuwsgi, bootstrapped) and print its path"
    )
    parser.parse_args(argv)
    print(build_venv())
    return 0


if __name__ == "__main__":
    sys.exit(main())
