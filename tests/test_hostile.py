"""Hostile images (fixtures/hostile.py derives them from real ones): each gets its verdict, nothing
crashes, nothing hangs, the read budget holds, and nothing named inside an image is opened."""

from __future__ import annotations

import json

import pytest

import introspect
from introspect.model import Verdict
from introspect.sources import Budget
from tests.conftest import FIXTURES

MANIFEST = FIXTURES / "hostile" / "MANIFEST.json"
CASES = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []
NOT_OK = {Verdict.ERROR, Verdict.REJECTED}


def test_the_hostile_set_is_built():
    assert len(CASES) >= 30, "run `make fixtures`: fixtures/build/hostile/MANIFEST.json is missing or short"


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_hostile_image_gets_its_verdict(case):
    report = introspect.inspect(FIXTURES / "hostile" / case["file"])
    codes = [f.code for f in report.findings]
    assert "introspect.internal_error" not in codes, report.findings
    if case["verdict"] == "not-ok":
        assert report.verdict in NOT_OK, f"{case['change']}: {report.verdict} {report.findings}"
    else:
        assert report.verdict == case["verdict"], f"{case['change']}: {report.findings}"
    if case["code"]:
        assert case["code"] in codes, f"{case['change']}: {report.findings}"
    budget = Budget()
    assert report.reads <= budget.max_reads
    assert report.bytes_read <= budget.max_bytes
    for finding in report.findings:
        assert finding.message and "\n" not in finding.message


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_nothing_named_in_a_hostile_image_is_opened(case, monkeypatch):
    opened = []
    real_open = __import__("os").open

    def watching_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    def watching_builtin_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_builtin_open(path, *args, **kwargs)

    real_builtin_open = __import__("builtins").open
    monkeypatch.setattr("os.open", watching_open)
    monkeypatch.setattr("builtins.open", watching_builtin_open)
    target = FIXTURES / "hostile" / case["file"]
    introspect.inspect(target)
    assert opened == [str(target)]
