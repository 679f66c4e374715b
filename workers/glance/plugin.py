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

Its options, in the same files (all optional):

    [introspect]
    # fail the import of an image whose verdict is not ok, with its findings' messages
    enforce = false
    # the policy file every inspection runs under (default: INTROSPECT_POLICY in Glance's
    # environment, else the default severities): the same JSON as `introspect inspect --policy`
    policy = /etc/introspect/policy.json

Report-only (the default), it never raises, whatever the image: a plugin that raises leaves the
image stuck in `importing` unless its revert undoes that (measured). Any error of ours is logged
and recorded as `introspect_verdict=error` with the import going on; a rejected image gets
`introspect_verdict=rejected` and its findings as properties, and Glance's own checks decide
whether it may go active. With `enforce`, an image whose verdict is `rejected` or `error` (or that
could not be inspected at all: fail closed) fails the import, as Glance's image_conversion plugin
refuses a bad image: the properties are set first, then the task raises UploadException, the
exception Glance's task executor records as the task's message (a RuntimeError would show as
"Task failed due to Internal Error"), so `GET /v2/tasks/{id}` says which finding refused it. When
the flow fails at or after this task (our refusal, or Glance's checks refusing the data as it
copies it to a store: a backing file, a data file, a VMDK subformat), `revert` puts an image still
`importing` back to `queued` with its stores marked failed, as Glance's image_conversion plugin
does, and deletes the staged file, so the owner can stage new data or delete the image instead
of facing one stuck in `importing` (which only a DELETE gets out of).

