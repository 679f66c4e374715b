"""One Glance image, inspected and written back: the unit every trigger ends in.

    read the image record -> wait unless it is active and no import holds it -> skip it if the
    marker says its current data was inspected by this inspector version (unless forced) ->
    inspect its bytes through single-range reads -> compare with what Glance declares ->
    one write-back

A failure to read the bytes (Glance unreachable, the image deleted mid-read) is raised, never
turned into a verdict: the image is not bad, the read was. Everything else ends in an
`Outcome` whose `summary()` is the small dict a task returns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import introspect
from introspect.formats import BY_NAME, canonical_name
from introspect.model import Finding, Severity
from introspect.report import INSPECTOR_VERSION, Report
from introspect.safety import Policy, rule
from workers.glance.client import GlanceClient, ImageGone
from workers.glance.ownership import already_inspected, data_identity, desired_properties, ready
from workers.glance.source import FetchStats, GlanceSource, RangeCache
from workers.glance.writeback import WriteResult, write_back

log = logging.getLogger(__name__)

VIRTUAL_SIZE_MISMATCH = rule(
    "glance.virtual_size_mismatch",
    Severity.WARN,
    "Glance's virtual_size for the image differs from what the image's own metadata says",
)


class State(StrEnum):
    """Where one image's inspection ended."""

    INSPECTED = "inspected"  # inspected; `write` says what was written
    SKIPPED = "skipped"  # its current data was already inspected by this version
    NOT_READY = "not_ready"  # not active yet, or an import still holds it: try later
    NO_DATA = "no_data"  # active without bytes (a location-less image): nothing to read
    DELETED = "deleted"


@dataclass
class Outcome:
    """What happened to one image."""

    image_id: str
    state: State
    message: str
    report: Report | None = None
    write: WriteResult | None = None
    fetch: FetchStats = field(default_factory=FetchStats)

    def summary(self) -> dict[str, Any]:
        """Primitives only: what a Celery task returns and the CLI prints."""
        out: dict[str, Any] = {"image_id": self.image_id, "state": str(self.state), "message": self.message}
        if self.report is not None:
            out |= {
                "verdict": str(self.report.verdict),
                "format": self.report.format,
                "findings": [finding.code for finding in self.report.findings],
            }
        if self.write is not None:
            out |= {"write": str(self.write.status), "write_message": self.write.message}
        out |= {"data_requests": self.fetch.requests, "data_bytes": self.fetch.bytes}
        return out


def catalog_findings(image: Mapping[str, Any], report: Report) -> list[Finding]:
    """Where Glance's record disagrees with the content (disk_format is checked by `expect`)."""
    declared = image.get("virtual_size")
    if isinstance(declared, int) and report.virtual_size is not None and declared != report.virtual_size:
        return [
            VIRTUAL_SIZE_MISMATCH.finding(
                f"Glance records virtual_size {declared} but the image states {report.virtual_size}: "
                "introspect never rewrites it; check the image, and upload it again if it is wrong"
            )
        ]
    return []


def inspect_image(
    client: GlanceClient,
    image_id: str,
    *,
    cache: RangeCache | None = None,
    policy: Policy | None = None,
    force: bool = False,
    block: int = 64 * 1024,
    image: dict[str, Any] | None = None,
) -> Outcome:
    """Inspect one Glance image and write its properties back (see the module docstring)."""
    if image is None:
        try:
            image = client.get_image(image_id)
        except ImageGone:
            return Outcome(image_id, State.DELETED, f"image {image_id} does not exist (deleted?)")
    reason = ready(image)
    if reason:
        return Outcome(image_id, State.NOT_READY, f"image {image_id}: {reason}")
    if not force and already_inspected(image):
        return Outcome(image_id, State.SKIPPED, f"image {image_id}: its data was already inspected")
    size = image.get("size")
    if not isinstance(size, int) or size <= 0:
        return Outcome(image_id, State.NO_DATA, f"image {image_id} is active but has no data to read")
    source = GlanceSource(
        client, image_id, size=size, checksum=data_identity(image), cache=cache, block=block
    )
    declared = canonical_name(str(image.get("disk_format") or ""))
    # a failed range read raises GlanceUnavailable or GlanceError (SourceErrors): not a verdict
    report = introspect.inspect(
        source,
        expect=declared if declared in BY_NAME else None,
        policy=policy,
        name=f"glance:{image_id}",
    )
    extra = catalog_findings(image, report)
    if extra:
        report = report.model_copy(update={"findings": [*report.findings, *extra]})
    write = write_back(
        client,
        image_id,
        desired_properties(report),
        data=data_identity(image),
        inspector=str(INSPECTOR_VERSION),
        image=image,
    )
    log.info(
        "%s (%s, %d data bytes in %d requests)",
        write.message,
        report.verdict,
        source.stats.bytes,
        source.stats.requests,
    )
    return Outcome(image_id, State.INSPECTED, write.message, report=report, write=write, fetch=source.stats)
