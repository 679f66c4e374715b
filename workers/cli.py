"""Pipeline commands for `introspect` (placeholder until the pipeline lands)."""

import click


def register(group: click.Group) -> None:
    """Add the pipeline's commands to the `introspect` group."""
