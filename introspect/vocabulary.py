"""The vocabulary of image properties: every key introspect writes, and the values each may hold.

Nova reads the Nova/Glance names (`vmware_disktype`, `hw_disk_bus`, `hw_scsi_model`...) and
refuses, or fails a boot on, values outside its own constants; Glance publishes enums for many
of them in its metadefs. The vocabulary is vendored as data, `introspect/data/vocabulary.json`,
one entry per key with:

- `title`, `type` (always `string`: Glance stores every property as one) and `description`;
- `written_by`: the layer that writes it (`format`, `container`, `guest`, `pipeline`), or
  `bookkeeping` (introspect's own markers, never an admin's to set); `attribute` marks
  `disk_format`, an image attribute that is checked but never written as a property;
- `enum` (the values accepted) or `pattern` (a regular expression the whole value matches);
- `aliases`: spellings Nova or Glance's documentation map to an accepted value (`amd64` for
  `x86_64`), refused with the word to write instead;
- `refused`: values some reader accepts but introspect does not write, each with the reason
  (`vmware_disktype=thin`, `hw_scsi_model=buslogic`);
- `sources`: where the values come from, each a file and constant of Glance 33.0.0's metadefs,
  Nova 33.0.0 (commit in the top-level `sources`), libvirt, or introspect's own registries.
  tests/test_vocabulary.py checks the Nova, libvirt and introspect lists against the `enum`,
  and tests/glance/test_metadefs.py checks each Glance enum against the metadefs files the
  Glance venv installs, so the vendored data cannot drift silently.

The API:

- `check(key, value)`: None when the value may be written, else one line saying why not and
  which values are accepted. Every value `inspect()` writes passes it (tested over every fixture).
- `check_override(key, value)` / `check_overrides(pairs)`: the same for an admin's override,
  plus: introspect's bookkeeping keys are not overrides. Keys outside the vocabulary (other
  Glance/Nova properties) are not introspect's to judge and pass, unless they are `introspect_*`.
- `KEYS`, `PROPERTIES` (the entries), `SOURCES`.
- `metadefs_namespace()`: a Glance metadefs namespace document (`POST /v2/metadefs/namespaces`)
  describing every property introspect writes; `introspect metadefs` prints it.
"""

from __future__ import annotations

import json
import pkgutil
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

#: Glance's own limits on a property (images table: String(255) keys, Text values).
MAX_KEY = 255
MAX_VALUE = 65535
#: Accepted values shown in a reason, at most (vmware_ostype has 148).
SHOWN = 12
#: The namespace `metadefs_namespace` names by default.
NAMESPACE = "OS::Introspect"
OWN_PREFIX = "introspect_"
BOOKKEEPING = "bookkeeping"
#: What a metadefs property keeps of an entry (the rest is introspect's own bookkeeping of sources).
METADEFS_FIELDS = ("title", "description", "type", "enum", "pattern", "maxLength", "readonly")


def _load() -> dict[str, Any]:
    # pkgutil rather than importlib.resources: the same loader's read (a wheel, a zip), without the
    # ~5 ms importlib.resources costs every `introspect inspect` (tempfile, zipfile, shutil...).
    raw = pkgutil.get_data("introspect", "data/vocabulary.json")
    if raw is None:
        raise ImportError("introspect/data/vocabulary.json is missing: the installation is broken")
    data: dict[str, Any] = json.loads(raw)
    return data


_DATA = _load()
#: Each key's entry, as `introspect/data/vocabulary.json` holds it.
PROPERTIES: Mapping[str, Mapping[str, Any]] = _DATA["properties"]
#: The projects (and releases, commits) the entries' sources cite.
SOURCES: Mapping[str, Mapping[str, str]] = _DATA["sources"]
KEYS: frozenset[str] = frozenset(PROPERTIES)


@cache
def _pattern(key: str) -> re.Pattern[str] | None:
    pattern = PROPERTIES[key].get("pattern")
    return re.compile(pattern) if pattern else None


def _accepted(entry: Mapping[str, Any]) -> str:
    enum: list[str] = entry["enum"]
    shown = ", ".join(enum[:SHOWN])
    return shown + (
        f", ... ({len(enum)} values: `introspect metadefs` lists them)" if len(enum) > SHOWN else ""
    )


def _quoted(value: str) -> str:
    return repr(value if len(value) <= 64 else value[:64] + "...")


def check(key: str, value: str) -> str | None:
    """None when `value` is a valid value of `key`, else one line saying why not and what is
    accepted. A key outside the vocabulary is valid unless it is one of introspect's own names."""
    entry = PROPERTIES.get(key)
    if entry is None:
        if key.startswith(OWN_PREFIX):
            return f"{key} is not a property introspect knows (`introspect metadefs` lists them)"
        if len(key) > MAX_KEY:
            return f"the key is longer than Glance's {MAX_KEY} characters"
        return None
    if not isinstance(value, str):
        return f"{key}: Glance stores property values as strings, not {type(value).__name__}"
    if len(value) > entry.get("maxLength", MAX_VALUE):
        return f"{key}: the value is longer than {entry.get('maxLength', MAX_VALUE)} characters"
    if value in entry.get("refused", {}):
        return f"{key}={value} is refused: {entry['refused'][value]}"
    if value in entry.get("aliases", {}):
        return f"{key}={value}: write {entry['aliases'][value]}, the word every reader accepts"
    if "enum" in entry:
        if value not in entry["enum"]:
            return f"{key}={_quoted(value)} is not one of {_accepted(entry)}"
        return None
    pattern = _pattern(key)
    if pattern is not None and not pattern.fullmatch(value):
        return f"{key}={_quoted(value)} does not match {pattern.pattern}"
    return None


def check_override(key: str, value: str) -> str | None:
    """What `check` says of an admin's override, and: introspect's bookkeeping is not an
    override (the write-back relies on it)."""
    entry = PROPERTIES.get(key)
    if entry is not None and entry["written_by"] == BOOKKEEPING:
        return f"{key} is introspect's bookkeeping, not a property to override"
    return check(key, value)


def check_overrides(pairs: Mapping[str, str]) -> dict[str, str]:
    """The problem with each of an admin's overrides that has one, by key (empty: all valid)."""
    return {key: reason for key, value in pairs.items() if (reason := check_override(key, value)) is not None}


def metadefs_namespace(namespace: str = NAMESPACE) -> dict[str, Any]:
    """A Glance metadefs namespace (the body of `POST /v2/metadefs/namespaces`) describing every
    property introspect writes, associated with Glance images. `disk_format`, an attribute, is
    left out; Nova's names are described as introspect writes them (its enums), beside Glance's
    own namespaces (OS::Compute::VMware, OS::Compute::LibvirtImage...), which may also list them."""
    properties = {
        key: {field: entry[field] for field in METADEFS_FIELDS if field in entry}
        for key, entry in sorted(PROPERTIES.items())
        if not entry.get("attribute")
    }
    glance, nova = SOURCES["glance"], SOURCES["nova"]
    return {
        "namespace": namespace,
        "display_name": "Introspect: what the image says about itself",
        "description": (
            "Image properties introspect reads from the image's own headers, descriptor and "
            "filesystems: Nova's names with the values Nova accepts (Nova "
            f"{nova['release']}, Glance {glance['release']} metadefs), and introspect's own "
            "introspect_* keys. A value an admin sets wins over introspect's and survives re-runs."
        ),
        "visibility": "public",
        "protected": True,
        "resource_type_associations": [{"name": "OS::Glance::Image"}],
        "properties": properties,
        "objects": [],
    }
