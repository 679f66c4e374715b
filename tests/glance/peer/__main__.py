"""`python -m tests.glance.peer venv` builds the cached Glance venv (`make glance-venv`);
`start DIR [--protections] [--transport-url URL] [--plugin NAME]` runs a peer in the foreground
until Ctrl-C, for trying things by hand."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.glance.peer import Deployment, build_venv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.glance.peer")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("venv", help="build the cached venv (glance + pyuwsgi) and print its path")
    start = commands.add_parser("start", help="run a Glance in DIR until interrupted")
    start.add_argument("directory", type=Path)
    start.add_argument("--protections", action="store_true")
    start.add_argument("--transport-url")
    start.add_argument("--plugin", action="append", default=[])
    args = parser.parse_args(argv)
    venv = build_venv()
    if args.command == "venv":
        print(venv)
        return 0
    peer = Deployment(
        args.directory.resolve(),
        venv,
        protections=args.protections,
        transport_url=args.transport_url,
        import_plugins=tuple(args.plugin),
    )
    peer.configure()
    api = peer.start_api()
    print(api.url, flush=True)
    try:
        while api.alive:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
