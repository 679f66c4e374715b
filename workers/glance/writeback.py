"""Write introspected properties to a Glance image, and never over someone else's value.

Each write-back is: read the image -> compare every key with the marker (ownership.py says
which keys are still introspect's) -> one atomic JSON-patch
(`application/openstack-images-v2.1-json-patch`, string values only) that adds or replaces our
keys, removes the ones we no longer produce, and rewrites the marker.

The race between the read and the PATCH is accepted, as Glance offers nothing to close it: a
key removed meanwhile makes the PATCH fail with 409 (nothing is applied: a PATCH is all or
nothing), and we read again and retry. A value an admin changes within that one round trip
would be overwritten.

Outcomes other than success, each with a message that says what to do: 403 (a property
protection forbids a key: that key is left out, the rest written), 413 (image_property_quota:
the most useful keys go in first, the others are reported), 404 (the image was deleted), and an
image that is not active or still importing: nothing is written.

Never written: disk_format, virtual_size and the other image attributes (a mismatch is a
finding, not a fix), any `os_glance_*` key (reserved by Glance), non-string values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from workers.glance.client import Conflict, Forbidden, GlanceClient, ImageGone, QuotaExceeded
from workers.glance.ownership import MARKER, Plan, now_utc, plan, priority, ready, writable

log = logging.getLogger(__name__)

#: How often one write-back re-reads after a 409 or drops a forbidden key before giving up.
MAX_ROUNDS = 8
FORBIDDEN_KEY = re.compile(r"Attribute '([^']+)'")


class Status(StrEnum):
    """How one write-back ended."""

    WRITTEN = "written"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    NOT_ACTIVE = "not_active"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"
    QUOTA = "quota"


@dataclass
class WriteResult:
    """How one write-back ended, for the task's result and the operator."""

    status: Status
    message: str
    written: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    image: dict[str, Any] | None = None


def write_back(
    client: GlanceClient,
    image_id: str,
    desired: Mapping[str, object],
    *,
    data: str | None,
    inspector: str,
    image: dict[str, Any] | None = None,
    job: str | None = None,
    drop: Sequence[str] = (),
) -> WriteResult:
    """One atomic JSON-patch with introspect's properties; see the module docstring.

    After a 413 the new keys go in by priority, as many per PATCH as still fit: the number is
    halved on each 413 and kept after each success (the room left is unknown, and a PATCH that
    fails changes nothing), so a quota that leaves room for k of n keys costs about 2·log2(n)
    PATCHes, and the keys that never fit are reported as left out.
    """
    wanted, refused = writable(desired)
    forbidden: list[str] = []
    written: dict[str, str] = {}
    removed: list[str] = []
    room: int | None = None  # new keys per PATCH, once a 413 said the quota is near
    for _ in range(MAX_ROUNDS + len(wanted) + 2 * max(len(wanted), 1).bit_length()):
        if image is None:
            try:
                image = client.get_image(image_id)
            except ImageGone:
                return WriteResult(
                    Status.DELETED, f"image {image_id} was deleted: nothing to write", refused=refused
                )
        reason = ready(image)
        if reason:
            return WriteResult(Status.NOT_ACTIVE, f"image {image_id}: {reason}", refused=refused, image=image)
        the_plan = plan(image, wanted, data=data, inspector=inspector, job=job, drop=drop)
        ranked = sorted(the_plan.add, key=priority)
        adds = ranked if room is None else ranked[:room]
        left_out = ranked[len(adds) :]
        if the_plan.empty:
            return _result(image_id, the_plan, image, refused, forbidden, written, removed, left_out)
        if room == 0 and not (the_plan.replace or the_plan.remove or MARKER in image):
            if written:  # an earlier round wrote what fitted
                return _result(image_id, the_plan, image, refused, forbidden, written, removed, left_out)
            return _no_room(image_id, image, refused, ranked)
        try:
            image = client.patch_image(image_id, the_plan.ops(adds=adds, now=now_utc()))
        except Conflict as error:
            log.info("image %s changed while we wrote (%s): reading it again", image_id, error.text)
            image = None
            continue
        except ImageGone:
            return WriteResult(
                Status.DELETED, f"image {image_id} was deleted while introspect wrote to it", refused=refused
            )
        except QuotaExceeded:
            if room == 0:
                return _no_room(image_id, image, refused, ranked)
            room = len(adds) // 2
            continue
        except Forbidden as error:
            key = _forbidden_key(error.text)
            if key is None or key not in wanted:
                return WriteResult(
                    Status.FORBIDDEN,
                    f"image {image_id}: Glance refused the write ({error.text}): give introspect's user "
                    "a role that may modify images and create/update/delete its properties",
                    refused=refused,
                    forbidden=forbidden,
                    image=image,
                )
            forbidden.append(key)
            del wanted[key]
            continue
        written.update({key: the_plan.add[key] for key in adds})
        written.update(the_plan.replace)
        removed.extend(the_plan.remove)
        if not left_out or not adds:  # all in, or the quota leaves room for none of the rest
            return _result(image_id, the_plan, image, refused, forbidden, written, removed, left_out)
    return WriteResult(
        Status.CONFLICT,
        f"image {image_id} kept changing while introspect wrote to it: run it again later",
        refused=refused,
        forbidden=forbidden,
        written=written,
    )


def _no_room(
    image_id: str, image: dict[str, Any], refused: dict[str, str], left_out: list[str]
) -> WriteResult:
    return WriteResult(
        Status.QUOTA,
        f"image {image_id} has no room for introspect's properties (image_property_quota): "
        "raise the quota or remove unused properties",
        refused=refused,
        left_out=left_out,
        image=image,
    )


def _forbidden_key(text: str) -> str | None:
    found = FORBIDDEN_KEY.search(text)
    return found.group(1) if found else None


def _result(
    image_id: str,
    the_plan: Plan,
    image: dict[str, Any],
    refused: dict[str, str],
    forbidden: list[str],
    written: dict[str, str],
    removed: list[str],
    left_out: list[str],
) -> WriteResult:
    status = Status.WRITTEN if written or removed else Status.UNCHANGED
    parts = [f"image {image_id}: " + (f"{len(written)} written" if written else "no property to change")]
    if removed:
        parts.append(f"{len(removed)} removed")
    if the_plan.kept:
        parts.append("kept someone else's value of " + ", ".join(sorted(the_plan.kept)))
    if forbidden:
        parts.append(
            "forbidden by property protections: "
            + ", ".join(forbidden)
            + " (let introspect's role create and update them)"
        )
    if left_out:
        parts.append(
            "left out by image_property_quota: "
            + ", ".join(left_out)
            + " (raise the quota or remove unused properties)"
        )
    return WriteResult(
        status,
        "; ".join(parts),
        written=written,
        removed=removed,
        kept=dict(the_plan.kept),
        left_out=left_out,
        forbidden=forbidden,
        refused=refused,
        image=image,
    )
