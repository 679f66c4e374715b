"""One image inspected and its outcome written, against any catalog: `introspect_image` is what
every trigger calls (the Celery task, `import --inline`, `rerun`, the Glance listener, `glance
sync` inline or queued, `glance inspect`), so the findings, the verdict and what gets written
cannot drift apart between them. Load the image, inspect it with the library, write the result back.
(The Glance import plugin runs inside Glance's own process, where no catalog exists: it shares
the write-back's properties, ownership.py's `desired`, and the first inspection after the import,
by the listener or the poller, is this one.)

The poison counter: `claim` counts a delivery (and commits) before any byte is read. An
inspection that finishes, or stops for a transient fault, gives its count back; one that kills
its worker cannot, so after `delivery_limit` deaths the next delivery records an `error` verdict
instead of inspecting again.

Every way an inspection can end, once the image is claimed: a verdict (the library's), a transient
fault given back for a retry (on the last try, a fault of the store becomes the verdict
`pipeline.store_unavailable`), running out of time (`pipeline.time_limit`), or any other exception
(`pipeline.internal_error`, naming it; its traceback goes to the log). Nothing leaves an image
`importing` but a process that dies, and that is the sweep's to pick up (workers/sweep.py), the
delivery counted.

The virtual-size rule, the same on every path: when the catalog records a virtual_size and the
content states another, the finding is `pipeline.virtual_size_changed`, severity reject (a
policy may demote it), and the recorded value is never rewritten. In the SQL catalog the
recorded value is the first inspection's: the bytes changed under the same image. In Glance it
is Glance's own (its format inspector computes it at upload since 2023.x): two parsers disagree
about the disk's size, which is the confusion a crafted image lives on (Nova sizes the disk by
Glance's value, the hypervisor by the header), so it is rejected there too, not merely warned.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import introspect
from introspect.errors import UsageError
from introspect.formats import BY_NAME, canonical_name
from introspect.inspector import GLANCE_CONTAINER_WORD
from introspect.model import Finding, Verdict
from introspect.safety import (
    DATA_MISSING,
    DEFAULT_POLICY,
    STORE_UNAVAILABLE,
    TIME_LIMIT,
    VIRTUAL_SIZE_CHANGED,
    WORKER_LOST,
    Policy,
)
from introspect.safety import PIPELINE_INTERNAL_ERROR as INTERNAL_ERROR
from introspect.sources import ByteSource
from introspect.streaming import DigestedSource
from workers.catalog import CatalogBackend, Claim, Outcome, Selection, Status
from workers.errors import InvalidTransition, NoData, NotFound, StoreUnavailable, Transient, UpToDate
from workers.policy import configured_policy

log = logging.getLogger(__name__)

#: How much of an unexpected exception's text its finding quotes.
QUOTED = 200

log = logging.getLogger(__name__)

STATUS_OF: dict[Verdict, Status] = {
    Verdict.OK: Status.ACTIVE,
    Verdict.REJECTED: Status.REJECTED,
    Verdict.ERROR: Status.ERROR,
}


class State(StrEnum):
    """Where one call of `introspect_image` ended."""

    INSPECTED = "inspected"  # inspected, and the outcome written (unless a newer delivery won)
    SKIPPED = "skipped"  # not forced, and this inspector version already read the current data
    NOT_INSPECTABLE = "not_inspectable"  # no data yet, or its status forbids an inspection
    DELETED = "deleted"  # no such image (any more)


class Fetched(Protocol):
    @property
    def requests(self) -> int: ...

    @property
    def bytes(self) -> int: ...


@runtime_checkable
class Fetching(Protocol):
    """A source that counts what it fetched from its store (Glance's range source, whose cache
    makes a re-run of unchanged data cost nothing): the count goes into the summary."""

    @property
    def stats(self) -> Fetched: ...


@dataclass(frozen=True)
class TimeLimit:
    """The exception a runner raises in an inspection that runs out of time (Celery's
    SoftTimeLimitExceeded), and its limit in seconds: caught, it is the verdict `pipeline.time_limit`."""

    exception: type[BaseException]
    seconds: float


@dataclass(frozen=True)
class Inspection:
    """What one call did: the state, and when inspected, the outcome written."""

    image_id: str
    state: State
    message: str
    outcome: Outcome | None = None
    written: bool = False
    data_requests: int | None = None
    data_bytes: int | None = None

    def summary(self) -> dict[str, Any]:
        """Primitives only: what a task returns and `glance inspect --json` prints."""
        out: dict[str, Any] = {"image_id": self.image_id, "state": str(self.state), "message": self.message}
        if self.outcome is not None:
            out |= {
                "status": str(self.outcome.status),
                "verdict": self.outcome.verdict,
                "format": self.outcome.inspected_format,
                "findings": [finding["code"] for finding in self.outcome.findings],
                "written": self.written,
            }
        if self.data_requests is not None:
            out |= {"data_requests": self.data_requests, "data_bytes": self.data_bytes}
        return out


def introspect_image(
    catalog: CatalogBackend,
    image_id: uuid.UUID | str,
    *,
    task_id: str | None,
    job_id: str | None = None,
    delivery_limit: int = 3,
    policy: Policy | None = None,
    force: bool = True,
    time_limit: TimeLimit | None = None,
    final_attempt: bool = False,
    unmoved_since: datetime | None = None,
) -> Inspection:
    """Inspect one image and write the result back (see the module docstring). Unforced, an
    image whose current data this inspector version already read is skipped.

    Raises `Transient` subclasses for faults worth a retry (`NotReady` among them), except a fault
    of the store on the `final_attempt`, which is recorded; everything about the image itself ends
    up in the catalog as a verdict, and so does any other exception once the image is claimed. An
    image that is gone or cannot be inspected from its status is an `Inspection` that says so.
    `unmoved_since` is a sweep's mark (workers/sweep.py): skipped if the image moved since.
    """
    policy = policy or configured_policy()  # INTROSPECT_POLICY, whatever the trigger; before any claim
    try:
        return _claimed_and_written(
            catalog,
            image_id,
            task_id,
            job_id,
            delivery_limit,
            policy,
            force,
            time_limit,
            final_attempt,
            unmoved_since,
        )
    except NotFound as error:
        return Inspection(str(image_id), State.DELETED, str(error))
    except UpToDate as error:
        return Inspection(str(image_id), State.SKIPPED, str(error))
    except (NoData, InvalidTransition) as error:
        return Inspection(str(image_id), State.NOT_INSPECTABLE, str(error))


def _claimed_and_written(
    catalog: CatalogBackend,
    image_id: uuid.UUID | str,
    task_id: str | None,
    job_id: str | None,
    delivery_limit: int,
    policy: Policy | None,
    force: bool,
    time_limit: TimeLimit | None,
    final_attempt: bool,
    unmoved_since: datetime | None,
) -> Inspection:
    claim = catalog.claim(
        image_id, token=uuid.uuid4().hex, task_id=task_id, force=force, unmoved_since=unmoved_since
    )
    fetched: Fetched | None = None
    if claim.deliveries > delivery_limit:
        deaths = claim.deliveries - 1
        outcome = _outcome_of_error(
            WORKER_LOST.finding(
                f"the worker died {deaths} times inspecting this image (limit {delivery_limit}): it is "
                "treated as hostile; inspect it offline with `introspect inspect` before importing it again"
            )
        )
    else:
        try:
            outcome, fetched = inspect_claimed(claim, policy or DEFAULT_POLICY, opener=catalog.open_location)
        except StoreUnavailable as error:
            if not final_attempt:
                catalog.release(claim)
                raise
            outcome = _outcome_of_error(
                STORE_UNAVAILABLE.finding(
                    f"{_one_line(error)}; this was the last retry: check the store, then "
                    f"`introspect rerun {claim.image_id}`"
                )
            )
        except Transient:
            catalog.release(claim)
            raise
        except Exception as error:
            outcome = _outcome_of_error(_unexpected(error, claim, time_limit))
    written = catalog.finish(claim, outcome, task_id=task_id, job_id=job_id)
    message = f"image {claim.image_id}: {outcome.status}" + (
        "" if written else ", not written: a newer delivery holds the image"
    )
    return Inspection(
        str(claim.image_id),
        State.INSPECTED,
        message,
        outcome=outcome,
        written=written,
        data_requests=fetched.requests if fetched else None,
        data_bytes=fetched.bytes if fetched else None,
    )


def inspect_claimed(
    claim: Claim, policy: Policy, *, opener: Callable[[str], ByteSource]
) -> tuple[Outcome, Fetched | None]:
    """Run the library on the claimed image's bytes and turn the report into what gets written;
    also what reading them fetched, when the source counts it. `opener` is the catalog's."""
    if claim.location is None:
        return _outcome_of_error(
            DATA_MISSING.finding("the image has no location: its upload never finished; import it again")
        ), None
    declared = canonical_name(claim.disk_format or "")
    started = time.monotonic()
    try:
        # a store fault (StoreUnavailable, a Glance outage) is a SourceError: inspect() lets it
        # through to the task, which retries; an OSError of the disk is one too
        with opener(claim.location) as opened:
            source: ByteSource = opened
            if claim.member_digests:
                # taken by the upload of these very bytes: the manifest check reads nothing again
                source = DigestedSource(opened, claim.member_digests)
                policy = policy.model_copy(update={"verify_manifest": True})
            report = introspect.inspect(
                source,
                expect=declared if declared in BY_NAME else None,
                expect_container=claim.container_format,
                policy=policy,
            )
    except OSError as error:
        raise StoreUnavailable(f"reading {claim.location} failed: {error}") from error
    except NoData as error:
        return _outcome_of_error(DATA_MISSING.finding(str(error))), None
    except UsageError as error:
        return _outcome_of_error(DATA_MISSING.finding(f"the image cannot be inspected: {error}")), None
    findings = list(report.findings)
    parsed = report.verdict != Verdict.ERROR
    if parsed and claim.virtual_size is not None and report.virtual_size != claim.virtual_size:
        changed = VIRTUAL_SIZE_CHANGED.finding(
            f"the catalog records virtual_size {claim.virtual_size} but the image's content states "
            f"{report.virtual_size}: the bytes changed under the same image, or the catalog read them "
            "differently; neither is rewritten: check the image, and import it again as a new image"
        )
        findings.extend(policy.apply([changed]))
    verdict = policy.verdict(findings, parsed=parsed)
    elapsed = time.monotonic() - started
    log.info(
        "inspected %s: %s in %.3fs, %d bytes in %d reads",
        claim.image_id, verdict, elapsed, report.bytes_read, report.reads,
        extra={"image_id": str(claim.image_id), "verdict": str(verdict), "duration_s": round(elapsed, 6),
               "bytes_read": report.bytes_read, "reads": report.reads},
    )  # fmt: skip
    outcome = Outcome(
        status=STATUS_OF[verdict],
        verdict=verdict,
        findings=[finding.model_dump(mode="json") for finding in findings],
        inspected_format=report.format,
        inspected_virtual_size=report.virtual_size,
        inspector_version=introspect.INSPECTOR_VERSION,
        properties=report.properties,
        adopt_format=report.format if parsed and claim.disk_format is None else None,
        adopt_virtual_size=report.virtual_size if parsed and claim.virtual_size is None else None,
        # Glance's word for what was found (a gzip stream is `compressed`; a plain tar has none)
        adopt_container_format=GLANCE_CONTAINER_WORD.get(report.container_format)
        if parsed and claim.container_format is None
        else None,
    )
    return outcome, opened.stats if isinstance(opened, Fetching) else None


def _unexpected(error: Exception, claim: Claim, time_limit: TimeLimit | None) -> Finding:
    """The finding of an exception that is neither a verdict nor transient: out of time, or a bug."""
    if time_limit is not None and isinstance(error, time_limit.exception):
        return TIME_LIMIT.finding(
            f"the inspection did not finish within {time_limit.seconds:g} s (INTROSPECT_TASK_TIME_LIMIT): "
            f"its location stalled, or a parser looped; check {claim.location}, then "
            f"`introspect rerun {claim.image_id}`"
        )
    log.exception("inspecting image %s stopped on an unexpected exception", claim.image_id)
    return INTERNAL_ERROR.finding(
        f"the inspection stopped on an unexpected {type(error).__name__}: {_one_line(error)}; a bug: "
        f"report it with the worker's log (the traceback is there), then `introspect rerun {claim.image_id}`"
    )


def _one_line(error: BaseException) -> str:
    """An exception's text, its first line only, quoted up to QUOTED characters."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else "(no message)"
    return text if len(text) <= QUOTED else text[: QUOTED - 1] + "…"


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
    catalog: CatalogBackend,
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
