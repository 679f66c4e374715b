"""The tasks, thin: an image id in, a small dict out; the work is in workers/pipeline.py.

Only infrastructure faults retry (backoff with jitter, `max_retries` times: on the last try, a
fault of the image's store is recorded as its verdict); a bad image is a verdict, recorded once, and
so is an inspection that runs out of time or stops on any other exception (workers/pipeline.py).
A task for an image that was deleted, or that cannot be inspected from its status, is dropped
(`introspect_image` says so in its summary).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery import Task  # type: ignore[import-untyped]  # celery ships no types
from celery.exceptions import SoftTimeLimitExceeded  # type: ignore[import-untyped]
from celery.signals import worker_ready, worker_shutdown  # type: ignore[import-untyped]

from workers import pipeline, sweep
from workers.app import app
from workers.backends import open_backend
from workers.catalog import Selection
from workers.errors import BrokerUnavailable, Transient
from workers.settings import get_settings, mask

log = logging.getLogger(__name__)

#: What a retry may cure. Never an image error: the library turns those into verdicts.
TRANSIENT: tuple[type[Exception], ...] = (
    Transient,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
_settings = get_settings()
RETRY_OPTIONS: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": _settings.retry_backoff_max,
    "retry_jitter": True,
    "max_retries": _settings.max_retries,
}


@app.task(name="workers.tasks.introspect_image", bind=True, **RETRY_OPTIONS)  # type: ignore[untyped-decorator]
def introspect_image(
    self: Task, image_id: str, job_id: str | None = None, swept_at: str | None = None
) -> dict[str, Any]:
    """Inspect one image and write its properties back. `swept_at` (ISO 8601) marks the sweep's
    deliveries (workers/sweep.py): one of an image that moved since is dropped, so a copy of a
    message that was not lost after all costs one statement."""
    settings = get_settings()
    done = pipeline.introspect_image(
        open_backend(settings),
        image_id,
        task_id=self.request.id,
        job_id=job_id,
        delivery_limit=settings.delivery_limit,
        unmoved_since=datetime.fromisoformat(swept_at) if swept_at else None,
        time_limit=pipeline.TimeLimit(SoftTimeLimitExceeded, settings.task_time_limit),
        final_attempt=self.request.retries >= self.max_retries,
    )
    if done.state != pipeline.State.INSPECTED:
        log.warning("dropped introspect_image(%s): %s", image_id, done.message)
    return done.summary()


@app.task(name="workers.tasks.rerun", bind=True, **RETRY_OPTIONS)  # type: ignore[untyped-decorator]
def rerun(self: Task, selection: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
    """Queue an inspection of every image in `selection`, a page of ids at a time."""
    settings = get_settings()
    catalog = open_backend(settings)
    chosen = Selection.model_validate(selection)
    total = pipeline.fan_out(
        catalog, chosen, lambda ids: enqueue(ids, job_id=job_id), batch=settings.rerun_batch
    )
    return {"job_id": job_id, "queued": total}


def enqueue(
    image_ids: Iterable[object],
    *,
    job_id: str | None = None,
    swept_at: datetime | None = None,
    retry: bool = True,
) -> int:
    """Publish one introspect_image message per id, over one connection (`swept_at`: the sweep's
    mark; without `retry`, the first failure to publish raises at once instead of riding out a
    broker restart)."""
    settings = get_settings()
    kwargs: dict[str, Any] = {"job_id": job_id}
    if swept_at is not None:
        kwargs["swept_at"] = swept_at.isoformat()
    count = 0
    try:
        with app.producer_or_acquire() as producer:
            for image_id in image_ids:
                introspect_image.apply_async(
                    args=[str(image_id)], kwargs=kwargs, queue=settings.queue, producer=producer, retry=retry
                )
                count += 1
    except (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError, OSError) as error:
        raise BrokerUnavailable(f"cannot reach the broker at {broker_url()}: {error}") from error
    return count


def broker_url() -> str:
    """The broker URL without its password, for messages."""
    return mask(get_settings().broker_url)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_the_sweep(**_: object) -> None:
    """The worker's main process queues again what stopped moving (workers/sweep.py), publishing
    through `enqueue` (passed in, so the sweep never imports the tasks back)."""
    sweep.start(get_settings(), enqueue)


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_the_sweep(**_: object) -> None:
    sweep.stop()
