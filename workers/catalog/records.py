"""What the catalog hands out and takes in: plain frozen models, never ORM objects (a task gets
an id, a CLI gets a record; nothing holds a session)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from workers.catalog.models import Source, Status
from workers.errors import PipelineError


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


Moment = Annotated[datetime, AfterValidator(_utc)]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImageRecord(Record):
    """One row of `images`."""

    id: uuid.UUID
    name: str | None
    status: Status
    disk_format: str | None
    container_format: str | None
    size: int | None
    checksum: str | None
    #: Tar members hashed on upload (an OVA's, for its manifest): data offset -> algorithm -> hex.
    member_digests: dict[int, dict[str, str]] | None = Field(default=None, repr=False)
    virtual_size: int | None
    location: str | None
    owner: str | None
    created_at: Moment
    updated_at: Moment
    verdict: str | None
    findings: list[dict[str, Any]] | None
    inspected_format: str | None
    inspected_virtual_size: int | None
    inspector_version: int | None
    inspected_at: Moment | None
    inspection_task: str | None
    job_id: str | None
    claim_token: str | None
    deliveries: int
    #: An admin's `disk_format` property, where the audit (`Catalog.mismatched`) looked it up.
    disk_format_override: str | None = None

    @property
    def mismatches(self) -> list[str]:
        """Where what was declared (or first found) and what the last inspection read disagree."""
        from introspect.inspector import SATISFIES

        found: list[str] = []
        declared, inspected = self.disk_format, self.inspected_format
        if declared and inspected and declared != inspected and inspected not in SATISFIES.get(declared, ()):
            found.append(f"disk_format {declared} but the content is {inspected}")
        override = self.disk_format_override
        if override and inspected and override != inspected and inspected not in SATISFIES.get(override, ()):
            found.append(f"disk_format overridden by an admin as {override} but the content is {inspected}")
        vsize, inspected_vsize = self.virtual_size, self.inspected_virtual_size
        if vsize is not None and inspected_vsize is not None and vsize != inspected_vsize:
            found.append(f"virtual_size {vsize} but the content says {inspected_vsize}")
        return found


class PropertyValue(Record):
    """One value of one key from one source."""

    key: str
    source: Source
    value: str
    inspector_version: int | None
    task_id: str | None
    set_by: str | None
    set_at: Moment


class Property(Record):
    """A key as `images show` presents it: the effective value, and both sources side by side."""

    key: str
    value: str
    source: Source
    introspected: PropertyValue | None
    admin: PropertyValue | None


class Change(Record):
    """One row of the audit history."""

    id: int
    key: str
    old: str | None
    new: str | None
    source: Source
    actor: str
    at: Moment
    task_id: str | None


class Claim(Record):
    """What an inspection needs from the image it just claimed."""

    image_id: uuid.UUID
    token: str
    deliveries: int
    location: str | None
    disk_format: str | None
    virtual_size: int | None
    #: What the image was declared with (Glance's bare, ova, ovf, compressed): content that is
    #: another is `image.container_mismatch`.
    container_format: str | None = None
    #: The tar members' digests taken when the data was uploaded (see ImageRecord): an OVA's
    #: manifest is verified against them.
    member_digests: dict[int, dict[str, str]] | None = None


class Stale(Record):
    """An image a sweep took to queue again (workers/sweep.py): its status, when it last moved, and
    the mark the sweep left on it (its new `updated_at`), which `give_back` removes."""

    image_id: uuid.UUID
    status: Status
    seen: Moment
    marked: Moment


class Outcome(Record):
    """What an inspection writes back: the image's new status and its introspected properties."""

    status: Status
    verdict: str
    findings: list[dict[str, Any]]
    inspected_format: str | None
    inspected_virtual_size: int | None
    inspector_version: int
    properties: dict[str, str]
    #: Set only when the image declared no disk_format (virtual_size, container_format): the first
    #: inspection's, container_format in Glance's words (an imported OVA is `ova`, a gzip stream
    #: `compressed`), as Glance would have them declared.
    adopt_format: str | None = None
    adopt_virtual_size: int | None = None
    adopt_container_format: str | None = None


class Selection(Record):
    """Which images a re-run takes. Criteria combine with AND; primitives only (it travels as a
    task argument)."""

    all: bool = False
    ids: list[uuid.UUID] = Field(default_factory=list)
    formats: list[str] = Field(default_factory=list)
    statuses: list[Status] = Field(default_factory=list)
    inspector_older_than: int | None = None
    failed: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.all
            or self.ids
            or self.formats
            or self.statuses
            or self.failed
            or self.inspector_older_than is not None
        )

    def require(self) -> None:
        """An empty selection is a mistake, never "everything" (that is `all`): every catalog
        refuses it the same way."""
        if self.empty:
            raise PipelineError(
                "say what to re-run: --all, --format F, --status S, --inspector-older-than V, --failed "
                "or image ids"
            )
