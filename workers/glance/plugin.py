"""The `introspect` plugin for Glance's interoperable import (glance-direct, web-download).

Glance builds each import flow as: image lock -> staging check -> the enabled plugins -> copy to
each store (the image goes active) -> delete the staged file -> verify -> complete. This
plugin sits among the plugins: it inspects the staged file with the library alone
(`introspect.inspect` on a local path: no network, no qemu-img, nothing followed) and sets the
properties in the same save that keeps the image `importing`, so the image goes active with
them already in place. Enable it in glance-image-import.conf (or glance-api.conf):

    [image_import_opts]
    image_import_plugins = ['introspect']

Glance calls `get_flow(**kwargs)` through the entry point group `glance.image_import.plugins`
(name `introspect`), with the keys action_wrapper, backend, context, image_id, image_repo,
import_req, task_id, task_repo, task_type. The task's `execute(file_path)` receives
`file://<staging dir>/<image id>`.

It never raises, whatever the image: a plugin that raises leaves the image stuck in `importing`
(measured). Any error of ours is logged and recorded as `introspect_verdict=error` with the
import going on; a rejected image gets `introspect_verdict=rejected` and its findings as
properties, and Glance's own checks decide whether it may go active. When the flow fails after
this task ran (Glance's checks refusing the data as it copies it to a store: a backing file, a
data file, a VMDK subformat), `revert` puts an image still `importing` back to `queued` with its
stores marked failed, as Glance's image_conversion plugin does, and deletes the staged file, so
the owner can stage new data or delete the image instead of facing one stuck in `importing`
(which only a DELETE gets out of).

This module runs inside Glance's process and venv: it imports the library, taskflow and
oslo.config, and nothing else of introspect's service side. So it does not run the pipeline's
`introspect_image`: it writes the same properties (ownership.py's `desired`, findings capped),
with a marker whose `data` is null, and the first inspection after the import (the listener's,
or the poller's) is the pipeline's, which completes the marker and checks what Glance then
declares (the virtual size Glance computed, which does not exist yet while this runs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from taskflow import task  # type: ignore[import-not-found]
from taskflow.patterns import linear_flow  # type: ignore[import-not-found]

import introspect
from introspect.formats import BY_NAME, canonical_name
from introspect.report import INSPECTOR_VERSION
from workers.glance.ownership import MARKER, desired_properties, now_utc, plan, writable

log = logging.getLogger(__name__)

FILE_SCHEME = "file://"


def get_flow(**kwargs: Any) -> Any:
    """The entry point: one task in a linear flow, named after the import task."""
    task_type = kwargs.get("task_type") or "api_image_import"
    return linear_flow.Flow(task_type).add(
        IntrospectStaged(
            task_id=str(kwargs.get("task_id")),
            task_type=task_type,
            action_wrapper=kwargs["action_wrapper"],
            stores=list(kwargs.get("backend") or []),
        )
    )


class IntrospectStaged(task.Task):  # type: ignore[misc]
    """Inspect the staged file and set the properties before the image goes active."""

    def __init__(self, *, task_id: str, task_type: str, action_wrapper: Any, stores: list[str]) -> None:
        self.task_id = task_id
        self.action_wrapper = action_wrapper
        self.stores = [store for store in stores if store]
        self.staged: Path | None = None
        super().__init__(name=f"{task_type}-Introspect-{task_id}")

    def execute(self, file_path: str) -> None:
        image_id = self.action_wrapper.image_id
        if file_path.startswith(FILE_SCHEME):
            self.staged = Path(file_path.removeprefix(FILE_SCHEME))
        try:
            self._inspect(image_id, file_path)
        except Exception:
            log.exception(
                "introspect: inspecting the staged data of image %s failed; the import goes on", image_id
            )
            self._record_error(image_id)

    def _inspect(self, image_id: str, file_path: str) -> str:
        with self.action_wrapper as action:
            declared = canonical_name(str(action.image_disk_format or ""))
            # Glance's ImportActionWrapper has it (glance/async_/flows/api_image_import.py)
            container = getattr(action, "image_container_format", None)
            current = dict(action.image_extra_properties)
        if self.staged is None:
            raise ValueError(f"staged data at {file_path!r} is not a local file")
        report = introspect.inspect(
            self.staged,
            expect=declared if declared in BY_NAME else None,
            name=f"glance:{image_id}",
            expect_container=str(container) if container else None,
        )
        wanted, refused = writable(desired_properties(report))
        changes = plan(current, wanted, data=None, inspector=str(INSPECTOR_VERSION))
        with self.action_wrapper as action:
            action.set_image_extra_properties(
                {**changes.add, **changes.replace, MARKER: changes.marker_for(now=now_utc())}
            )
            for key in changes.remove:
                action.pop_extra_property(key)
        log.info(
            "introspect: image %s is %s %s (%d bytes read in %d reads); set %d properties, kept %s%s",
            image_id, report.format, report.verdict, report.bytes_read, report.reads,
            len(changes.add) + len(changes.replace), sorted(changes.kept) or "none",
            f", refused {sorted(refused)}" if refused else "",
        )  # fmt: skip
        return str(report.verdict)

    def _record_error(self, image_id: str) -> None:
        try:
            with self.action_wrapper as action:
                action.set_image_extra_properties({"introspect_verdict": "error"})
        except Exception:
            log.exception("introspect: could not record the error on image %s", image_id)

    def revert(self, result: Any = None, **kwargs: Any) -> None:
        """Called when the flow fails at or after this task: an image still `importing` goes back
        to `queued` (never stuck), its stores marked failed, and its staged data deleted (no
        import can use it from `queued`, and it stays refused), so the owner can stage new data
        or delete the image. Never raises."""
        try:
            with self.action_wrapper as action:
                if action.image_status != "importing":
                    return
                action.set_image_attribute(status="queued")
                if self.stores:
                    action.remove_importing_stores(self.stores)
                    action.add_failed_stores(self.stores)
            if self.staged is not None:
                self.staged.unlink(missing_ok=True)
        except Exception:
            log.exception("introspect: could not put image %s back to queued", self.action_wrapper.image_id)
