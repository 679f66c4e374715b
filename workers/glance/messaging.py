"""The notification transport, configured as Glance's own: oslo.messaging, from our settings and,
when the admin points us at it, glance-api.conf itself.

Glance publishes its notifications with oslo.messaging (driver messagingv2) to the topic exchange
`control_exchange` (`glance` unless glance-api.conf says otherwise), routing key `<topic>.info`
for each of `[oslo_messaging_notifications] topics`. We consume them with oslo.messaging's
notification listener, in a pool of our own: oslo.messaging names our queue after the pool
(INTROSPECT_GLANCE_QUEUE), so we never take messages from Glance's default `notifications.info`
queue, which other consumers (ceilometer...) read. oslo.messaging parses the transport URL
(several hosts, percent-encoded credentials), fails over between its hosts and reconnects.

What must match glance-api.conf's `[oslo_messaging_rabbit]`: `amqp_durable_queues` and
`rabbit_quorum_queue` (a quorum queue is durable, so either makes oslo.messaging declare the
exchange durable); RabbitMQ refuses a consumer that declares the exchange otherwise
(406 PRECONDITION_FAILED), and the listener stops with one line that says which settings to set.
Two ways to match it, which combine:

- INTROSPECT_GLANCE_MESSAGING_CONFIG=/etc/glance/glance-api.conf: the file is read with
  oslo.config, so the transport URL, `control_exchange`, the topics and every
  `[oslo_messaging_rabbit]` option (TLS, heartbeat, quorum limits...) are exactly Glance's;
- the settings INTROSPECT_GLANCE_TRANSPORT_URL, _EXCHANGE, _TOPIC, _DURABLE_QUEUES,
  _QUORUM_QUEUES, _HEARTBEAT_TIMEOUT, _SSL, _SSL_CA_FILE, _SSL_CERT_FILE, _SSL_KEY_FILE: each one
  set overrides the file's value (a user of our own in the URL, say, with Glance's options).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from workers.errors import MessagingError
from workers.glance.settings import GlanceSettings

if TYPE_CHECKING:
    from oslo_config import cfg

RABBIT_GROUP = "oslo_messaging_rabbit"
NOTIFICATIONS_GROUP = "oslo_messaging_notifications"
#: Glance's own default control exchange (glance.notifier.set_defaults).
GLANCE_EXCHANGE = "glance"
#: Our settings -> the `[oslo_messaging_rabbit]` options they override.
RABBIT_OPTIONS = {
    "durable_queues": "amqp_durable_queues",
    "quorum_queues": "rabbit_quorum_queue",
    "heartbeat_timeout": "heartbeat_timeout_threshold",
    "ssl": "ssl",
    "ssl_ca_file": "ssl_ca_file",
    "ssl_cert_file": "ssl_cert_file",
    "ssl_key_file": "ssl_key_file",
}
#: What to do when RabbitMQ refuses our declaration of Glance's exchange.
MISMATCH_HINT = (
    "the exchange is declared unlike Glance's: set INTROSPECT_GLANCE_DURABLE_QUEUES and "
    "INTROSPECT_GLANCE_QUORUM_QUEUES as glance-api.conf's [oslo_messaging_rabbit] "
    "amqp_durable_queues and rabbit_quorum_queue, or point INTROSPECT_GLANCE_MESSAGING_CONFIG at "
    "glance-api.conf"
)


@cache
def oslo_messaging() -> Any:
    """oslo.messaging, imported on first use (0.7 s: most commands never need it). Its import
    pulls in eventlet through oslo.service, with eventlet's and oslo's deprecation banners; we
    use threads and nothing of eventlet, so warnings raised while importing it are not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import oslo_messaging
        import oslo_messaging.opts

    return oslo_messaging


