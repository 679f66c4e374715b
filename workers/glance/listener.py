"""`introspect glance listen`: Glance's notifications in, one inspection per change of data out.

Glance publishes with oslo.messaging (driver messagingv2) and we consume with oslo.messaging's own
notification listener (workers/glance/messaging.py: the transport URL, the pool that names our
queue, and the `[oslo_messaging_rabbit]` options that must be Glance's, from our settings or
glance-api.conf itself). oslo.messaging decodes each message and calls our endpoint's `info()`
with the event type and payload, one message at a time (a pool of one thread: the dedupe and the
inline inspections are not shared between threads); reconnects and failover between the
transport URL's hosts are oslo.messaging's.

Which events mean "new data to inspect" (measured on Glance 33; tests/glance/test_listener.py replays each):

- `image.update` with status `active`, no `os_glance_import_task` and no store still importing:
  the end of a plain upload (PUT /file), and the last event of it. `image.upload` and
  `image.activate` are sent *before* Glance saves the image as active; a PATCH sent then can
  leave the image stuck in `saving` or lose its data, so they are never acted on.
- `task.success` / `task.run` of an `api_image_import` task: the end of an import. Task payloads
  carry no image id: it is read from GET /v2/tasks/{id}. The lock (`os_glance_import_task`) is
  dropped just after task.success, so the inspection waits until the image is ready.
- every other `image.update` (a property changed, a tag, our own write-back) carries the same
  checksum as before and is dropped by the dedupe; `image.delete` forgets the image.

Each image is inspected once per change of its data however many events arrive: events are
deduplicated in memory by (image id, checksum) and by task id, and the inspection itself (the
pipeline's `introspect_image`, unforced) skips an image whose marker says its current data was
already inspected (so a restarted listener, a second listener, or the poller do not inspect twice).

What happens to a message: one that is not a notification we can read (no event type, a payload
that is not an object) is logged and dropped (acknowledged); one oslo.messaging cannot decode is
logged and rejected by oslo.messaging itself. When acting on an event fails (Glance unreachable
while inline: the pipeline's Transient; the task broker down while queueing), the event is
forgotten by the dedupe and the message goes back to the queue (NotificationResult.REQUEUE)
after a pause of `poll_seconds`, to come again. An image not ready yet (an import finishing) is
tried again by `Inline` after growing delays, the message acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from introspect.safety import Policy
from workers.catalog import CatalogBackend
from workers.errors import MessagingError, NotReady, PipelineError, Transient
from workers.glance.client import GlanceClient, GlanceError
from workers.glance.messaging import Messaging, oslo_messaging, refused, transport
from workers.pipeline import Inspection, introspect_image

log = logging.getLogger(__name__)

#: How many (image, checksum) and task keys the dedupe remembers (a few MB at most).
SEEN_MAX = 100_000
IMPORT_TASK_TYPE = "api_image_import"
TASK_EVENTS = frozenset({"task.success", "task.run"})


@dataclass(frozen=True, slots=True)
class Event:
    """The part of one notification we act on."""

    event_type: str
    payload: Mapping[str, Any]


class BadNotification(ValueError):
    """A message on our queue that is not a notification we can read."""


def event(event_type: object, payload: object) -> Event:
    """What oslo.messaging hands our endpoint -> Event. A notification whose payload is not an
    object is still an event (with an empty payload); one without an event type is not."""
    if not isinstance(event_type, str) or not event_type:
        raise BadNotification(f"no event type (got {type(event_type).__name__})")
    return Event(event_type, payload if isinstance(payload, Mapping) else {})


@dataclass(frozen=True, slots=True)
class Trigger:
    """An inspection to start: of an image (its checksum known), or of a finished import task's image."""

    image_id: str | None = None
    checksum: str | None = None
    task_id: str | None = None

    @property
    def key(self) -> Hashable:
        return ("task", self.task_id) if self.task_id else ("image", self.image_id, self.checksum)


