"""Which of an image's properties are introspect's: the marker, and the comparison (pure code).

Glance has no ETag, no If-Match and no `test` op, so "write only what is still ours" cannot be
one atomic compare-and-swap. Instead introspect keeps, on the image itself, a marker property
`introspect_written` recording what it last wrote, and compares before each write.

The marker is compact JSON (keys sorted, no spaces):

    {"at":"2026-11-29T16:00:00Z","data":"<checksum of the data inspected>","inspector":"1",
     "keys":{"hw_disk_bus":"742498225569", ...},"v":1}

`keys` maps each property introspect owns to the first 12 hex digits of the SHA-256 of the value
it wrote: enough to tell "still ours" from "changed by someone" (a 2^-48 chance of mistaking an
admin's value for ours), without copying every value a second time into the 64 KiB a property
holds (13 VMDK properties make a marker of about 700 characters). `data` and `inspector` say
which bytes and which parser version the values came from, so the listener and the poller skip
an image already inspected for its current data. The import plugin writes `data: null` (the
checksum does not exist yet while the import runs); the first inspection after it fills it in.

Per key, with `current` the image's value and `mine` the recorded digest:

- absent, whatever `mine`            -> add ours (an admin who removes a key gets ours back on the
                                        next run: that is how an override is cleared);
- present and digest(current)==mine  -> ours: replace it if the new value differs, else leave it;
- present otherwise                  -> someone else's: never replaced or removed, and no longer
                                        in the marker, so it stays theirs until they remove it;
- owned before, not produced now     -> removed if still ours, else left alone.

A marker that is missing or unreadable (edited by hand) owns nothing: every present key is then
someone else's, and only absent keys are added.

This module imports only the library: the import plugin uses it inside Glance's own process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from introspect.report import INSPECTOR_VERSION, Report

MARKER = "introspect_written"
MARKER_VERSION = 1
#: Hex digits of SHA-256 kept per value in the marker.
DIGEST_HEX = 12
#: Glance's own limits (images table: String(255) keys, Text values; MySQL's TEXT is 64 KiB).
MAX_KEY = 255
MAX_VALUE = 65535
#: Names that are image attributes, not properties: read-only, or not ours to set.
ATTRIBUTES = frozenset(
    """id name status visibility protected os_hidden checksum os_hash_algo os_hash_value owner size
    virtual_size min_ram min_disk disk_format container_format created_at updated_at tags direct_url
    locations self file schema stores is_public deleted deleted_at""".split()
)
RESERVED_PREFIX = "os_glance_"
#: Known Glance/Nova names go in first when the property quota forces a choice; then the
#: verdict; then the rest in name order.
PREFERRED_PREFIXES = ("vmware_", "hw_", "os_", "img_")
PREFERRED_KEYS = ("introspect_verdict", "introspect_findings", "introspect_format")
#: Longest introspect_findings value: the codes, comma-separated (each code is short; a report
#: has a handful).
MAX_FINDINGS_VALUE = 1024


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:DIGEST_HEX]


@dataclass(frozen=True)
class Marker:
    """What introspect last wrote to an image (see the module docstring for the format)."""

    keys: Mapping[str, str] = field(default_factory=dict)
    data: str | None = None
    inspector: str | None = None
    at: str | None = None
    #: The re-run job that wrote it (Glance catalog only: `rerun --wait` counts by it).
    job: str | None = None

    def dumps(self) -> str:
        body: dict[str, Any] = {
            "v": MARKER_VERSION,
            "data": self.data,
            "inspector": self.inspector,
            "at": self.at,
            "keys": dict(sorted(self.keys.items())),
        }
        if self.job:
            body["job"] = self.job
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def read(cls, properties: Mapping[str, Any]) -> Marker | None:
        """The image's marker; None when there is none or it is not ours to read (edited by
        hand into something else): then every present key counts as someone else's."""
        raw = properties.get(MARKER)
        if not isinstance(raw, str):
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        if (
            not isinstance(body, dict)
            or body.get("v") != MARKER_VERSION
            or not isinstance(body.get("keys"), dict)
        ):
            return None
        keys = {str(k): str(v) for k, v in body["keys"].items()}
        data, inspector, at, job = (body.get(name) for name in ("data", "inspector", "at", "job"))
        return cls(
            keys=keys,
            data=str(data) if data is not None else None,
            inspector=str(inspector) if inspector is not None else None,
            at=str(at) if at is not None else None,
            job=str(job) if job is not None else None,
        )


