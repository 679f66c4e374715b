"""Errors of the service side, as one small tree (the library's own are in introspect.errors).

    PipelineError                 one clear line for the operator; the CLI prints it and exits 1
     ├── CatalogConfigError       the catalog's database URL names no database the catalog supports
     ├── MessagingError           the notification listener cannot start: its settings or the broker said no
     ├── NotFound                 no image with that id
     ├── InvalidTransition        the status table forbids the move (or another worker moved it first)
     ├── UnknownScheme            a location whose scheme no store serves
     ├── NoData                   the image has no bytes to inspect yet (or they are gone)
     ├── UpToDate                 an unforced inspection of data this inspector version already read
     │    └── Superseded          a sweep's delivery of an image that moved since the sweep took it
     └── Transient                the infrastructure failed, not the image: tasks retry these
          ├── CatalogUnavailable  the database cannot be reached
          ├── BrokerUnavailable   the broker cannot be reached
          ├── StoreUnavailable    reading the image's bytes failed for a reason that may pass
          └── NotReady            an upload or import still holds the image: try again later

A bad image is never an error here: the library turns it into a verdict, which is recorded.
"""

from __future__ import annotations

from introspect.errors import SourceError


class PipelineError(Exception):
    """Something the operator can act on; the message says what happened and what to do."""


class CatalogConfigError(PipelineError):
    """The catalog's database URL cannot be used: not a URL, a database the catalog does not
    support, or its driver is not installed. Not transient: the setting must change."""


class MessagingError(PipelineError):
    """The notification listener cannot start: a transport URL or config file oslo.messaging
    refuses, a broker that refuses our login, or a declaration unlike Glance's. Not transient:
    a setting must change."""


class NotFound(PipelineError):
    """No image with that id."""

    def __init__(self, image_id: object) -> None:
        super().__init__(f"no image with id {image_id}: `introspect images list` shows the ids")


class InvalidTransition(PipelineError):
    """A status change the transition table does not allow, or that lost a race."""


class UnknownScheme(PipelineError):
    """A location the stores cannot read."""


class NoData(PipelineError, SourceError):
    """The image has no bytes to inspect (still queued, or its data is gone). A SourceError too,
    so that `introspect.inspect` lets it through rather than judging the image by it."""


class UpToDate(PipelineError):
    """Not forced, and the catalog says this inspector version already read the image's current
    data: nothing to do (the listener and the poller see most images many times)."""


class Superseded(UpToDate):
    """The sweep queued the image again (workers/sweep.py), and the image moved since: another
    delivery claimed it, or finished it. The sweep's delivery has nothing to do."""


class Transient(PipelineError):
    """A fault of the infrastructure that may pass: worth a retry with backoff."""


class CatalogUnavailable(Transient):
    """The catalog's database cannot be reached."""


class BrokerUnavailable(Transient):
    """The broker cannot be reached."""


class StoreUnavailable(Transient, SourceError):
    """The image's bytes cannot be read right now (a SourceError: inspect() lets it through)."""


class NotReady(Transient):
    """An upload or import still holds the image (Glance writes lost or a stranded image when
    properties are written then): the task retries later, the listener waits and tries again."""
