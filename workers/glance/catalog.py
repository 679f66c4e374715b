"""The catalog backend for Glance (INTROSPECT_CATALOG=glance): the pipeline's catalog operations
over the image API v2, so the worker task, `introspect rerun` and `introspect images show` work
on Glance's images.

Glance owns its images: their status, data and properties. What the SQL catalog keeps in its
own columns lives here in properties of the image:

- the last inspection: `introspect_verdict`, `introspect_findings` (codes), `introspect_format`,
  `introspect_virtual_size`, and the marker `introspect_written` (who owns which key, which data
  and inspector version, when, which re-run job);
- a claim: `introspect_claim` = `{"token":..,"deliveries":n,"task":..}`, written before any byte is
  read (so a worker that dies still counts towards the poison limit) and removed by the
  write-back's own PATCH.

Statuses map Glance's onto the pipeline's: queued -> queued; saving, uploading -> saving;
importing, or a claim held -> importing; active -> active, or rejected/error after the verdict
of that name; killed -> error; deactivated -> active. "Admin" values are Glance's values that
introspect did not write (see ownership.py); Glance keeps no history, so `history` is empty.
Creating, uploading and deleting images is Glance's business: those operations refuse.
The write-back is ownership.py's (`desired`, with its cap on the findings' codes) through
writeback.py: the same properties whichever trigger ran the inspection.

`open_location("glance:<id>")` gives the range source the pipeline reads an image through.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from introspect.policyfile import known_rules
from introspect.report import INSPECTOR_VERSION
from introspect.sources import ByteSource
from workers.catalog import (
    CatalogBackend,
    Change,
    Claim,
    ImageRecord,
    Outcome,
    Property,
    PropertyValue,
    Selection,
    Source,
    Status,
)
from workers.errors import InvalidTransition, NoData, NotFound, NotReady, PipelineError, UpToDate
from workers.glance.client import Forbidden, GlanceClient, ImageGone
from workers.glance.ownership import (
    ATTRIBUTES,
    MARKER,
    RESERVED_PREFIX,
    Marker,
    already_inspected,
    data_identity,
    desired,
    digest,
    now_utc,
    ready,
)
from workers.glance.settings import GlanceSettings, get_glance_settings
from workers.glance.source import GlanceSource, RangeCache
from workers.glance.writeback import Status as WriteStatus
from workers.glance.writeback import write_back

if TYPE_CHECKING:
    from workers.settings import Settings

log = logging.getLogger(__name__)

CLAIM = "introspect_claim"
SCHEME = "glance:"
#: Properties of ours that are bookkeeping, not findings about the image.
BOOKKEEPING = frozenset({MARKER, CLAIM})
GLANCE_STATUS = {
    "queued": Status.QUEUED,
    "saving": Status.SAVING,
    "uploading": Status.SAVING,
    "importing": Status.IMPORTING,
    "active": Status.ACTIVE,
    "deactivated": Status.ACTIVE,
    "killed": Status.ERROR,
}
VERDICT_STATUS = {"rejected": Status.REJECTED, "error": Status.ERROR}


def _time(value: object) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(UTC)


def _int(value: object) -> int | None:
    """A property's digits as an int (None when it holds anything else)."""
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _claim_of(image: Mapping[str, Any]) -> dict[str, Any]:
    try:
        claim = json.loads(str(image.get(CLAIM) or "{}"))
    except ValueError:
        return {}
    return claim if isinstance(claim, dict) else {}


def status_of(image: Mapping[str, Any]) -> Status:
    """The pipeline's status for a Glance image (see the module docstring)."""
    status = GLANCE_STATUS.get(str(image.get("status")), Status.ERROR)
    if status == Status.ACTIVE and _claim_of(image):
        return Status.IMPORTING
    if status == Status.ACTIVE:
        return VERDICT_STATUS.get(str(image.get("introspect_verdict")), Status.ACTIVE)
    return status


