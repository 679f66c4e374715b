"""Imported by the workers of tests/workers/test_triggers.py (`celery worker --include`): the
Glance findings cap lowered to TEST_FINDINGS_CAP characters, so that an ordinary image's codes
exceed it and the test sees whether every trigger applies it. Does nothing without the variable."""

from __future__ import annotations

import os

from workers.glance import ownership

if cap := os.environ.get("TEST_FINDINGS_CAP"):
    ownership.MAX_FINDINGS_VALUE = int(cap)