This module runs inside Glance's process and venv: it imports the library, taskflow, oslo.config
and Glance's exceptions, and nothing else of introspect's service side but ownership.py. So it does not run the pipeline's
`introspect_image`: it writes the same properties (ownership.py's `desired`, findings capped),
with a marker whose `data` is null, and the first inspection after the import (the listener's,
or the poller's) is the pipeline's, which completes the marker and checks what Glance then
declares (the virtual size Glance computed, which does not exist yet while this runs).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from glance.common.exception import UploadException  # type: ignore[import-not-found]
from oslo_config import cfg
from taskflow import task  # type: ignore[import-not-found]
from taskflow.patterns import linear_flow  # type: ignore[import-not-found]

import introspect
from introspect.errors import UsageError
from introspect.formats import BY_NAME, canonical_name
from introspect.model import Severity, Verdict
from introspect.policyfile import read_policy
from introspect.report import INSPECTOR_VERSION, Report
from introspect.safety import DEFAULT_POLICY, Policy
from introspect.text import literal
from workers.glance.ownership import MARKER, desired_properties, now_utc, plan, writable

log = logging.getLogger(__name__)

FILE_SCHEME = "file://"
#: The configuration group of the plugin's options, in glance-image-import.conf or glance-api.conf.
GROUP = "introspect"
OPTIONS = [
    cfg.BoolOpt(
        "enforce",
        default=False,
        help="Fail the import of an image whose verdict is rejected or error, with its findings' "
        "messages, as Glance's image_conversion refuses a bad image. Default: report only.",
    ),
    cfg.StrOpt(
        "policy",
        help="The JSON policy file inspections run under (as `introspect inspect --policy` reads "
        "it). Default: INTROSPECT_POLICY in Glance's environment, else the default severities.",
    ),
]
cfg.CONF.register_opts(OPTIONS, group=GROUP)
#: How much of the findings a refusal's message quotes (it becomes the import task's message).
MAX_REFUSAL = 1024


def get_flow(**kwargs: Any) -> Any:
    """The entry point: one task in a linear flow, named after the import task."""
    task_type = kwargs.get("task_type") or "api_image_import"
    return linear_flow.Flow(task_type).add(
        IntrospectStaged(
            task_id=str(kwargs.get("task_id")),
            task_type=task_type,
            action_wrapper=kwargs["action_wrapper"],
            stores=list(kwargs.get("backend") or []),
            enforce=bool(cfg.CONF[GROUP].enforce),
        )
    )


def configured_policy() -> Policy:
    """The policy `[introspect] policy` names, else INTROSPECT_POLICY, else the default one: read
    at each import, so a changed file applies without restarting Glance. A bad file raises
    UsageError (one line naming the option, the field and what is accepted)."""
    configured = cfg.CONF[GROUP].policy
    path = configured or os.environ.get("INTROSPECT_POLICY")
    if not path:
        return DEFAULT_POLICY
    return read_policy(path, f"{f'[{GROUP}] policy' if configured else 'INTROSPECT_POLICY'} {literal(path)}")


def refusal(image_id: str, report: Report) -> str | None:
    """Why an enforcing import refuses the image (its rejecting findings, code and message), or
    None when its verdict is ok."""
    if report.verdict == Verdict.OK:
        return None
    reasons = [f for f in report.findings if f.severity == Severity.REJECT] or list(report.findings)
    said = "; ".join(f"{f.code}: {f.message}" for f in reasons) or "no finding says why"
    message = f"introspect refused image {image_id} ({report.verdict}): {literal(said)}"
    return message if len(message) <= MAX_REFUSAL else f"{message[: MAX_REFUSAL - 3]}..."


class IntrospectStaged(task.Task):  # type: ignore[misc]
    """Inspect the staged file and set the properties before the image goes active."""

    def __init__(
        self, *, task_id: str, task_type: str, action_wrapper: Any, stores: list[str], enforce: bool = False
    ) -> None:
        self.task_id = task_id
        self.action_wrapper = action_wrapper
        self.stores = [store for store in stores if store]
        self.enforce = enforce
        self.staged: Path | None = None
        super().__init__(name=f"{task_type}-Introspect-{task_id}")

    def execute(self, file_path: str) -> None:
        image_id = str(self.action_wrapper.image_id)
        if file_path.startswith(FILE_SCHEME):
            self.staged = Path(file_path.removeprefix(FILE_SCHEME))
        then = "the import is refused" if self.enforce else "the import goes on"
        try:
            report = self._inspect(image_id, file_path)
        except UsageError as error:  # the policy file: its one line says what is wrong
            report, why = None, str(error)
        except Exception as error:
            log.exception("introspect: inspecting the staged data of image %s failed; %s", image_id, then)
            report, why = None, f"{type(error).__name__}: {literal(str(error))}"
        if report is None:
            log.error("introspect: image %s not inspected: %s; %s", image_id, why, then)
            self._record_error(image_id)
            self._refuse(f"introspect could not inspect image {image_id}: {why}")  # fail closed
            return
        refused = refusal(image_id, report)
        try:
            self._write(image_id, report)
        except Exception:
            then = "the import is refused" if self.enforce and refused else "the import goes on"
            log.exception("introspect: the properties of image %s could not be saved; %s", image_id, then)
            self._record_error(image_id)
        self._refuse(refused)

    def _refuse(self, message: str | None) -> None:
        """With `enforce`, fail the import with `message`: Glance's task executor records an
        UploadException's text as the task's message, and the flow's revert (ours included)
        puts the image back to `queued`."""
        if self.enforce and message:
            raise UploadException(message)

    def _inspect(self, image_id: str, file_path: str) -> Report:
        """The report of the staged data, under the configured policy."""
        with self.action_wrapper as action:
            declared = canonical_name(str(action.image_disk_format or ""))
            # Glance's ImportActionWrapper has it (glance/async_/flows/api_image_import.py)
            container = getattr(action, "image_container_format", None)
        if self.staged is None:
            raise ValueError(f"staged data at {file_path!r} is not a local file")
        return introspect.inspect(
            self.staged,
            expect=declared if declared in BY_NAME else None,
            policy=configured_policy(),
            name=f"glance:{image_id}",
            expect_container=str(container) if container else None,
        )

    def _write(self, image_id: str, report: Report) -> None:
        """Set the report's properties in the save that keeps the image `importing`."""
        wanted, refused = writable(desired_properties(report))
        with self.action_wrapper as action:
            changes = plan(
                dict(action.image_extra_properties), wanted, data=None, inspector=str(INSPECTOR_VERSION)
            )
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
