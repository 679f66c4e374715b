"""The `introspect` command (placeholder until the CLI lands)."""

import click


@click.group()
def main() -> None:
    """Read what VM disk images say about themselves."""
