"""Settings of the Glance side, from the environment (`INTROSPECT_GLANCE_*`).

Identity comes one of two ways:

- keystone (the usual OpenStack settings), read by openstacksdk's own loader exactly as the
  `openstack` command reads them: `OS_CLOUD` naming a cloud of clouds.yaml, with its secrets in
  secure.yaml beside it (`OS_CLIENT_CONFIG_FILE`, `OS_CLIENT_SECURE_FILE`, else ./,
  ~/.config/openstack/, /etc/openstack/), or `OS_AUTH_URL` and the other `OS_*` variables. The
  cloud's `cacert`, `insecure`/`verify` and `cert`/`key` (`OS_CACERT`, `OS_INSECURE`...) apply to
  keystone and to every Glance call alike. The image endpoint comes from the service catalog (the
  cloud's `interface` and `region_name`, or INTROSPECT_GLANCE_INTERFACE / _REGION_NAME) unless
  INTROSPECT_GLANCE_ENDPOINTS names it, or the cloud's `image_endpoint_override` does.
- headers (a keystone-less Glance whose paste pipeline trusts X-* headers, as a test peer or a
  Glance behind an authenticating proxy): INTROSPECT_GLANCE_ENDPOINTS plus the identity stated in
  X-Identity-Status/X-Roles/X-Project-Id/X-User-Id; TLS from INTROSPECT_GLANCE_CACERT (else
  OS_CACERT) and INTROSPECT_GLANCE_INSECURE.

`auth = auto` (the default) picks keystone when any of OS_CLOUD, OS_AUTH_URL, OS_AUTH_TYPE is set.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workers.settings import read_settings

KEYSTONE_VARIABLES = ("OS_CLOUD", "OS_AUTH_URL", "OS_AUTH_TYPE")


def _default_cache_dir() -> Path:
    return platformdirs.user_cache_path("introspect", appauthor=False) / "glance-ranges"


class GlanceSettings(BaseSettings):
    """Where Glance is, who we are to it, and how hard to try."""

    model_config = SettingsConfigDict(env_prefix="INTROSPECT_GLANCE_", frozen=True, extra="ignore")

    #: Comma-separated Glance API endpoints (`http://host:9292`); requests go round-robin, and a
    #: failed endpoint is skipped for `cooldown` seconds. Empty: discovered through keystone.
    endpoints: Annotated[tuple[str, ...], NoDecode] = ()
    auth: Literal["auto", "keystone", "headers"] = "auto"
    #: Identity stated in headers (auth = headers). The write-back needs a role that may change
    #: every image's properties: `admin` under Glance's default policies.
    roles: Annotated[tuple[str, ...], NoDecode] = ("admin",)
    project_id: str = "introspect"
    user_id: str = "introspect"
    #: keystone: which catalog entry to use; unset, the cloud's own (`interface`, `region_name` in
    #: clouds.yaml, OS_INTERFACE, OS_REGION_NAME; `public` when nothing says).
    interface: str | None = None
    region_name: str | None = None
    #: headers: the CA bundle that signed Glance's certificate (unset: OS_CACERT, else the
    #: system's), or no verification at all. With keystone, the cloud's settings say it.
    cacert: Path | None = None
    insecure: bool = False
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    #: Seconds a failed endpoint is left alone.
    cooldown: float = Field(30.0, ge=0)
    #: Tries of one request over all endpoints (connection errors and 5xx), with a short backoff.
    attempts: int = Field(4, ge=1)
    #: The range cache: fetched ranges of image data, so a re-run of an unchanged image reads nothing.
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    cache_max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    #: Granule of a range request: a read is widened to whole blocks, so nearby reads of a parser
    #: become one request; the block doubles with each request of an image, up to read_block_max.
    read_block: int = Field(64 * 1024, ge=512)
    read_block_max: int = Field(512 * 1024, ge=512)
    #: Notifications, consumed through oslo.messaging as Glance sends them (workers/glance/messaging.py).
    #: `messaging_config`: a file in oslo.config's format, usually glance-api.conf itself, whose
    #: transport URL, `control_exchange`, `[oslo_messaging_notifications] topics` and
    #: `[oslo_messaging_rabbit]` options are then exactly Glance's; each setting below that is
    #: set overrides the file's value, and what neither sets is oslo.messaging's default
    #: (`rabbit://` on localhost, exchange `glance` as Glance's default, topic `notifications`).
    messaging_config: Path | None = None
    #: The broker Glance publishes to, as in glance-api.conf: `rabbit://user:pass@host:5672/vhost`,
    #: several hosts comma-separated (`rabbit://u:p@h1:5672,u:p@h2:5672/vhost`), with a `:`, `@`
    #: or `,` in a name or password percent-encoded (`%3A %40 %2C`); a `/` is refused, as
    #: oslo.messaging's rabbit driver cannot log in with one.
    transport_url: str | None = None
    exchange: str | None = None
    topic: str | None = None
    #: Our listener pool: oslo.messaging names our own queue after it and binds it to
    #: `<topic>.info`, so listeners of one pool share the work and never take Glance's default
    #: `notifications.info` queue from its other consumers (ceilometer...).
    queue: str = Field("introspect-glance", min_length=1)
    #: `[oslo_messaging_rabbit]` options that must be Glance's own: `amqp_durable_queues` and
    #: `rabbit_quorum_queue` decide whether the exchange is durable (RabbitMQ refuses a
    #: consumer that declares it otherwise), `heartbeat_timeout_threshold`, and TLS (`ssl`,
    #: `ssl_ca_file`, `ssl_cert_file`, `ssl_key_file`). Unset: the config file's, else oslo's default.
    durable_queues: bool | None = None
    quorum_queues: bool | None = None
    heartbeat_timeout: int | None = Field(None, ge=0)
    ssl: bool | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None

    @field_validator("endpoints", "roles", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def uses_keystone(self) -> bool:
        if self.auth == "auto":
            return any(os.environ.get(name) for name in KEYSTONE_VARIABLES)
        return self.auth == "keystone"

    @property
    def verify(self) -> bool | str:
        """requests' `verify` for the headers mode: False, a CA bundle, or True (the system's)."""
        if self.insecure:
            return False
        cacert = str(self.cacert) if self.cacert else os.environ.get("OS_CACERT")
        return cacert or True


@cache
def get_glance_settings() -> GlanceSettings:
    """The process's Glance settings, read once from the environment; a value that is not one
    is one line naming the variable."""
    return read_settings(GlanceSettings)
