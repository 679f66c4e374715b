"""A policy as operators write it: a JSON object (`{"severity": {"CODE": "LEVEL"}, ...}`, the
fields of `Policy`), read the same way by every reader: `introspect inspect --policy`, the
service's INTROSPECT_POLICY and `--policy`, and Glance's import plugin. Every mistake is one
`UsageError` line naming the field, the value and what is accepted: a policy that does not say
what the operator meant must not run, and it must not be accepted by one reader and refused by
another. This module needs the library alone (the import plugin runs inside Glance's venv)."""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from introspect.errors import UsageError
from introspect.model import Severity
from introspect.safety import RULES, Policy, Rule
from introspect.text import literal

LEVELS = ", ".join(level.value for level in Severity)


@functools.cache
def known_rules() -> Mapping[str, Rule]:
    """Every rule a finding can come from. Rules are declared as their modules are imported, and
    a format's module is imported only for a file that carries its signature: this imports every
    module that declares rules (every format and container, the inspector, the stream reader)
    first, so a policy can name any code whichever images this process has seen."""
    import introspect.inspector
    import introspect.streaming  # noqa: F401
    from introspect.containers import every_container
    from introspect.formats import every_format

    every_format()
    every_container()
    return RULES


def check_rule_code(code: str, where: str) -> str:
    """A rule code, or a glob (`vmdk.*`) matching at least one: an unknown one would silently
    change nothing."""
    rules = known_rules()
    if code in rules or any(fnmatch.fnmatchcase(known, code) for known in rules):
        return code
    raise UsageError(f"{where}: unknown rule code {literal(repr(code))}: `introspect rules` lists the codes")


def severity_named(value: Any, where: str, accepted: str = f"use {LEVELS}") -> Severity:
    """The severity a policy names, or one line saying what is accepted."""
    try:
        return Severity(value)
    except ValueError:
        raise UsageError(f"{where}: {literal(repr(value))} is not a severity: {accepted}") from None


def read_policy(path: str | Path, where: str) -> Policy:
    """The policy in the JSON file at `path`; `where` starts every message (`--policy FILE`)."""
    try:
        loaded = json.loads(Path(path).read_text())
    except OSError as error:
        raise UsageError(f"{where}: {error.strerror or error}") from None
    except ValueError as error:
        raise UsageError(f"{where}: not JSON: {error}") from None
    return policy_from(loaded, where)


def policy_from(data: object, where: str) -> Policy:
    """The policy a decoded JSON value states, every code and level checked."""
    if not isinstance(data, dict):
        raise UsageError(
            f'{where}: a policy is a JSON object ({{"severity": {{"CODE": "LEVEL"}}, ...}}), '
            f"not {type(data).__name__ if data is not None else 'null'}"
        )
    overrides = data.get("severity", {})
    if not isinstance(overrides, dict):
        raise UsageError(
            f"{where}: severity: an object of CODE: LEVEL is expected, not {literal(repr(overrides))}"
        )
    for code, level in overrides.items():
        check_rule_code(code, f"{where}: severity")
        severity_named(level, f"{where}: severity.{literal(code)}")
    try:
        return Policy.model_validate(data)
    except ValidationError as error:
        raise UsageError(f"{where}: {_first_problem(error)}") from None


def _first_problem(error: ValidationError) -> str:
    """One line for a pydantic error: the field, the value, what is accepted."""
    problem = error.errors()[0]
    field = ".".join(str(part) for part in problem["loc"]) or "(the policy)"
    if problem["type"] == "extra_forbidden":
        return f"{literal(field)}: unknown key: the keys are {', '.join(Policy.model_fields)}"
    return f"{literal(field)} = {literal(repr(problem['input']))}: {problem['msg']}"
