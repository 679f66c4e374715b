"""`introspect glance sync [--since T]`: the poller, for when notifications are off or were lost.

It lists active images changed since T (`updated_at=gte:T`, oldest change first, page by page;
of every project and visibility, hidden ones included: see GlanceClient.iter_images)
and hands each one whose marker does not cover its current data (checksum and inspector
version) to `dispatch`. Our own write-back changes an image's updated_at too, so the next pass
sees it again and skips it by its marker: nothing is inspected twice. `--watch` repeats the pass,
starting each from the newest updated_at of the last one (Glance's timestamps have one-second
resolution, so a pass starts at that second again rather than after it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workers.glance.client import GlanceClient
from workers.glance.ownership import already_inspected, ready

log = logging.getLogger(__name__)

Dispatch = Callable[[dict[str, Any]], None]


@dataclass
class Pass:
    """What one pass over the catalog saw and did."""

    seen: int = 0
    dispatched: int = 0
    up_to_date: int = 0
    not_ready: int = 0
    newest: str | None = None


def parse_since(value: str) -> str:
    """An ISO 8601 time (with or without zone; UTC assumed) -> Glance's filter form."""
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {value!r} is not a time: use ISO 8601, e.g. 2026-11-29T16:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sync_pass(
    client: GlanceClient, dispatch: Dispatch, *, since: str | None = None, force: bool = False
) -> Pass:
    """One pass: every active image changed since `since` that needs an inspection goes to `dispatch`."""
    filters = {"status": "active"}
    if since:
        filters["updated_at"] = f"gte:{since}"
    result = Pass(newest=since)
    for image in client.iter_images(**filters):
        result.seen += 1
        updated = image.get("updated_at")
        if isinstance(updated, str) and (result.newest is None or updated > result.newest):
            result.newest = updated
        if ready(image) is not None:
            result.not_ready += 1
        elif not force and already_inspected(image):
            result.up_to_date += 1
        else:
            dispatch(image)
            result.dispatched += 1
    log.info(
        "sync since %s: %d images, %d dispatched, %d up to date, %d not ready",
        since or "the beginning", result.seen, result.dispatched, result.up_to_date, result.not_ready,
    )  # fmt: skip
    return result
