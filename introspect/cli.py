"""The `introspect` command. Library commands live here; other packages (the pipeline in
`workers/`) add theirs through the `introspect.commands` entry point group."""

from __future__ import annotations

from importlib.metadata import entry_points

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Read what VM disk images say about themselves, and keep it as image properties."""


def _load_plugins() -> None:
    for entry in entry_points(group="introspect.commands"):
        try:
            register = entry.load()
        except ImportError:
            continue  # the pipeline extra is not installed: its commands are simply absent
        register(main)


_load_plugins()
