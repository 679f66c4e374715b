"""What a task does, as plain functions: the Celery tasks (workers/tasks.py) and `--inline` call
the same code. Load the image, inspect it with the library, write the result back.

The poison counter: `Catalog.claim` counts a delivery (and commits) before any byte is read. An
inspection that finishes, or stops for a transient fault, gives its count back; one that kills
its worker cannot, so after `delivery_limit` deaths the next delivery records an `error` verdict
instead of inspecting again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import introspect
from introspect.errors import UsageError
from introspect.model import Finding, Severity, Verdict
from introspect.safety import DEFAULT_POLICY, Policy, rule
from introspect.sources import ByteSource
from workers.catalog import Catalog, Claim, Outcome, Selection, Status
from workers.errors import NoData, StoreUnavailable, Transient
from workers.store import open_location

if TYPE_CHECKING:
    from workers.glance.catalog import GlanceCatalog

WORKER_LOST = rule(
    "pipeline.worker_lost", Severity.REJECT, "inspecting the image killed the worker on every delivery"
)
VIRTUAL_SIZE_CHANGED = rule(
    "pipeline.virtual_size_changed", Severity.REJECT, "the content's virtual size differs from the recorded"
)
DATA_MISSING = rule("pipeline.data_missing", Severity.REJECT, "the image's data cannot be read")

STATUS_OF: dict[Verdict, Status] = {
    Verdict.OK: Status.ACTIVE,
    Verdict.REJECTED: Status.REJECTED,
    Verdict.ERROR: Status.ERROR,
}


def introspect_image(
    catalog: Catalog | GlanceCatalog,
    image_id: uuid.UUID | str,
    *,
    task_id: str | None,
    job_id: str | None = None,
    delivery_limit: int = 3,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """Inspect one image and write the result back; returns a small summary for the task result.

    Raises `Transient` subclasses for faults worth a retry; everything about the image itself
    ends up in the catalog as a verdict.
    """
    claim = catalog.claim(image_id, token=uuid.uuid4().hex, task_id=task_id)
    if claim.deliveries > delivery_limit:
        deaths = claim.deliveries - 1
        outcome = _outcome_of_error(
            WORKER_LOST.finding(
                f"the worker died {deaths} times inspecting this image (limit {delivery_limit}): it is "
                "treated as hostile; inspect it offline with `introspect inspect` before importing it again"
            )
        )
    else:
        opener: Callable[[str], ByteSource] = getattr(catalog, "open_location", open_location)
        try:
            outcome = inspect_claimed(claim, policy or DEFAULT_POLICY, opener=opener)
        except Transient:
            catalog.release(claim)
            raise
    written = catalog.finish(claim, outcome, task_id=task_id, job_id=job_id)
    return {"image_id": str(claim.image_id), "status": str(outcome.status), "written": written}


def inspect_claimed(
    claim: Claim, policy: Policy, *, opener: Callable[[str], ByteSource] = open_location
) -> Outcome:
    """Run the library on the claimed image's bytes and turn the report into what gets written.
    `opener` turns the claim's location into bytes: the store's, or the catalog's own (Glance)."""
    if claim.location is None:
        return _outcome_of_error(
            DATA_MISSING.finding("the image has no location: its upload never finished; import it again")
        )
    try:
        # a store fault (StoreUnavailable, a Glance outage) is a SourceError: inspect() lets it
        # through to the task, which retries; an OSError of the disk is one too
        with opener(claim.location) as opened:
            report = introspect.inspect(opened, expect=claim.disk_format, policy=policy)
    except OSError as error:
        raise StoreUnavailable(f"reading {claim.location} failed: {error}") from error
    except NoData as error:
        return _outcome_of_error(DATA_MISSING.finding(str(error)))
    except UsageError as error:
        return _outcome_of_error(DATA_MISSING.finding(f"the image cannot be inspected: {error}"))
    findings = list(report.findings)
    parsed = report.verdict != Verdict.ERROR
    if parsed and claim.virtual_size is not None and report.virtual_size != claim.virtual_size:
        changed = VIRTUAL_SIZE_CHANGED.finding(
            f"the image was recorded with virtual_size {claim.virtual_size} but its content now says "
            f"{report.virtual_size}: the bytes changed under the same image; import them as a new image"
        )
        findings.extend(policy.apply([changed]))
    verdict = policy.verdict(findings, parsed=parsed)
    return Outcome(
        status=STATUS_OF[verdict],
        verdict=verdict,
        findings=[finding.model_dump(mode="json") for finding in findings],
        inspected_format=report.format,
        inspected_virtual_size=report.virtual_size,
        inspector_version=introspect.INSPECTOR_VERSION,
        properties=report.properties,
        adopt_format=report.format if parsed and claim.disk_format is None else None,
        adopt_virtual_size=report.virtual_size if parsed and claim.virtual_size is None else None,
    )


def _outcome_of_error(finding: Finding) -> Outcome:
    return Outcome(
        status=Status.ERROR,
        verdict=Verdict.ERROR,
        findings=[finding.model_dump(mode="json")],
        inspected_format=None,
        inspected_virtual_size=None,
        inspector_version=introspect.INSPECTOR_VERSION,
        properties={},
    )


def fan_out(
    catalog: Catalog | GlanceCatalog,
    selection: Selection,
    enqueue: Callable[[list[uuid.UUID]], object],
    *,
    batch: int = 500,
) -> int:
    """Hand every selected image to `enqueue`, a page of ids at a time (memory: one page)."""
    total = 0
    for page in catalog.select_ids(selection, batch=batch):
        enqueue(page)
        total += len(page)
    return total
