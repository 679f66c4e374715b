"""The sweep: the catalog is the source of truth for the work to do, and every worker queues again
what stopped moving, so that no image is ever stranded whatever the broker lost.

Where work gets lost, and what each leaves in the catalog:

- a broker restart without persistence (or with append-only persistence, the last second of it)
  loses queued messages: their images stay `saving` with their bytes complete;
- a worker's main process killed (or its machine gone) leaves the messages it had reserved in
  Redis until the visibility timeout, and a task killed by the hard time limit is acknowledged
  and gone: their images stay `importing`, a delivery counted;
- a broker restart also cancels the tasks running at that moment, whose messages went with it:
  `importing` too.

Every `sweep_period` seconds each worker takes, in one indexed query, the images `saving` with a
location for longer than `sweep_pending_after`, and those `importing` for longer than
`sweep_importing_after` (past the hard time limit, no live delivery can hold them), marks them in
the same transaction (FOR UPDATE SKIP LOCKED on PostgreSQL, so many workers never queue the same
image twice, nor wait on each other), and publishes an inspection of each carrying that mark. The
sweep's delivery claims the image only if it has not moved since the mark (`Superseded`
otherwise): when the original message was only late, not lost, whichever delivery comes second
has nothing to do, and a sweep never takes an image from a live inspection nor counts a delivery
that did not happen. The delivery counter still stops a poison image: each sweep of an `importing`
image is one more delivery, and past the limit its verdict is `pipeline.worker_lost`.

Why a sweep and not a transactional outbox (an outbox row written with the catalog change, relayed
to the broker): an outbox guarantees the publish, not the delivery. The messages the broker
loses after accepting them (a restart, a dead worker's reserved messages, a task killed by its
time limit) are exactly what stranded images, and catching them needs a scan for images that
stopped moving: that scan, over the statuses the catalog already keeps, is the whole sweep. It
costs one query per period per worker (on the status index: the rows in flight), and it needs no
new table, no relay process and no change to any write path.

It runs in a thread of each worker's main process, not as a task: a sweep message would be lost
with the others, or wait behind the backlog it is meant to repair. The main process forks pool
processes (a new one for each that dies): a fork never happens in the middle of a sweep, so no
child inherits a lock the sweep held.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from workers.catalog.models import Status, utcnow
from workers.catalog.records import Stale
from workers.catalog.sql import Catalog, open_catalog
from workers.errors import Transient
from workers.settings import Settings

log = logging.getLogger(__name__)

#: Publishes the sweep's inspections of the ids with their mark, raising `BrokerUnavailable`
#: when it cannot.
Enqueue = Callable[[list[uuid.UUID], datetime], object]


def sweep_once(catalog: Catalog, settings: Settings, enqueue: Enqueue) -> list[Stale]:
    """Take the stale images (at most `sweep_batch`) and queue each again; an image that could
    not be queued gets its mark back, for the next sweep. Returns the images queued."""
    now = utcnow()
    taken = catalog.take_stale(
        pending_before=now - timedelta(seconds=settings.pending_deadline),
        importing_before=now - timedelta(seconds=settings.importing_deadline),
        limit=settings.sweep_batch,
    )
    if not taken:
        return []
    try:
        enqueue([stale.image_id for stale in taken], taken[0].marked)
    except BaseException:
        catalog.give_back(taken)
        raise
    pending = sum(stale.status == Status.SAVING for stale in taken)
    log.warning(
        "sweep: queued %d image(s) again: %d saving whose inspection had not started, %d importing "
        "that stopped moving",
        len(taken),
        pending,
        len(taken) - pending,
    )
    return taken


class Sweeper:
    """The sweep, every `sweep_period` seconds, in a daemon thread of the worker's main process."""

    def __init__(self, settings: Settings, enqueue: Enqueue) -> None:
        self.settings = settings
        self.enqueue = enqueue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="introspect-sweep", daemon=True)

    def start(self) -> None:
        log.info(
            "sweep: every %gs, saving images after %gs, importing images after %gs",
            self.settings.sweep_period,
            self.settings.pending_deadline,
            self.settings.importing_deadline,
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        catalog: Catalog | None = None
        while not self._stop.wait(self.settings.sweep_period):
            try:
                with _GUARD.lock:
                    catalog = catalog or open_catalog(self.settings.catalog_url)
                    sweep_once(catalog, self.settings, self.enqueue)
            except Transient as error:
                log.warning("sweep: %s; trying again in %gs", error, self.settings.sweep_period)
            except Exception:
                log.exception("sweep failed; trying again in %gs", self.settings.sweep_period)


#: The longest a fork waits for a sweep to finish (a sweep stuck on an unreachable database must
#: not stop the worker from replacing a pool process).
FORK_WAIT = 5.0


class _ForkGuard:
    """A lock held for the whole of one sweep, and by `os.fork` (see the module docstring). A
    child starts with a fresh one: it never sweeps, but it may fork (a `preexec_fn` runs the hooks)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._forking = False

    def before(self) -> None:
        self._forking = self.lock.acquire(timeout=FORK_WAIT)

    def after_in_parent(self) -> None:
        if self._forking:
            self._forking = False
            self.lock.release()

    def after_in_child(self) -> None:
        self.lock = threading.Lock()
        self._forking = False


_GUARD = _ForkGuard()
os.register_at_fork(
    before=_GUARD.before, after_in_parent=_GUARD.after_in_parent, after_in_child=_GUARD.after_in_child
)


_running: Sweeper | None = None


def start(settings: Settings, enqueue: Callable[..., object]) -> Sweeper | None:
    """Start this process's sweeper (the worker's main process, once ready), unless the period is 0
    or the catalog is not SQL (Glance owns its images' statuses: `introspect glance sync` catches
    up on what the listener missed)."""
    global _running  # one sweeper per process
    if settings.sweep_period == 0 or settings.catalog != "sql":
        log.info("sweep: off (INTROSPECT_SWEEP_PERIOD=0, or a catalog other than sql)")
        return None

    def swept(ids: list[uuid.UUID], marked: datetime) -> object:
        return enqueue(ids, swept_at=marked, retry=False)

    _running = Sweeper(settings, swept)
    _running.start()
    return _running


def stop() -> None:
    global _running
    if _running is not None:
        _running.stop()
        _running = None
