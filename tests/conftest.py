"""Shared test helpers: where the tool-built fixtures are, and what the tools said about them."""

from __future__ import annotations

from pathlib import Path

import pytest

# The Glance peer's fixtures, registered here once for every suite that asks for them (the
# Glance suite and the catalog contract suite share one Glance per run).
from tests.glance.fixtures import (  # noqa: F401
    admin,
    api,
    client,
    glance,
    header_peer,
    keystone_peer,
    member,
    peer,
    rabbit_vhost,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "build"


def fixture_group(group: str) -> Path:
    """fixtures/build/GROUP, built by `make fixtures` (fixtures/make/GROUP.sh)."""
    directory = FIXTURES / group
    if not (directory / ".built").exists():
        pytest.fail(f"fixtures/build/{group} is missing: run `make fixtures` (or fixtures/build.sh {group})")
    return directory


@pytest.fixture(scope="session")
def fixtures_root() -> Path:
    return FIXTURES
