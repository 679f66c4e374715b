"""The LUKS2 JSON metadata area: its size bounds, then the text parsed only after the length check
and read field by field, every count and string capped.

Spec: "LUKS2 On-Disk Format Specification" (cryptsetup, version 1.1), §3 "JSON area" and its
objects (keyslots, tokens, segments, digests, config); cryptsetup's luks2.h for the entry limits.
This is not a format of its own: `introspect.formats.luks` reads the binary headers and hands the
JSON area here. The models describe the JSON objects (a LUKS1 key slot is a `LuksKeyslot` too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from introspect.decode import KIB
from introspect.errors import BadField
from introspect.model import Frozen, Severity
from introspect.safety import rule

#: Every LUKS header error, binary or JSON, is reported under this rule (luks.py raises it too).
BAD_HEADER = rule("luks.bad_header", Severity.REJECT, "the LUKS header contradicts its on-disk format")

#: The binary header's size, and the sizes hdr_size may take (binary header + JSON area, 16 KiB
#: to 4 MiB): they bound the JSON area.
LUKS2_HDR_BIN_LEN = 4 * KIB
LUKS2_HDR_SIZES = frozenset(16 * KIB << n for n in range(9))
#: The largest JSON area the spec allows: nothing longer is ever handed to json.loads.
LUKS2_JSON_MAX = max(LUKS2_HDR_SIZES) - LUKS2_HDR_BIN_LEN

#: cryptsetup's luks2.h limits on each JSON object's entries.
LUKS2_KEYSLOTS_MAX = 32
LUKS2_TOKENS_MAX = 32
LUKS2_SEGMENT_MAX = 32
LUKS2_DIGEST_MAX = 8
#: Strings copied from the JSON into the details are cut at this length (cipher names are < 32).
JSON_STRING_MAX = 128
#: Flags and requirements lists in the config object are cut at this many entries.
JSON_LIST_MAX = 32
UINT64_MAX = (1 << 64) - 1


class LuksKeyslot(Frozen):
    """One key slot: LUKS1's binary slot, or a LUKS2 `keyslots` entry (sizes in bytes)."""

    id: int
    active: bool
    type: str | None  # LUKS2 keyslot type ("luks2"); None for LUKS1
    key_size: int | None
    area_offset: int | None
    area_size: int | None  # LUKS2 only
    encryption: str | None  # LUKS2 area encryption
    kdf: str | None  # "pbkdf2" (always, for LUKS1), "argon2i", "argon2id"
    iterations: int | None  # pbkdf2 only
    stripes: int | None


class LuksSegment(Frozen):
    """A LUKS2 `segments` entry (LUKS1 has one implied segment, the payload)."""

    id: int
    type: str | None
    offset: int
    size: int | None  # None: "dynamic", up to the end of the device
    encryption: str | None
    sector_size: int | None


class LuksDigest(Frozen):
    """A LUKS2 `digests` entry: which key slots unlock which segments."""

    id: int
    type: str | None
    hash: str | None
    keyslots: list[int]
    segments: list[int]


class LuksConfig(Frozen):
    """The LUKS2 `config` object."""

    json_size: int
    keyslots_size: int | None
    flags: list[str]
    requirements: list[str]  # requirements.mandatory


@dataclass(frozen=True, slots=True)
class Luks2Metadata:
    """What the JSON area says: its key slots, segments and digests in id order, and its config."""

    keyslots: list[LuksKeyslot]
    segments: list[LuksSegment]
    digests: list[LuksDigest]
    config: LuksConfig


def read_metadata(area: bytes, area_size: int) -> Luks2Metadata:
    """The JSON area (`area_size` bytes after the binary header), parsed and checked: each object's
    entries within cryptsetup's limits (tokens too, though nothing of them is kept)."""
    metadata = _json(area, area_size)
    keyslots = [_keyslot(i, v) for i, v in _entries(metadata, "keyslots", LUKS2_KEYSLOTS_MAX)]
    _entries(metadata, "tokens", LUKS2_TOKENS_MAX)
    segments = [_segment(i, v) for i, v in _entries(metadata, "segments", LUKS2_SEGMENT_MAX)]
    digests = [_digest(i, v) for i, v in _entries(metadata, "digests", LUKS2_DIGEST_MAX)]
    return Luks2Metadata(keyslots=keyslots, segments=segments, digests=digests, config=_config(metadata))


def _json(area: bytes, area_size: int) -> dict[str, Any]:
    """The JSON text: NUL-terminated inside its area, which hdr_size already bounds."""
    if area_size > LUKS2_JSON_MAX:
        raise BadField(BAD_HEADER, "JSON area size", area_size, f"at most {LUKS2_JSON_MAX}")
    end = area.find(b"\0", 0, area_size)
    if end < 0:
        raise BadField(
            BAD_HEADER,
            "JSON area",
            f"{area_size} bytes without a NUL",
            "JSON text ending with a NUL inside the area",
            offset=LUKS2_HDR_BIN_LEN,
        )
    try:
        metadata = json.loads(area[:end])
    except (ValueError, RecursionError) as error:
        raise BadField(
            BAD_HEADER, "JSON area", show(str(error)), "valid JSON", offset=LUKS2_HDR_BIN_LEN
        ) from None
    return _object(metadata, "JSON metadata")


