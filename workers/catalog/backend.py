"""The catalog contract: everything the pipeline, the CLI, re-runs and Glance sync ask of a catalog.

Implemented by the SQL catalog (workers/catalog/sql.py) and the Glance catalog
(workers/glance/catalog.py); workers/backends.py picks one from INTROSPECT_CATALOG, and
tests/workers/catalog/test_contract.py runs the same assertions against every backend.

One contract, not a narrower one per caller: the writes that only the SQL catalog can do
(`create`, `start_upload`, `set_data`, `delete`) stay in it, and a catalog that owns its images
(Glance) refuses them with a `PipelineError` whose one line says where to do it instead. The CLI
then needs no `isinstance` to tell catalogs apart, and the operator gets the advice, not a
traceback.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Protocol

from introspect.sources import ByteSource
from workers.catalog.models import Status
from workers.catalog.records import Change, Claim, ImageRecord, Outcome, Property, PropertyValue, Selection


class CatalogBackend(Protocol):
    """Where images and their properties live (see the module docstring)."""

    @property
    def url(self) -> str:
        """Where the catalog is, without a password, for messages."""
        ...

    # -- images ------------------------------------------------------------------------------------

    def get(self, image_id: uuid.UUID | str) -> ImageRecord:
        """One image; `NotFound` when there is none."""
        ...

    def images(
        self, *, statuses: Iterable[str] = (), formats: Iterable[str] = (), batch: int = 500
    ) -> Iterator[ImageRecord]:
        """Every image matching, fetched a page at a time."""
        ...

    def counts(self) -> dict[str, int]:
        """Images by status."""
        ...

    def statuses(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Status]:
        """The status of each id that exists."""
        ...

    def create(
        self, *, name: str | None = None, disk_format: str | None = None, owner: str | None = None
    ) -> uuid.UUID:
        """A new `queued` image, as `introspect import` declares it (refused by a catalog that owns
        its images)."""
        ...

    def start_upload(self, image_id: uuid.UUID) -> None: ...

    def set_data(
        self,
        image_id: uuid.UUID,
        *,
        location: str,
        size: int | None,
        checksum: str | None,
        member_digests: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        """Where the bytes are, once they are all there, and the tar members' digests the upload
        took (an OVA's: its manifest is then verified without a second read)."""
        ...

    def delete(self, image_id: uuid.UUID | str) -> ImageRecord: ...

    # -- inspections -------------------------------------------------------------------------------

    def claim(
        self,
        image_id: uuid.UUID | str,
        *,
        token: str,
        task_id: str | None,
        force: bool = True,
        unmoved_since: datetime | None = None,
    ) -> Claim:
        """Take the image for an inspection, counting one more delivery before any byte is read.
        Raises `NoData` (nothing to read yet), `InvalidTransition` (its status forbids it),
        `NotReady` (an upload or import still holds it), and, unless `force`, `UpToDate` when
        this inspector version already read its current data. With `unmoved_since` (a sweep's
        delivery, workers/sweep.py), only if the image has not moved since that mark:
        `Superseded` otherwise (a catalog that is never swept refuses it)."""
        ...

    def open_location(self, location: str) -> ByteSource:
        """The bytes at a claim's location (the caller closes the source)."""
        ...

    def release(self, claim: Claim) -> None:
        """A transient fault gives the delivery back (only deaths count towards the limit)."""
        ...

    def finish(
        self, claim: Claim, outcome: Outcome, *, task_id: str | None, job_id: str | None = None
    ) -> bool:
        """Write the inspection back if the claim is still ours; False when a newer delivery
        holds the image. Never overwrites a value an admin set."""
        ...

    # -- properties --------------------------------------------------------------------------------

    def values(self, image_id: uuid.UUID | str) -> list[PropertyValue]: ...

    def properties(self, image_id: uuid.UUID | str) -> list[Property]:
        """Each key with its effective value: the admin's when there is one."""
        ...

    def effective(self, image_id: uuid.UUID | str) -> dict[str, str]: ...

    def introspected(self, image_id: uuid.UUID | str) -> dict[str, str]: ...

    def set_admin(self, image_id: uuid.UUID | str, values: Mapping[str, str], *, actor: str) -> None:
        """Admin overrides: no re-run undoes them."""
        ...

    def unset_admin(self, image_id: uuid.UUID | str, keys: Iterable[str], *, actor: str) -> None:
        """Drop admin overrides; the introspected value shows again (after the next inspection
        where the catalog keeps only one value per key)."""
        ...

    def history(self, image_id: uuid.UUID | str) -> list[Change]:
        """The audit history (empty where the catalog keeps none)."""
        ...

    def deleted_history(self, image_id: uuid.UUID | str) -> list[Change]:
        """The audit history of an image `delete` removed, kept in its tombstone; a `PipelineError`
        where there is none (or the catalog deletes nothing itself)."""
        ...

    # -- re-runs -----------------------------------------------------------------------------------

    def select_ids(
        self, selection: Selection, *, batch: int = 500, exclude_job: str | None = None
    ) -> Iterator[list[uuid.UUID]]:
        """The ids a re-run takes, a page at a time."""
        ...

    def count(self, selection: Selection) -> int: ...

    def mismatched(self, *, batch: int = 500) -> Iterator[ImageRecord]:
        """Images whose declared disk_format/virtual_size disagree with their last inspection."""
        ...

    def job_progress(self, job_id: str) -> dict[str, int]:
        """Images finished by a re-run job, by status."""
        ...
