"""The catalog's tables (SQLAlchemy 2.x declarative models; the migrations create the same).

Properties are rows keyed by (image, key, source): the introspected value and the admin value of
one key are two rows. A worker's write-back touches only `introspected` rows and an admin's only
`admin` rows, so neither can ever overwrite the other, whatever the interleaving; the effective
value is the admin row when there is one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, cast

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workers.catalog.columns import TABLE_OPTIONS, AutoId, Id, Moment


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(StrEnum):
    """Glance's image statuses that this pipeline uses, plus `rejected` (parsed, but unsafe)."""

    QUEUED = "queued"  # the record exists, no data yet
    SAVING = "saving"  # data being written to the store (or the location being registered)
    IMPORTING = "importing"  # an inspection holds the image
    ACTIVE = "active"
    REJECTED = "rejected"  # the last inspection rejected it; its findings say why
    ERROR = "error"  # the last inspection could not read it (or it killed the workers)


#: Every allowed move. `importing -> importing` is a new delivery of the same inspection taking
#: over from one that died; `active/rejected/error -> importing` is a re-run.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.SAVING}),
    Status.SAVING: frozenset({Status.IMPORTING}),
    Status.IMPORTING: frozenset({Status.IMPORTING, Status.ACTIVE, Status.REJECTED, Status.ERROR}),
    Status.ACTIVE: frozenset({Status.IMPORTING}),
    Status.REJECTED: frozenset({Status.IMPORTING}),
    Status.ERROR: frozenset({Status.IMPORTING}),
}

#: Statuses an inspection may end in, by the library's verdict.
DONE = frozenset({Status.ACTIVE, Status.REJECTED, Status.ERROR})


class Source(StrEnum):
    """Who a property value (or a change to it) comes from."""

    INTROSPECTED = "introspected"
    ADMIN = "admin"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Image(Base):
    """One image: what was declared, where its bytes are, and what its last inspection found."""

    __tablename__ = "images"
    __table_args__ = TABLE_OPTIONS

    id: Mapped[uuid.UUID] = mapped_column(Id, primary_key=True, default=uuid.uuid4)
    name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), index=True)
    #: Declared at import, or (when nothing was declared) the first format an inspection found;
    #: never rewritten afterwards: a later disagreement is a finding.
    disk_format: Mapped[str | None] = mapped_column(String(32), index=True)
    container_format: Mapped[str | None] = mapped_column(String(32))
    size: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(64))  # sha256, hex
    #: An OVA's tar members hashed by the upload that stored them (data offset -> algorithm ->
    #: hex digest): its inspections verify the manifest against them, reading nothing again.
    member_digests: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Set by the first successful inspection, never rewritten (same rule as disk_format).
    virtual_size: Mapped[int | None] = mapped_column(BigInteger)
    location: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(Moment, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Moment, default=utcnow)
    # The last inspection.
    verdict: Mapped[str | None] = mapped_column(String(16))
    findings: Mapped[list[Any] | None] = mapped_column(JSON)
    inspected_format: Mapped[str | None] = mapped_column(String(32))
    inspected_virtual_size: Mapped[int | None] = mapped_column(BigInteger)
    inspector_version: Mapped[int | None] = mapped_column(Integer, index=True)
    inspected_at: Mapped[datetime | None] = mapped_column(Moment)
    inspection_task: Mapped[str | None] = mapped_column(String(64))
    #: The re-run job whose task last finished this image (progress of `rerun --wait`).
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # The inspection in progress: whoever holds the token may write the result back.
    claim_token: Mapped[str | None] = mapped_column(String(64))
    #: Deliveries of the current inspection that did not finish (the worker died): the poison counter.
    deliveries: Mapped[int] = mapped_column(Integer, default=0)


class ImageProperty(Base):
    """One value of one key of one image, from one source (see the module docstring)."""

    __tablename__ = "image_properties"
    __table_args__ = TABLE_OPTIONS

    image_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    inspector_version: Mapped[int | None] = mapped_column(Integer)  # introspected rows
    task_id: Mapped[str | None] = mapped_column(String(64))  # introspected rows
    set_by: Mapped[str | None] = mapped_column(String(255))  # admin rows
    set_at: Mapped[datetime] = mapped_column(Moment, default=utcnow)


class PropertyChange(Base):
    """The audit history: every change of a value of either source, never updated or deleted
    (except with its image)."""

    __tablename__ = "property_history"
    __table_args__ = (Index("ix_property_history_image", "image_id", "id"), TABLE_OPTIONS)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    image_id: Mapped[uuid.UUID] = mapped_column(Id, ForeignKey("images.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(Moment, default=utcnow)
    task_id: Mapped[str | None] = mapped_column(String(64))


class DeletedImage(Base):
    """A tombstone: what a deleted image was, and its audit history, as they were at `delete`
    (the history outlives the image: `images history --deleted`)."""

    __tablename__ = "deleted_images"
    __table_args__ = TABLE_OPTIONS

    id: Mapped[uuid.UUID] = mapped_column(Id, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    deleted_at: Mapped[datetime] = mapped_column(Moment, default=utcnow)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    history: Mapped[list[Any]] = mapped_column(JSON)


images = cast(Table, Image.__table__)
properties = cast(Table, ImageProperty.__table__)
history = cast(Table, PropertyChange.__table__)
tombstones = cast(Table, DeletedImage.__table__)