def _entries(metadata: dict[str, Any], key: str, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """An object of numbered entries ("0", "1"...), at most `limit` of them, in id order."""
    entries = _object(metadata.get(key), key)
    if len(entries) > limit:
        raise BadField(BAD_HEADER, key, f"{len(entries)} entries", f"at most {limit}")
    numbered = []
    for name, value in entries.items():
        if not (name.isascii() and name.isdigit() and int(name) < limit):
            raise BadField(BAD_HEADER, f"{key} id", show(name), f"a number below {limit}")
        numbered.append((int(name), _object(value, f"{key}.{name}")))
    return sorted(numbered, key=lambda entry: entry[0])


def _keyslot(index: int, value: dict[str, Any]) -> LuksKeyslot:
    area = _optional_object(value.get("area"))
    kdf = _optional_object(value.get("kdf"))
    af = _optional_object(value.get("af"))
    where = f"keyslots.{index}"
    return LuksKeyslot(
        id=index,
        active=True,
        type=_string(value.get("type")),
        key_size=_number(value.get("key_size"), f"{where}.key_size"),
        area_offset=_u64(area.get("offset"), f"{where}.area.offset"),
        area_size=_u64(area.get("size"), f"{where}.area.size"),
        encryption=_string(area.get("encryption")),
        kdf=_string(kdf.get("type")),
        iterations=_number(kdf.get("iterations"), f"{where}.kdf.iterations"),
        stripes=_number(af.get("stripes"), f"{where}.af.stripes"),
    )


def _segment(index: int, value: dict[str, Any]) -> LuksSegment:
    where = f"segments.{index}"
    offset = _u64(value.get("offset"), f"{where}.offset")
    if offset is None:
        raise BadField(BAD_HEADER, f"{where}.offset", None, "the data's offset, a decimal string")
    size = value.get("size")
    return LuksSegment(
        id=index,
        type=_string(value.get("type")),
        offset=offset,
        size=None if size == "dynamic" else _u64(size, f"{where}.size"),
        encryption=_string(value.get("encryption")),
        sector_size=_number(value.get("sector_size"), f"{where}.sector_size"),
    )


def _digest(index: int, value: dict[str, Any]) -> LuksDigest:
    return LuksDigest(
        id=index,
        type=_string(value.get("type")),
        hash=_string(value.get("hash")),
        keyslots=_ids(value.get("keyslots"), f"digests.{index}.keyslots", LUKS2_KEYSLOTS_MAX),
        segments=_ids(value.get("segments"), f"digests.{index}.segments", LUKS2_SEGMENT_MAX),
    )


def _config(metadata: dict[str, Any]) -> LuksConfig:
    config = _object(metadata.get("config"), "config")
    json_size = _u64(config.get("json_size"), "config.json_size")
    if json_size is None:
        raise BadField(BAD_HEADER, "config.json_size", None, "the JSON area's size, a decimal string")
    requirements = _optional_object(config.get("requirements"))
    return LuksConfig(
        json_size=json_size,
        keyslots_size=_u64(config.get("keyslots_size"), "config.keyslots_size"),
        flags=_strings(config.get("flags")),
        requirements=_strings(requirements.get("mandatory")),
    )


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadField(BAD_HEADER, where, show(value), "a JSON object")
    return value


def _optional_object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _u64(value: object, where: str) -> int | None:
    """A LUKS2 uint64: a decimal string (the spec), or a plain number (tolerated)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= len(str(UINT64_MAX)):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise BadField(BAD_HEADER, where, show(value), "a uint64 as a decimal string")
    if not 0 <= number <= UINT64_MAX:
        raise BadField(BAD_HEADER, where, show(value), "a uint64 as a decimal string")
    return number


def _number(value: object, where: str) -> int | None:
    """A JSON number field (key_size, sector_size, iterations): an integer in uint32 range."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return value
    raise BadField(BAD_HEADER, where, show(value), "an integer from 0 to 4294967295")


def _string(value: object) -> str | None:
    return value[:JSON_STRING_MAX] if isinstance(value, str) else None


def _strings(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item[:JSON_STRING_MAX] for item in value[:JSON_LIST_MAX] if isinstance(item, str)]


def _ids(value: object, where: str, limit: int) -> list[int]:
    if not isinstance(value, list):
        return []
    if len(value) > limit:
        raise BadField(BAD_HEADER, where, f"{len(value)} entries", f"at most {limit}")
    return sorted(
        {
            int(item)
            for item in value
            if isinstance(item, str) and item.isascii() and item.isdigit() and len(item) <= len(str(limit))
        }
    )


def show(value: object) -> str:
    """A hostile value, short enough for a message."""
    text = repr(value)
    return text if len(text) <= 64 else f"{text[:61]}..."