def trigger(event: Event) -> Trigger | None:
    """What an event asks for (see the module docstring); None for most events."""
    payload = event.payload
    if event.event_type == "image.update" and payload.get("status") == "active":
        properties = payload.get("properties") or {}
        if properties.get("os_glance_import_task") or properties.get("os_glance_importing_to_stores"):
            return None
        image_id = payload.get("id")
        return Trigger(image_id=str(image_id), checksum=payload.get("checksum")) if image_id else None
    if event.event_type in TASK_EVENTS and payload.get("type") == IMPORT_TASK_TYPE:
        task_id = payload.get("id")
        return Trigger(task_id=str(task_id)) if task_id else None
    return None


class Seen:
    """A bounded memory of keys already handled (oldest forgotten first)."""

    def __init__(self, limit: int = SEEN_MAX) -> None:
        self.limit = limit
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """True the first time a key is seen."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True

    def discard(self, key: Hashable) -> None:
        self._keys.pop(key, None)

    def forget_image(self, image_id: str) -> None:
        for key in [key for key in self._keys if isinstance(key, tuple) and key[:2] == ("image", image_id)]:
            del self._keys[key]


Dispatch = Callable[[str], None]


class Listener:
    """Turns events into `dispatch(image_id)` calls, once per change."""

    def __init__(self, client: GlanceClient, dispatch: Dispatch, *, seen: Seen | None = None) -> None:
        self.client = client
        self.dispatch = dispatch
        self.seen = seen or Seen()
        self.dispatched = 0

    def handle(self, event: Event) -> str | None:
        """Act on one event; returns the image id dispatched, if any."""
        if event.event_type == "image.delete" and event.payload.get("id"):
            self.seen.forget_image(str(event.payload["id"]))
            return None
        wanted = trigger(event)
        if wanted is None or not self.seen.add(wanted.key):
            return None
        image_id = wanted.image_id or self._image_of_task(str(wanted.task_id))
        if image_id is None:
            return None
        self.dispatch(image_id)
        self.dispatched += 1
        return image_id

    def _image_of_task(self, task_id: str) -> str | None:
        try:
            found = self.client.get_task(task_id)
        except GlanceError as error:
            log.warning("import task %s: %s", task_id, error)
            return None
        image_id = (found.get("result") or {}).get("image_id") or (found.get("input") or {}).get("image_id")
        return str(image_id) if image_id else None

    def forget(self, event: Event) -> None:
        """Let this event's change be acted on again (its handling failed and it is requeued)."""
        wanted = trigger(event)
        if wanted is not None:
            self.seen.discard(wanted.key)

    def consume(
        self,
        chosen: Messaging,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        idle: Callable[[], None] = lambda: None,
        poll_seconds: float = 0.5,
    ) -> None:
        """Consume through oslo.messaging until `should_stop()`; `idle()` runs every
        `poll_seconds` (delayed retries), never at the same time as a notification's handling."""
        oslo = oslo_messaging()
        endpoint = Endpoint(self, poll_seconds)
        connected = transport(chosen)
        listener = oslo.get_notification_listener(
            connected,
            targets=[oslo.Target(topic=chosen.topic, exchange=chosen.exchange)],
            endpoints=[endpoint],
            executor="threading",
            pool=chosen.pool,
            allow_requeue=True,
        )
        try:
            started = _start(listener, chosen, should_stop, poll_seconds)
        except MessagingError:
            connected.cleanup()
            raise
        if not started:
            return
        log.info(
            "listening on %s exchange %s key %s.info, pool (queue) %s",
            chosen.masked_url,
            chosen.exchange,
            chosen.topic,
            chosen.pool,
        )
        try:
            while not should_stop():
                with endpoint.lock:
                    idle()
                time.sleep(poll_seconds)
        finally:
            listener.stop()
            listener.wait()
            connected.cleanup()
            log.info("stopped listening on %s", chosen.masked_url)


