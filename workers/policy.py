"""The policy of the service side: INTROSPECT_POLICY names a JSON file, the same as
`introspect inspect --policy` reads (see `introspect rules`), and every inspection the pipeline
runs uses it, whatever triggered it (a worker's task, `--inline`, a re-run, Glance's listener,
sync and `glance inspect`). Read once per process; a bad file is one line (`PipelineError`)."""

from __future__ import annotations

from functools import cache

from introspect.safety import DEFAULT_POLICY, Policy
from workers.errors import PipelineError
from workers.settings import get_settings


@cache
def configured_policy() -> Policy:
    """The policy INTROSPECT_POLICY names, or the default one."""
    path = get_settings().policy
    if path is None:
        return DEFAULT_POLICY
    import click

    from introspect.cli import load_policy

    try:
        return load_policy(str(path), option="INTROSPECT_POLICY")
    except click.ClickException as error:
        raise PipelineError(error.message) from None