def writable(desired: Mapping[str, object]) -> tuple[dict[str, str], dict[str, str]]:
    """Split what the inspection produced into what may be written and what may not (and why)."""
    ok: dict[str, str] = {}
    refused: dict[str, str] = {}
    for key, value in desired.items():
        if key in ATTRIBUTES:
            refused[key] = "an image attribute, never rewritten by introspect"
        elif key.startswith(RESERVED_PREFIX) or key == MARKER:
            refused[key] = "reserved"
        elif not isinstance(value, str):
            refused[key] = f"not a string ({type(value).__name__})"
        elif not key or len(key) > MAX_KEY or "/" in key or "~" in key:
            refused[key] = f"not a usable property name (1..{MAX_KEY} characters, no / or ~)"
        elif len(value) > MAX_VALUE:
            refused[key] = f"value longer than {MAX_VALUE} characters"
        else:
            ok[key] = value
    return ok, refused


def priority(key: str) -> tuple[int, str]:
    """Order in which keys compete for the property quota (lower first)."""
    if key == MARKER:
        return (0, key)
    if key.startswith(PREFERRED_PREFIXES):
        return (1, key)
    if key in PREFERRED_KEYS:
        return (2, key)
    return (3, key)


@dataclass
class Plan:
    """The JSON-patch for one image, and what it leaves alone."""

    add: dict[str, str] = field(default_factory=dict)  # keys not on the image
    replace: dict[str, str] = field(default_factory=dict)  # our keys with a new value
    remove: list[str] = field(default_factory=list)  # our keys no longer produced
    kept: dict[str, str] = field(default_factory=dict)  # key -> someone else's current value
    marker: Marker = field(default_factory=Marker)
    marker_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (self.add or self.replace or self.remove or self.marker_changed)

    def marker_for(self, *, now: str, adds: list[str] | None = None) -> str:
        """The marker to write with the patch: exactly the keys that will be ours once it is
        applied (with only `adds` of the new keys going in)."""
        skipped = self.add.keys() - set(self.add if adds is None else adds)
        keys = {key: mine for key, mine in self.marker.keys.items() if key not in skipped}
        marker = self.marker
        return Marker(keys=keys, data=marker.data, inspector=marker.inspector, at=now, job=marker.job).dumps()

    def ops(self, *, adds: list[str], now: str) -> list[dict[str, str]]:
        """The JSON-patch, with only the new keys in `adds` (all of them unless a 413 said
        otherwise), and the marker last."""
        ops = [{"op": "add", "path": f"/{key}", "value": self.add[key]} for key in sorted(adds)]
        ops += [
            {"op": "replace", "path": f"/{key}", "value": value}
            for key, value in sorted(self.replace.items())
        ]
        ops += [{"op": "remove", "path": f"/{key}"} for key in sorted(self.remove)]
        ops.append({"op": "add", "path": f"/{MARKER}", "value": self.marker_for(now=now, adds=adds)})
        return ops