def _start(listener: Any, chosen: Messaging, should_stop: Callable[[], bool], poll_seconds: float) -> bool:
    """Start consuming (the queue declared and bound, so a notification sent from now on is
    ours). oslo.messaging waits for an unreachable broker for ever, in the calling thread, so
    the start runs in a thread of its own: a stop asked meanwhile returns False at once (the
    process is ending; that thread goes with it)."""
    failed: list[BaseException] = []

    def start() -> None:
        try:
            listener.start(override_pool_size=1)
        except Exception as error:  # shown below, as one line
            failed.append(error)

    starter = threading.Thread(target=start, name="introspect-listener-start", daemon=True)
    starter.start()
    while starter.is_alive():
        if should_stop():
            log.info("stopped before the broker at %s answered", chosen.masked_url)
            return False
        starter.join(poll_seconds)
    if failed:
        raise refused(chosen, failed[0])
    return True


class Endpoint:
    """oslo.messaging's notification endpoint: `info()` for every notification of priority INFO
    (Glance sends all of its notifications so)."""

    def __init__(self, listener: Listener, pause: float) -> None:
        self.listener = listener
        self.pause = pause
        #: Held while a notification is handled and while `idle()` runs.
        self.lock = threading.Lock()

    def info(
        self,
        ctxt: Mapping[str, Any],
        publisher_id: str,
        event_type: str,
        payload: Any,
        metadata: Mapping[str, Any],
    ) -> str:
        """HANDLED (acted on, or dropped as unreadable), or REQUEUE when acting on it failed."""
        results = oslo_messaging().NotificationResult
        handled: str = results.HANDLED
        requeue: str = results.REQUEUE
        try:
            found = event(event_type, payload)
        except BadNotification as error:
            log.warning(
                "dropped a notification from %s (message %s): %s",
                publisher_id,
                metadata.get("message_id"),
                error,
            )
            return handled
        with self.lock:
            try:
                self.listener.handle(found)
            except Exception:
                # The change could not be acted on (Glance or the task broker unreachable...):
                # the message comes back rather than the change being lost.
                log.exception("handling %s failed; the notification goes back to the queue", found.event_type)
                self.listener.forget(found)
            else:
                return handled
        time.sleep(self.pause)  # not at once: what failed may need a moment
        return requeue


class Inline:
    """The dispatch of `listen --inline`: the pipeline's inspection in this process, now, unforced;
    an image not ready yet (an import still finishing) is tried again after a growing delay, from
    `idle()`."""

    #: Delays (seconds) between the tries of an image that is not ready: about a minute in all.
    DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

    def __init__(
        self,
        catalog: CatalogBackend,
        *,
        delivery_limit: int = 3,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.delivery_limit = delivery_limit
        self.policy = policy
        self.clock = clock
        self.outcomes: list[Inspection] = []
        self._pending: dict[str, tuple[int, float]] = {}

    def __call__(self, image_id: str, attempt: int = 0) -> None:
        try:
            done = introspect_image(
                self.catalog,
                image_id,
                task_id=None,
                delivery_limit=self.delivery_limit,
                policy=self.policy,
                force=False,
            )
        except NotReady as error:
            if attempt < len(self.DELAYS):
                self._pending[image_id] = (attempt + 1, self.clock() + self.DELAYS[attempt])
            else:
                self._pending.pop(image_id, None)
                log.warning("image %s is still not ready, given up: %s", image_id, error)
            return
        except Transient:
            raise  # Glance unreachable: the notification goes back to the queue
        except PipelineError as error:
            log.warning("image %s: %s", image_id, error)
            return
        log.info("%s: %s", done.state, done.message)
        self._pending.pop(image_id, None)
        self.outcomes.append(done)
        del self.outcomes[: -SEEN_MAX // 100]

    def idle(self) -> None:
        """Retry what is due."""
        now = self.clock()
        for image_id, (attempt, due) in list(self._pending.items()):
            if due <= now:
                del self._pending[image_id]
                self(image_id, attempt)

    @property
    def pending(self) -> int:
        return len(self._pending)
