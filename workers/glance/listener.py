"""`introspect glance listen`: Glance's notifications in, one inspection per change of data out.

Glance (oslo.messaging, driver messagingv2) publishes to the topic exchange `glance` with routing
key `notifications.info`; the body is an envelope `{"oslo.version": "2.0", "oslo.message": "<JSON
text>"}` whose inner message has `event_type` and `payload`. We bind a queue of our own (never
Glance's `notifications.info` queue, which other consumers such as ceilometer compete for),
declared like Glance declares its exchange: durable=False (a durable declaration is refused
with 406 PRECONDITION_FAILED).

Which events mean "new data to inspect" (measured on Glance 33, see tests/glance/README-section.md):

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
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from introspect.safety import Policy
from workers.catalog import CatalogBackend
from workers.errors import NotReady, PipelineError, Transient
from workers.glance.client import GlanceClient, GlanceError
from workers.pipeline import Inspection, introspect_image

log = logging.getLogger(__name__)

#: How many (image, checksum) and task keys the dedupe remembers (a few MB at most).
SEEN_MAX = 100_000
IMPORT_TASK_TYPE = "api_image_import"
TASK_EVENTS = frozenset({"task.success", "task.run"})
#: Longest notification body we decode (Glance's image payloads are a few KB).
MAX_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    """The part of one notification we act on."""

    event_type: str
    payload: Mapping[str, Any]


class BadNotification(ValueError):
    """A message on our queue that is not an oslo.messaging notification."""


def decode(body: bytes | str | Mapping[str, Any]) -> Event:
    """An oslo.messaging notification (the v2 envelope, or a bare v1 message) -> Event."""
    if isinstance(body, bytes | str):
        if len(body) > MAX_BODY:
            raise BadNotification(f"a notification of {len(body)} bytes is beyond {MAX_BODY}")
        try:
            body = json.loads(body)
        except ValueError as error:
            raise BadNotification(f"not JSON: {error}") from None
    if not isinstance(body, Mapping):
        raise BadNotification(f"not a JSON object but {type(body).__name__}")
    message: Any = body
    if "oslo.message" in body:
        try:
            message = json.loads(body["oslo.message"])
        except (TypeError, ValueError) as error:
            raise BadNotification(f"oslo.message is not JSON text: {error}") from None
    if not isinstance(message, Mapping) or not isinstance(message.get("event_type"), str):
        raise BadNotification("no event_type")
    payload = message.get("payload")
    return Event(message["event_type"], payload if isinstance(payload, Mapping) else {})


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

    def consume(
        self,
        transport_url: str,
        *,
        exchange: str = "glance",
        topic: str = "notifications",
        queue: str = "introspect-glance",
        should_stop: Callable[[], bool] = lambda: False,
        idle: Callable[[], None] = lambda: None,
        poll_seconds: float = 0.5,
    ) -> None:
        """Consume until `should_stop()`; `idle()` runs between messages (delayed retries)."""
        kombu: Any = importlib.import_module("kombu")
        exchange_ = kombu.Exchange(exchange, type="topic", durable=False)
        queue_ = kombu.Queue(queue, exchange=exchange_, routing_key=f"{topic}.info", durable=False)

        def on_message(body: Any, message: Any) -> None:
            try:
                event = decode(body if isinstance(body, Mapping) else message.body)
            except BadNotification as error:
                log.warning("dropped a message on %s: %s", queue, error)
                message.ack()
                return
            try:
                self.handle(event)
            except Exception:
                # The dispatch could not be done (the broker for tasks is down...): leave the
                # message for later rather than lose the change.
                log.exception("handling %s failed; the notification goes back to the queue", event.event_type)
                message.requeue()
                time.sleep(poll_seconds)
                return
            message.ack()

        with kombu.Connection(amqp_url(transport_url)) as connection:
            with connection.Consumer(queue_, callbacks=[on_message], accept=["json"]):
                log.info(
                    "listening on %s exchange %s key %s.info, queue %s",
                    mask(transport_url),
                    exchange,
                    topic,
                    queue,
                )
                while not should_stop():
                    try:
                        connection.drain_events(timeout=poll_seconds)
                    except TimeoutError:
                        pass
                    idle()


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


def amqp_url(transport_url: str) -> str:
    """oslo.messaging's `rabbit://` is kombu's `amqp://` (the rest of the URL is the same)."""
    return (
        "amqp://" + transport_url.removeprefix("rabbit://")
        if transport_url.startswith("rabbit://")
        else transport_url
    )


def mask(url: str) -> str:
    """The URL without its password, for logs."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}"