@dataclass(frozen=True, slots=True)
class Messaging:
    """Where and how to consume Glance's notifications: the oslo.config options, the parsed
    transport URL, and our target and pool."""

    conf: cfg.ConfigOpts
    url: Any  # oslo_messaging.TransportURL
    exchange: str
    topic: str
    pool: str

    @property
    def masked_url(self) -> str:
        return mask(self.url)


def messaging(settings: GlanceSettings, *, queue: str | None = None) -> Messaging:
    """Our settings (and the config file they name) as oslo.messaging's options; every value is
    read here, so a bad one is one MessagingError now rather than a traceback later."""
    from oslo_config import cfg

    oslo = oslo_messaging()
    conf = cfg.ConfigOpts()
    files = [str(settings.messaging_config)] if settings.messaging_config else []
    try:
        conf(args=[], project="introspect", default_config_files=files, default_config_dirs=[])
        for group, options in oslo.opts.list_opts():
            conf.register_opts(options, group=group)
        conf.set_default("control_exchange", GLANCE_EXCHANGE)
        for setting, option in RABBIT_OPTIONS.items():
            value = getattr(settings, setting)
            if value is not None:
                conf.set_override(option, str(value) if setting.startswith("ssl_") else value, RABBIT_GROUP)
        rabbit = conf[RABBIT_GROUP]
        for option in RABBIT_OPTIONS.values():
            rabbit[option]  # read now: a bad value in the file fails here
        notifications = conf[NOTIFICATIONS_GROUP]
        url = oslo.TransportURL.parse(conf, settings.transport_url or notifications.transport_url)
        topics = list(notifications.topics)
        exchange = settings.exchange or conf.control_exchange
    except (cfg.Error, oslo.MessagingException, ValueError) as error:
        where = f" ({settings.messaging_config})" if settings.messaging_config else ""
        raise MessagingError(f"the notification settings{where} cannot be used: {error}") from None
    if any("/" in f"{host.username or ''}{host.password or ''}" for host in url.hosts):
        raise MessagingError(
            f"transport URL {mask(url)}: a `/` in a user name or password cannot be used, even "
            "percent-encoded: oslo.messaging's rabbit driver hands it to kombu unencoded (Glance's "
            "connections would fail too); choose one without"
        )
    if not url.hosts:
        # oslo's own default, `rabbit://`: the broker on this host, as user guest
        url = oslo.TransportURL.parse(conf, f"{url.transport}://guest:guest@localhost:5672/")
    return Messaging(
        conf=conf,
        url=url,
        exchange=exchange,
        topic=settings.topic or (topics[0] if topics else "notifications"),
        pool=queue or settings.queue,
    )


def transport(chosen: Messaging) -> Any:
    """oslo.messaging's notification transport for these settings (nothing is connected yet)."""
    oslo = oslo_messaging()
    try:
        return oslo.get_notification_transport(chosen.conf, url=chosen.url)
    except oslo.DriverLoadFailure:
        raise MessagingError(
            f"oslo.messaging has no driver {chosen.url.transport!r} (transport URL {chosen.masked_url}): "
            "Glance's RabbitMQ URLs start with rabbit://"
        ) from None
    except (oslo.MessagingException, ValueError) as error:
        raise MessagingError(f"transport URL {chosen.masked_url}: {error}") from None


def refused(chosen: Messaging, error: BaseException) -> MessagingError:
    """A listener that could not start, as one line that says what to change."""
    text = " ".join(str(error).split())
    hint = f"; {MISMATCH_HINT}" if "PRECONDITION_FAILED" in text else ""
    return MessagingError(f"listening on {chosen.masked_url} failed: {text}{hint}")


def mask(url: Any) -> str:
    """An oslo.messaging TransportURL without its passwords, for logs and messages."""
    hosts = ",".join(
        f"{host.username + ':***@' if host.username is not None else ''}{host.hostname or ''}"
        f"{':' + str(host.port) if host.port is not None else ''}"
        for host in url.hosts
    )
    return f"{url.transport}://{hosts}/{url.virtual_host or ''}"