def record_of(image: Mapping[str, Any]) -> ImageRecord:
    """An ImageRecord from a Glance image (findings carry each rule's summary as their message:
    Glance keeps only the codes)."""
    marker = Marker.read(image)
    claim = _claim_of(image)
    codes = [code for code in str(image.get("introspect_findings") or "").split(",") if code]
    rules = known_rules()
    findings = [
        {
            "code": code,
            "severity": str(rules[code].severity) if code in rules else "warn",
            "message": rules[code].summary if code in rules else code,
        }
        for code in codes
    ]
    inspected_vsize = image.get("introspect_virtual_size")
    size = image.get("size")
    return ImageRecord(
        id=uuid.UUID(str(image["id"])),
        name=image.get("name"),
        status=status_of(image),
        disk_format=image.get("disk_format"),
        container_format=image.get("container_format"),
        size=size if isinstance(size, int) else None,
        checksum=image.get("checksum"),
        virtual_size=image.get("virtual_size") if isinstance(image.get("virtual_size"), int) else None,
        location=f"{SCHEME}{image['id']}" if isinstance(size, int) else None,
        owner=image.get("owner"),
        created_at=_time(image.get("created_at")),
        updated_at=_time(image.get("updated_at")),
        verdict=image.get("introspect_verdict"),
        findings=findings if marker else None,
        inspected_format=image.get("introspect_format"),
        inspected_virtual_size=_int(inspected_vsize),
        inspector_version=_int(marker.inspector) if marker else None,
        inspected_at=_time(marker.at) if marker and marker.at else None,
        inspection_task=claim.get("task"),
        job_id=marker.job if marker else None,
        claim_token=claim.get("token"),
        deliveries=int(claim.get("deliveries", 0)),
    )


def backend(settings: Settings) -> CatalogBackend:
    """The catalog of INTROSPECT_CATALOG=glance (workers/backends.py), from INTROSPECT_GLANCE_*.
    (Typed as the contract, so mypy checks `GlanceCatalog` keeps it.)"""
    return GlanceCatalog.from_settings()