def plan(
    image: Mapping[str, Any],
    desired: Mapping[str, str],
    *,
    data: str | None,
    inspector: str,
    job: str | None = None,
    drop: Iterable[str] = (),
) -> Plan:
    """Compare the image with what introspect produced and what it wrote before (pure).
    `drop`: bookkeeping keys of ours (the Glance catalog's claim) removed whenever present."""
    previous = Marker.read(image)
    owned = dict(previous.keys) if previous else {}
    result = Plan()
    keys: dict[str, str] = {}
    for key, value in desired.items():
        current = image.get(key)
        if current is None:
            result.add[key] = value
            keys[key] = digest(value)
        elif key in owned and isinstance(current, str) and digest(current) == owned[key]:
            if current != value:
                result.replace[key] = value
            keys[key] = digest(value)
        else:
            result.kept[key] = _text(current)
    for key, mine in owned.items():
        current = image.get(key)
        if key in desired or current is None:
            continue
        if isinstance(current, str) and digest(current) == mine:
            result.remove.append(key)
        else:
            result.kept[key] = _text(current)
    result.remove += [key for key in drop if key in image and key not in result.remove]
    result.marker = Marker(
        keys=keys, data=data, inspector=inspector, job=job or (previous.job if previous else None)
    )
    result.marker_changed = previous is None or (
        previous.keys,
        previous.data,
        previous.inspector,
        previous.job,
    ) != (keys, data, inspector, result.marker.job)
    return result


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def ready(image: Mapping[str, Any]) -> str | None:
    """None when properties may be written now; else why not. Writing while an import flow
    holds the image loses the write or strands the image (measured), so wait for it to end."""
    if image.get("status") != "active":
        return f"the image is {image.get('status')}, not active: nothing is written until it is"
    if image.get("os_glance_import_task"):
        return (
            "an import is still running on the image (os_glance_import_task is set): try again when it ends"
        )
    if image.get("os_glance_importing_to_stores"):
        return "the image is still being copied to a store: try again when it ends"
    return None


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def data_identity(image: Mapping[str, Any]) -> str | None:
    """What names the image's bytes: Glance's checksum (MD5), else its multihash."""
    value = image.get("checksum") or image.get("os_hash_value")
    return str(value) if value else None


def already_inspected(image: Mapping[str, Any]) -> bool:
    """The marker says these very bytes were inspected by this inspector version."""
    marker = Marker.read(image)
    data = data_identity(image)
    return (
        marker is not None
        and data is not None
        and marker.data == data
        and (marker.inspector == str(INSPECTOR_VERSION))
    )


def desired_properties(report: Report) -> dict[str, str]:
    """What an inspection writes to a Glance image: see `desired`."""
    return desired(
        report.properties,
        verdict=str(report.verdict),
        found_format=report.format,
        found_virtual_size=report.virtual_size,
        codes=[finding.code for finding in report.findings],
    )


def desired(
    properties: Mapping[str, str],
    *,
    verdict: str,
    found_format: str | None,
    found_virtual_size: int | None,
    codes: Iterable[str],
) -> dict[str, str]:
    """The inspection's properties (without disk_format, an attribute) plus the verdict, its
    findings' codes (at most MAX_FINDINGS_VALUE characters), the format and the virtual size
    found, so operators can filter images on them in Glance (and the catalog can show what
    Glance declares beside what was found). The one copy: the import plugin and the Glance
    catalog's write-back both call it."""
    wanted = {key: value for key, value in properties.items() if key != "disk_format"}
    wanted["introspect_verdict"] = verdict
    if found_format:
        wanted["introspect_format"] = found_format
    if found_virtual_size is not None:
        wanted["introspect_virtual_size"] = str(found_virtual_size)
    joined = _whole_codes(dict.fromkeys(codes), MAX_FINDINGS_VALUE)
    if joined:
        wanted["introspect_findings"] = joined
    return wanted


def _whole_codes(codes: Iterable[str], limit: int) -> str:
    """The codes, comma-separated, as many whole ones as fit in `limit` characters: a code cut in
    half would name no rule (and fail the vocabulary's pattern)."""
    kept: list[str] = []
    length = 0
    for code in codes:
        added = len(code) + (1 if kept else 0)
        if length + added > limit:
            break
        kept.append(code)
        length += added
    return ",".join(kept)
