"""The cloud's settings, read as the `openstack` command reads them, for the keystone identity.

openstacksdk's own loader (`openstack.config`) does the reading: `OS_CLOUD` and clouds.yaml
with its secrets in secure.yaml (`OS_CLIENT_CONFIG_FILE` and `OS_CLIENT_SECURE_FILE`, else the
current directory, ~/.config/openstack and /etc/openstack), or the `OS_*` variables alone; the
auth type and its options, `cacert`, `insecure`/`verify`, `cert`/`key`, `region_name`,
`interface`, `image_endpoint_override`. Its keystoneauth1 session is the one every Glance call
then goes through, so a private CA or a client certificate applies to Glance as to keystone.

INTROSPECT_GLANCE_INTERFACE and _REGION_NAME, when set, choose the catalog entry over the
cloud's. Whatever the loader refuses becomes one GlanceConfigError line. (client.py makes the
KeystoneIdentity of a Cloud; this module knows nothing of the client.)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1.session import Session

from introspect.errors import SourceError
from workers.errors import PipelineError
from workers.glance.settings import GlanceSettings

#: Where openstacksdk looks for clouds.yaml when OS_CLIENT_CONFIG_FILE does not say (in order).
CLOUDS_YAML_PLACES = "./clouds.yaml, ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml"


class GlanceConfigError(PipelineError, SourceError):
    """The settings do not say where Glance is or who we are, or say it wrongly (a certificate we
    cannot verify, credentials keystone refuses). A SourceError too: met in a range read, it says
    nothing of the image, and `introspect.inspect` lets it through."""


@dataclass(frozen=True)
class Cloud:
    """What the loader made of the cloud: its keystoneauth1 session (auth plugin, verify, cert)
    and where the image API is to be found."""

    session: Session
    interface: str | list[str] | None
    region_name: str | None
    #: The cloud's `image_endpoint_override`, which the catalog does not overrule.
    endpoint_override: str | None


def load_cloud(settings: GlanceSettings) -> Cloud:
    """The cloud named by OS_CLOUD, or described by the OS_* variables alone."""
    import yaml  # type: ignore[import-untyped]
    from openstack import exceptions as sdk_exceptions
    from openstack import warnings as sdk_warnings
    from openstack.config import OpenStackConfig

    cloud = os.environ.get("OS_CLOUD") or None
    overrides: dict[str, Any] = {}
    if settings.interface:
        overrides["interface"] = settings.interface
    if settings.region_name:
        overrides["region_name"] = settings.region_name
    try:
        config = OpenStackConfig()
        if cloud is not None and cloud not in config.get_cloud_names():
            raise GlanceConfigError(_no_such_cloud(cloud, config.config_filename, config.get_cloud_names()))
        with warnings.catch_warnings():
            # openstacksdk 4.22 warns that InfluxDB support is going on every load, configured or
            # not (its parsed [metrics] section is a dict of Nones, never empty)
            warnings.filterwarnings("ignore", "Support for InfluxDB", sdk_warnings.RemovedInSDK60Warning)
            region = config.get_one(cloud=cloud, **overrides)
        session = region.get_session()
    except (sdk_exceptions.SDKException, ksa_exceptions.ClientException, yaml.YAMLError, OSError) as error:
        where = f"cloud {cloud!r}" if cloud else "the OS_* variables"
        raise GlanceConfigError(f"OpenStack settings ({where}): {_one_line(error)}") from None
    return Cloud(
        session,
        interface=region.get_interface("image"),
        region_name=region.get_region_name("image"),
        endpoint_override=region.get_endpoint("image"),
    )


def _no_such_cloud(cloud: str, found: str | None, names: list[str]) -> str:
    if found is None:
        return (
            f"OS_CLOUD={cloud} but no clouds.yaml was found (looked in {CLOUDS_YAML_PLACES}; "
            "OS_CLIENT_CONFIG_FILE names another)"
        )
    return f"OS_CLOUD={cloud} but {found} has no cloud of that name (it has: {', '.join(names) or 'none'})"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
