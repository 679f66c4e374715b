"""The policy of the service side: one JSON file (introspect/policyfile.py reads it, for every
reader alike), the same `introspect inspect --policy` reads (see `introspect rules`).

INTROSPECT_POLICY names it for every inspection a process runs, whatever triggered it (a worker's
task, `--inline`, a re-run, Glance's listener, sync and `glance inspect`); `--policy FILE` names
it for one command's own inspections. An inspection runs under the policy of the process that
runs it: a queued one under its worker's (`introspect worker --policy`, or INTROSPECT_POLICY in
the worker's environment), so `--policy` is refused where the command only queues, rather than
quietly doing nothing. A file is read once per process; a bad one is one line (`PipelineError`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import click

from introspect.errors import UsageError
from introspect.policyfile import read_policy
from introspect.safety import DEFAULT_POLICY, Policy
from introspect.text import literal
from workers.errors import PipelineError
from workers.settings import get_settings

policy_option = click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The JSON policy this command's inspections run under (see `introspect rules`); "
    "default: INTROSPECT_POLICY.",
)


@cache
def _read(path: Path, option: str) -> Policy:
    try:
        return read_policy(path, f"{option} {literal(str(path))}")
    except UsageError as error:
        raise PipelineError(str(error)) from None


def configured_policy() -> Policy:
    """The policy INTROSPECT_POLICY names, or the default one."""
    path = get_settings().policy
    return DEFAULT_POLICY if path is None else _read(path, "INTROSPECT_POLICY")


def command_policy(policy_file: Path | None, *, here: bool) -> Policy:
    """The policy of a command's inspections: `--policy FILE`, else INTROSPECT_POLICY (checked
    now either way: a bad file is one line before anything happens). `here`: the command runs
    them itself; otherwise it queues them, and the workers' own policy applies."""
    if policy_file is None:
        return configured_policy()
    policy = _read(policy_file, "--policy")
    if not here:
        raise PipelineError(
            f"--policy {literal(str(policy_file))}: the inspections are queued, and a worker inspects "
            "under its own policy (`introspect worker --policy FILE`, or INTROSPECT_POLICY): add "
            "--inline to inspect here under this one"
        )
    return policy
