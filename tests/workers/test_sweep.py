"""The sweep's query and the pipeline's last word on every exception, on SQLite and PostgreSQL:
what counts as stranded, that a sweep takes each stranded image once (across concurrent sweeps
too), gives back what it could not queue, and that an inspection ends in a verdict or a counted
retry whatever is raised in it. The same faults with real workers and a real broker are in
test_stranded.py."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from tests.workers.httpserver import serve
from workers import pipeline, sweep
from workers.catalog import DONE, Catalog, Status
from workers.catalog.models import utcnow
from workers.errors import BrokerUnavailable, StoreUnavailable
from workers.settings import Settings


def registered(catalog: Catalog, location: str | None) -> uuid.UUID:
    """An image `saving`: with its bytes complete when it has a location, its upload under way when not."""
    image_id = catalog.create()
    catalog.start_upload(image_id)
    if location is not None:
        catalog.set_data(image_id, location=location, size=1, checksum=None)
    return image_id


def claimed(catalog: Catalog, location: str, times: int = 1) -> uuid.UUID:
    """An image `importing` whose deliveries all died (the state a killed task leaves)."""
    image_id = registered(catalog, location)
    for _ in range(times):
        catalog.claim(image_id, token=uuid.uuid4().hex, task_id="killed")
    return image_id


def take(catalog: Catalog, before: object, limit: int = 100) -> set[uuid.UUID]:
    return {
        stale.image_id
        for stale in catalog.take_stale(pending_before=before, importing_before=before, limit=limit)
    }


def test_what_a_sweep_takes(catalog: Catalog, tmp_path: Path):
    location = (tmp_path / "disk.img").as_uri()
    queued = catalog.create()  # nothing uploaded: nothing to inspect
    uploading = registered(catalog, None)  # bytes still arriving
    pending = registered(catalog, location)  # queued for inspection
    importing = claimed(catalog, location)
    done = claimed(catalog, location)
    pipeline.introspect_image(catalog, done, task_id="done")
    assert catalog.get(done).status in DONE
    cutoff = utcnow()
    time.sleep(0.01)
    fresh_pending = registered(catalog, location)
    fresh_importing = claimed(catalog, location)

    assert take(catalog, cutoff) == {pending, importing}
    assert take(catalog, cutoff) == set()  # marked: no other sweep takes them again
    later = utcnow() + timedelta(seconds=1)
    assert take(catalog, later) == {pending, importing, fresh_pending, fresh_importing}
    statuses = catalog.statuses([queued, uploading, pending, importing, done])
    assert statuses == {
        queued: Status.QUEUED,
        uploading: Status.SAVING,
        pending: Status.SAVING,
        importing: Status.IMPORTING,
        done: statuses[done],
    }
    assert catalog.get(importing).deliveries == 1  # a sweep counts nothing: the next claim does


def test_a_sweep_takes_the_oldest_first_and_at_most_its_batch(catalog: Catalog, tmp_path: Path):
    ids = []
    for n in range(5):
        ids.append(registered(catalog, (tmp_path / f"{n}").as_uri()))
        time.sleep(0.002)
    later = utcnow()
    time.sleep(0.002)
    assert [
        s.image_id for s in catalog.take_stale(pending_before=later, importing_before=later, limit=2)
    ] == ids[:2]
    assert take(catalog, later, limit=10) == set(ids[2:])


def test_what_could_not_be_queued_is_given_back(catalog: Catalog, tmp_path: Path):
    ids = {registered(catalog, (tmp_path / f"{n}").as_uri()) for n in range(3)}
    settings = Settings(sweep_pending_after=1.0, sweep_importing_after=1000)
    time.sleep(1.1)

    def broker_down(_ids: list[uuid.UUID], _marked: datetime) -> object:
        raise BrokerUnavailable("cannot reach the broker")

    queued: list[tuple[uuid.UUID, datetime]] = []

    def publish(page: list[uuid.UUID], marked: datetime) -> None:
        queued.extend((image_id, marked) for image_id in page)

    with pytest.raises(BrokerUnavailable):
        sweep.sweep_once(catalog, settings, broker_down)
    assert {s.image_id for s in sweep.sweep_once(catalog, settings, publish)} == ids
    assert {image_id for image_id, _ in queued} == ids  # taken again at once: the failed sweep left no mark
    assert sweep.sweep_once(catalog, settings, publish) == []
    assert {catalog.get(image_id).updated_at for image_id in ids} == {queued[0][1]}  # the mark


def test_concurrent_sweeps_never_take_one_image_twice(pg_catalog: Catalog, tmp_path: Path):
    catalog = pg_catalog
    ids = {registered(catalog, (tmp_path / f"{n}").as_uri()) for n in range(120)}
    later = utcnow()
    taken: list[list[uuid.UUID]] = [[] for _ in range(4)]
    barrier = threading.Barrier(len(taken))

    def sweeper(mine: list[uuid.UUID]) -> None:
        barrier.wait()
        while page := catalog.take_stale(pending_before=later, importing_before=later, limit=7):
            mine.extend(stale.image_id for stale in page)

    threads = [threading.Thread(target=sweeper, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [image_id for mine in taken for image_id in mine]
    assert sorted(everything) == sorted(ids)  # each exactly once
    assert sum(1 for mine in taken if mine) > 1  # and they really ran side by side


def swept(catalog: Catalog, image_id: uuid.UUID) -> datetime:
    """What the sweep does to one stale image: its mark, which its message carries."""
    (stale,) = catalog.take_stale(pending_before=utcnow(), importing_before=utcnow(), limit=1)
    assert stale.image_id == image_id
    return stale.marked


def test_a_sweeps_delivery_inspects_an_image_that_did_not_move(catalog: Catalog, images: dict[str, Path]):
    image_id = registered(catalog, images["small.qcow2"].as_uri())
    marked = swept(catalog, image_id)
    done = pipeline.introspect_image(catalog, image_id, task_id="swept", unmoved_since=marked)
    assert (done.state, done.written) == (pipeline.State.INSPECTED, True)
    record = catalog.get(image_id)
    assert (record.status, record.deliveries) == (Status.ACTIVE, 0)


@pytest.mark.parametrize("meanwhile", ["claimed", "finished"])
def test_a_sweeps_delivery_of_an_image_that_moved_does_nothing(
    catalog: Catalog, images: dict[str, Path], meanwhile: str
):
    """The original message was late, not lost: whichever delivery comes second has nothing to
    do, and a live inspection is never taken over (nor a delivery counted that did not happen)."""
    image_id = registered(catalog, images["small.qcow2"].as_uri())
    marked = swept(catalog, image_id)
    if meanwhile == "claimed":
        catalog.claim(image_id, token="live", task_id="original")
    else:
        pipeline.introspect_image(catalog, image_id, task_id="original")
    before = catalog.get(image_id)
    done = pipeline.introspect_image(catalog, image_id, task_id="swept", unmoved_since=marked)
    assert done.state == pipeline.State.SKIPPED
    assert done.message == f"image {image_id} moved since the sweep queued it again: another delivery has it"
    assert catalog.get(image_id) == before  # the live claim's token, its one delivery


def test_the_delivery_limit_still_stops_a_swept_poison_image(catalog: Catalog, tmp_path: Path):
    """Three deliveries died (killed by the hard time limit, say): the sweep's delivery is the
    fourth, and it records the poison verdict without reading the image."""
    image_id = claimed(catalog, (tmp_path / "never-read").as_uri(), times=3)
    marked = swept(catalog, image_id)
    done = pipeline.introspect_image(
        catalog, image_id, task_id="swept", unmoved_since=marked, delivery_limit=3
    )
    assert done.outcome is not None and done.outcome.status == Status.ERROR
    record = catalog.get(image_id)
    assert [f["code"] for f in record.findings] == ["pipeline.worker_lost"]
    assert (record.deliveries, record.claim_token) == (0, None)


# -- every exception after the claim ends in a verdict or a counted retry --------------------------


def test_an_unexpected_exception_is_a_verdict_naming_it(catalog: Catalog, tmp_path: Path):
    # A location the catalog holds but no file system can open: os.stat raises ValueError, which
    # neither the store nor the library expects.
    image_id = registered(catalog, (tmp_path / "a").as_uri() + "%00b")
    done = pipeline.introspect_image(catalog, image_id, task_id="t")
    assert done.outcome is not None and done.outcome.status == Status.ERROR
    record = catalog.get(image_id)
    assert [f["code"] for f in record.findings] == ["pipeline.internal_error"]
    message = record.findings[0]["message"]
    assert message.startswith("the inspection stopped on an unexpected ValueError: embedded null byte; a bug")
    assert "\n" not in message and f"introspect rerun {image_id}" in message
    assert (record.status, record.deliveries, record.claim_token) == (Status.ERROR, 0, None)


@contextmanager
def soft_time_limit(seconds: float) -> Iterator[None]:
    """What Celery's pool does to a task past its soft time limit: a signal whose handler raises
    SoftTimeLimitExceeded wherever the task is."""

    def expire(_signum: int, _frame: object) -> None:
        raise SoftTimeLimitExceeded

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_hanging_location_past_the_time_limit_is_a_verdict(catalog: Catalog, images: dict[str, Path]):
    path = images["small.qcow2"]
    release = threading.Event()
    with serve(path.parent) as served:
        served.on_request = lambda _method, _path: release.wait(30)  # a store that never answers
        image_id = registered(catalog, served.url(path.name))
        limit = pipeline.TimeLimit(SoftTimeLimitExceeded, 0.5)
        try:
            with soft_time_limit(limit.seconds):
                done = pipeline.introspect_image(catalog, image_id, task_id="t", time_limit=limit)
        finally:
            release.set()
    assert done.outcome is not None and done.outcome.status == Status.ERROR
    record = catalog.get(image_id)
    assert [f["code"] for f in record.findings] == ["pipeline.time_limit"]
    assert record.findings[0]["message"].startswith(
        "the inspection did not finish within 0.5 s (INTROSPECT_TASK_TIME_LIMIT): its location stalled"
    )
    assert (record.deliveries, record.claim_token) == (0, None)


def drop_reads(method: str, _path: str) -> None:
    if method == "GET":
        raise ConnectionAbortedError("the store went away")


def test_a_store_fault_on_the_last_retry_is_a_verdict(catalog: Catalog, images: dict[str, Path]):
    path = images["small.qcow2"]
    with serve(path.parent) as served:
        served.on_request = drop_reads
        image_id = registered(catalog, served.url(path.name))
        with pytest.raises(StoreUnavailable):
            pipeline.introspect_image(catalog, image_id, task_id="t")  # a retry follows
        assert catalog.get(image_id).status == Status.IMPORTING
        done = pipeline.introspect_image(catalog, image_id, task_id="t", final_attempt=True)
    assert done.outcome is not None and done.outcome.status == Status.ERROR
    record = catalog.get(image_id)
    assert [f["code"] for f in record.findings] == ["pipeline.store_unavailable"]
    assert record.findings[0]["message"].endswith(
        f"; this was the last retry: check the store, then `introspect rerun {image_id}`"
    )
    assert (record.deliveries, record.claim_token) == (0, None)


def test_a_retry_restarts_the_sweeps_clock(catalog: Catalog, tmp_path: Path):
    image_id = registered(catalog, (tmp_path / "disk.img").as_uri())
    claim = catalog.claim(image_id, token=uuid.uuid4().hex, task_id="t")
    claimed_at = catalog.get(image_id).updated_at
    time.sleep(0.01)
    catalog.release(claim)  # a transient fault: the task retries
    record = catalog.get(image_id)
    assert record.updated_at > claimed_at and record.deliveries == 0
    assert take(catalog, claimed_at + timedelta(microseconds=1)) == set()