class GlanceCatalog:
    """The pipeline's catalog operations, against Glance."""

    def __init__(
        self,
        client: GlanceClient,
        *,
        cache: RangeCache | None = None,
        block: int = 64 * 1024,
        max_block: int = 512 * 1024,
    ) -> None:
        self.client = client
        self.cache = cache
        self.block = block
        self.max_block = max_block

    @classmethod
    def from_settings(cls, settings: GlanceSettings | None = None) -> GlanceCatalog:
        settings = settings or get_glance_settings()
        cache = RangeCache(settings.cache_dir, settings.cache_max_bytes) if settings.cache_max_bytes else None
        return cls(
            GlanceClient.from_settings(settings),
            cache=cache,
            block=settings.read_block,
            max_block=settings.read_block_max,
        )

    @property
    def url(self) -> str:
        return "glance " + ", ".join(self.client.endpoints.urls)

    def _image(self, image_id: uuid.UUID | str) -> dict[str, Any]:
        try:
            checked = uuid.UUID(str(image_id))  # as the SQL catalog: not an id is no such image
        except ValueError:
            raise NotFound(image_id) from None
        try:
            return self.client.get_image(str(checked))
        except ImageGone:
            raise NotFound(image_id) from None

    # -- images --------------------------------------------------------------------------------

    def get(self, image_id: uuid.UUID | str) -> ImageRecord:
        return record_of(self._image(image_id))

    def images(
        self, *, statuses: Iterable[str] = (), formats: Iterable[str] = (), batch: int = 500
    ) -> Iterator[ImageRecord]:
        wanted_statuses, wanted_formats = set(statuses), set(formats)
        filters = {"disk_format": "in:" + ",".join(sorted(wanted_formats))} if wanted_formats else {}
        for image in self.client.iter_images(**filters, sort="created_at:asc,id:asc"):
            record = record_of(image)
            if not wanted_statuses or record.status in wanted_statuses:
                yield record

    def counts(self) -> dict[str, int]:
        tally: dict[str, int] = {}
        for record in self.images():
            tally[record.status] = tally.get(record.status, 0) + 1
        return tally

    def statuses(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Status]:
        found = {}
        for image_id in ids:
            try:
                found[image_id] = status_of(self._image(image_id))
            except NotFound:
                continue
        return found

    def create(self, **_: Any) -> uuid.UUID:
        raise PipelineError("images are created in Glance: `openstack image create --import ...`")

    def start_upload(self, image_id: uuid.UUID) -> None:
        raise PipelineError("image data is uploaded to Glance itself: `openstack image create --file ...`")

    def set_data(self, image_id: uuid.UUID, **_: Any) -> None:
        self.start_upload(image_id)

    def delete(self, image_id: uuid.UUID | str) -> ImageRecord:
        raise PipelineError(f"images are deleted in Glance: `openstack image delete {image_id}`")

    # -- inspections ---------------------------------------------------------------------------

    def claim(
        self,
        image_id: uuid.UUID | str,
        *,
        token: str,
        task_id: str | None,
        force: bool = True,
        unmoved_since: datetime | None = None,
    ) -> Claim:
        """Take the image for an inspection: one PATCH recording the claim and one more delivery,
        before any byte is read. Unforced, an image whose marker covers its current data (checksum
        and inspector version) is `UpToDate`, and nothing is written. Glance is never swept (its
        images' statuses are Glance's): `unmoved_since` is refused."""
        if unmoved_since is not None:
            raise PipelineError("the Glance catalog is never swept: `introspect glance sync` catches up")
        image = self._image(image_id)
        status = str(image.get("status"))
        if status == "queued":
            raise NoData(f"image {image_id} has no data yet (queued): upload it before inspecting")
        reason = ready(image)
        if reason and status in ("saving", "uploading", "importing", "active"):
            raise NotReady(f"image {image_id}: {reason}")
        if reason:
            raise InvalidTransition(f"image {image_id} is {status} in Glance: it cannot be inspected")
        if not force and already_inspected(image):
            raise UpToDate(
                f"image {image_id}: its data was already inspected by inspector version {INSPECTOR_VERSION}"
            )
        deliveries = int(_claim_of(image).get("deliveries", 0)) + 1
        value = json.dumps({"token": token, "deliveries": deliveries, "task": task_id}, separators=(",", ":"))
        try:
            self.client.patch_image(str(image_id), [{"op": "add", "path": f"/{CLAIM}", "value": value}])
        except ImageGone:
            raise NotFound(image_id) from None
        except Forbidden as error:
            raise PipelineError(
                f"image {image_id}: Glance refused introspect's claim ({error.text}): give introspect's "
                "user a role that may modify images and create/update/delete their properties"
            ) from None
        size = image.get("size")
        return Claim(
            image_id=uuid.UUID(str(image["id"])),
            token=token,
            deliveries=deliveries,
            location=f"{SCHEME}{image['id']}" if isinstance(size, int) and size > 0 else None,
            disk_format=image.get("disk_format"),
            virtual_size=image.get("virtual_size") if isinstance(image.get("virtual_size"), int) else None,
            container_format=image.get("container_format")
            if isinstance(image.get("container_format"), str)
            else None,
        )

    def release(self, claim: Claim) -> None:
        """A transient fault gives the delivery back (only deaths count towards the limit)."""
        image = self._image(claim.image_id)
        held = _claim_of(image)
        if held.get("token") != claim.token:
            return
        value = json.dumps(
            {**held, "deliveries": max(int(held.get("deliveries", 1)) - 1, 0)}, separators=(",", ":")
        )
        self.client.patch_image(str(claim.image_id), [{"op": "add", "path": f"/{CLAIM}", "value": value}])

    def finish(
        self, claim: Claim, outcome: Outcome, *, task_id: str | None, job_id: str | None = None
    ) -> bool:
        """Write the inspection back (one PATCH, ownership rules of writeback.py), dropping the
        claim; False if a newer delivery holds the image."""
        image = self._image(claim.image_id)
        if _claim_of(image).get("token") != claim.token:
            return False
        wanted = desired(
            outcome.properties,
            verdict=str(outcome.verdict),
            found_format=outcome.inspected_format,
            found_virtual_size=outcome.inspected_virtual_size,
            codes=[str(finding["code"]) for finding in outcome.findings],
        )
        result = write_back(
            self.client, str(claim.image_id), wanted, data=data_identity(image),
            inspector=str(outcome.inspector_version), image=image, job=job_id, drop=[CLAIM],
        )  # fmt: skip
        log.info("%s", result.message)
        if result.status == WriteStatus.NOT_ACTIVE:
            raise NotReady(result.message)
        if result.status == WriteStatus.DELETED:
            raise NotFound(claim.image_id)
        return result.status in (WriteStatus.WRITTEN, WriteStatus.UNCHANGED, WriteStatus.QUOTA)

    # -- properties ----------------------------------------------------------------------------

    def values(self, image_id: uuid.UUID | str) -> list[PropertyValue]:
        """Each property once: `introspected` when introspect wrote its current value, `admin`
        (set by someone else) otherwise."""
        image = self._image(image_id)
        marker = Marker.read(image)
        owned = marker.keys if marker else {}
        at = _time(marker.at if marker and marker.at else image.get("updated_at"))
        found = []
        for key in sorted(image):
            value = image[key]
            if (
                key in ATTRIBUTES
                or key in BOOKKEEPING
                or key.startswith(RESERVED_PREFIX)
                or not isinstance(value, str)
            ):
                continue
            ours = key in owned and digest(value) == owned[key]
            found.append(
                PropertyValue(
                    key=key,
                    source=Source.INTROSPECTED if ours else Source.ADMIN,
                    value=value,
                    inspector_version=_int(marker.inspector) if ours and marker else None,
                    task_id=None,
                    set_by="introspect" if ours else None,
                    set_at=at if ours else _time(image.get("updated_at")),
                )
            )
        return found

    def properties(self, image_id: uuid.UUID | str) -> list[Property]:
        return [
            Property(
                key=value.key,
                value=value.value,
                source=value.source,
                introspected=value if value.source == Source.INTROSPECTED else None,
                admin=value if value.source == Source.ADMIN else None,
            )
            for value in self.values(image_id)
        ]

    def effective(self, image_id: uuid.UUID | str) -> dict[str, str]:
        return {value.key: value.value for value in self.values(image_id)}

    def introspected(self, image_id: uuid.UUID | str) -> dict[str, str]:
        return {
            value.key: value.value for value in self.values(image_id) if value.source == Source.INTROSPECTED
        }

    def set_admin(self, image_id: uuid.UUID | str, values: Mapping[str, str], *, actor: str) -> None:
        """Set values as someone else's: written, and taken out of the marker in the same PATCH,
        so no re-run touches them (even one equal to what introspect found)."""
        image = self._image(image_id)
        ops: list[dict[str, str]] = [
            {"op": "add", "path": f"/{key}", "value": value} for key, value in values.items()
        ]
        marker = Marker.read(image)
        if marker and set(values) & set(marker.keys):
            keys = {key: mine for key, mine in marker.keys.items() if key not in values}
            kept = Marker(
                keys=keys, data=marker.data, inspector=marker.inspector, at=now_utc(), job=marker.job
            )
            ops.append({"op": "add", "path": f"/{MARKER}", "value": kept.dumps()})
        log.info("%s sets %s on image %s", actor, ", ".join(values), image_id)
        self.client.patch_image(str(image_id), ops)

    def unset_admin(self, image_id: uuid.UUID | str, keys: Iterable[str], *, actor: str) -> None:
        """Remove someone else's values; the next inspection writes introspect's again."""
        keys = list(keys)
        admin = {value.key for value in self.values(image_id) if value.source == Source.ADMIN}
        missing = [key for key in keys if key not in admin]
        if missing:
            raise PipelineError(
                f"image {image_id} has no admin value for {', '.join(missing)}: "
                "`introspect images show` lists which keys someone other than introspect set"
            )
        log.info("%s removes %s from image %s", actor, ", ".join(keys), image_id)
        self.client.patch_image(str(image_id), [{"op": "remove", "path": f"/{key}"} for key in keys])

    def history(self, image_id: uuid.UUID | str) -> list[Change]:
        """Glance keeps no history of property changes."""
        self._image(image_id)
        return []

    def deleted_history(self, image_id: uuid.UUID | str) -> list[Change]:
        raise PipelineError("images are deleted in Glance, which keeps no history of them")

    # -- re-runs -------------------------------------------------------------------------------

    def _selected(self, selection: Selection, exclude_job: str | None = None) -> Iterator[ImageRecord]:
        selection.require()
        if selection.ids:
            records: Iterable[ImageRecord] = (self.get(image_id) for image_id in selection.ids)
        else:
            records = self.images(formats=selection.formats)
        for record in records:
            if record.status in (Status.QUEUED, Status.SAVING):
                continue
            if exclude_job is not None and record.job_id == exclude_job:
                continue
            if selection.statuses and record.status not in selection.statuses:
                continue
            if selection.formats and selection.ids and record.disk_format not in selection.formats:
                continue
            if selection.failed and record.status != Status.ERROR:
                continue
            if (
                selection.inspector_older_than is not None
                and (record.inspector_version or 0) >= selection.inspector_older_than
            ):
                continue
            yield record

    def select_ids(
        self, selection: Selection, *, batch: int = 500, exclude_job: str | None = None
    ) -> Iterator[list[uuid.UUID]]:
        page: list[uuid.UUID] = []
        for record in self._selected(selection, exclude_job):
            page.append(record.id)
            if len(page) >= batch:
                yield page
                page = []
        if page:
            yield page

    def count(self, selection: Selection) -> int:
        return sum(1 for _ in self._selected(selection))

    def mismatched(self, *, batch: int = 500) -> Iterator[ImageRecord]:
        for record in self.images(batch=batch):
            if record.inspected_at is not None and record.mismatches:
                yield record

    def job_progress(self, job_id: str) -> dict[str, int]:
        tally: dict[str, int] = {}
        for record in self.images():
            if record.job_id == job_id and record.status != Status.IMPORTING:
                tally[record.status] = tally.get(record.status, 0) + 1
        return tally

    # -- data ------------------------------------------------------------------------------------

    def open_location(self, location: str) -> ByteSource:
        """The range source over `glance:<id>` (a Claim's location)."""
        if not location.startswith(SCHEME):
            raise PipelineError(f"{location!r} is not a Glance location (glance:<image id>)")
        image = self._image(location.removeprefix(SCHEME))
        size = image.get("size")
        if not isinstance(size, int) or size <= 0:
            raise NoData(f"image {image['id']} has no data in Glance")
        return GlanceSource(
            self.client,
            str(image["id"]),
            size=size,
            checksum=data_identity(image),
            cache=self.cache,
            block=self.block,
            max_block=self.max_block,
        )
