"""LUKS volumes made by qemu-img and cryptsetup (fixtures/make/luks.sh), judged against what
`cryptsetup luksDump` and `qemu-img info` recorded.

Hostile variants are made in tmp_path from real fixtures with the module's own structure
declarations; LUKS2 changes recompute the header checksum the way the LUKS2 spec defines it (and
cryptsetup then reads the result, which checks that definition against the real tool).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess

import pytest

import introspect
from introspect.formats import luks
from introspect.sources import HEAD_SIZE, TAIL_SIZE, Budget
from introspect.structure import pack
from tests.conftest import fixture_group
from tests.tools import qemu_info, recorded, rewrite

LUKS1 = [
    "qemu-aes-xts-7m.luks",
    "qemu-aes128-cbc-essiv-129m.luks",
    "qemu-twofish-1g3m.luks",
    "qemu-serpent-1t.luks",
    "cs-luks1.img",
    "cs-luks1-cbc.img",
]
LUKS2 = ["cs-luks2.img", "cs-luks2-label.img", "cs-luks2-1m-meta.img", "cs-luks2-argon.img"]


def header_findings(report):
    """The findings of the header pass: every readable LUKS image also says, with `guest.encrypted`,
    that its guest cannot be read without its key (asserted on its own below)."""
    return [f for f in report.findings if f.code != "guest.encrypted"]


@pytest.mark.parametrize("name", LUKS1 + LUKS2)
def test_every_luks_image_says_its_guest_is_encrypted(name):
    report = introspect.inspect(fixture_group("luks") / name)
    assert [f.code for f in report.findings if f.code.startswith("guest.")] == ["guest.encrypted"]
    assert report.guest is not None and report.guest.systems == [] and report.guest.reads == 0


@pytest.fixture
def group():
    return fixture_group("luks")


def _dump(image):
    """The recorded `cryptsetup luksDump` text: its unindented "Name: value" lines, and the
    state of each LUKS1 key slot."""
    text = recorded(image, "luksDump.txt")
    fields = dict(re.findall(r"^([A-Za-z][\w ]*?):\s*(.*?)\s*$", text, re.MULTILINE))
    slots = {int(n): state for n, state in re.findall(r"^Key Slot (\d+): (\w+)", text, re.MULTILINE)}
    return fields, slots


def _tool(*argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, done.stdout + done.stderr


#: Every header and key slot area the tests touch lies in the first 4 MiB of a fixture.
METADATA = 4 * 1024 * 1024


def _copy(group, tmp_path, name):
    """A sparse copy of a fixture: its first METADATA bytes, then a hole up to its full size (the
    encrypted data is never read, and copying it all would make the tests slow)."""
    source = group / name
    image = tmp_path / name
    with source.open("rb") as original, image.open("wb") as copy:
        copy.write(original.read(METADATA))
        copy.truncate(source.stat().st_size)
    return image


def _edit(image, length, change):
    """Apply change(bytearray) to the first `length` bytes of the image, in place."""
    with image.open("r+b") as file:
        data = bytearray(file.read(length))
        change(data)
        file.seek(0)
        file.write(data)


def _rewrite_luks2(image, *, primary_only=False, checksum=True, json_change=None, **fields):
    """Change binary header fields and/or the JSON of both LUKS2 copies (or the primary only),
    recomputing each copy's checksum as the spec says: over hdr_size bytes with csum zeroed."""
    with image.open("rb") as file:
        size = luks.Luks2BinaryHeader.unpack(file.read(luks.Luks2BinaryHeader.SIZE)).hdr_size

    def change(data):
        for start in (0,) if primary_only else (0, size):
            _rewrite_copy(data, start, size, checksum, json_change, fields)

    _edit(image, 2 * size, change)


def _rewrite_copy(data, start, size, checksum, json_change, fields):
    """One copy of the LUKS2 header, at `start`, `size` bytes long."""
    area = bytearray(data[start : start + size])
    rewrite(area, luks.Luks2BinaryHeader, **fields)
    if json_change is not None:
        metadata = json.loads(area[luks.LUKS2_HDR_BIN_LEN :].split(b"\0", 1)[0])
        json_change(metadata)
        text = json.dumps(metadata).encode()
        area[luks.LUKS2_HDR_BIN_LEN :] = text.ljust(size - luks.LUKS2_HDR_BIN_LEN, b"\0")
    if checksum:
        rewrite(area, luks.Luks2BinaryHeader, csum=bytes(64))
        digest = hashlib.sha256(bytes(area)).digest()
        rewrite(area, luks.Luks2BinaryHeader, csum=digest.ljust(64, b"\0"))
    data[start : start + size] = area


def _rewrite_luks1(image, slot_changes=None, **fields):
    def change(data):
        slots = luks.Luks1Header.unpack(data).slots()
        for index, slot_fields in (slot_changes or {}).items():
            slots[index] = dataclasses.replace(slots[index], **slot_fields)
        rewrite(data, luks.Luks1Header, key_slots=b"".join(map(pack, slots)), **fields)

    _edit(image, luks.Luks1Header.SIZE, change)


@pytest.mark.parametrize("name", LUKS1)
def test_luks1_matches_luksdump_and_qemu(group, name):
    image = group / name
    report = introspect.inspect(image)
    details = report.details
    fields, slots = _dump(image)
    assert report.format == "luks"
    assert report.verdict == "ok", header_findings(report)
    assert header_findings(report) == []
    assert details.version == int(fields["Version"]) == 1
    assert details.cipher_name == fields["Cipher name"]
    assert details.cipher_mode == fields["Cipher mode"]
    assert details.hash == fields["Hash spec"]
    assert details.payload_offset == int(fields["Payload offset"]) * 512
    assert details.key_bytes * 8 == int(fields["MK bits"])
    assert details.uuid == fields["UUID"]
    assert details.active_key_slots == [n for n, state in sorted(slots.items()) if state == "ENABLED"]
    info = qemu_info(image)
    data = info["format-specific"]["data"]
    assert report.virtual_size == info["virtual-size"]
    assert details.payload_offset == data["payload-offset"]
    assert details.uuid == data["uuid"]
    assert details.hash == data["hash-alg"]
    assert data["cipher-alg"].startswith(details.cipher_name)
    mode, ivgen = details.cipher_mode.split("-")[:2]
    assert (mode, ivgen.split(":")[0]) == (data["cipher-mode"], data["ivgen-alg"])
    assert details.active_key_slots == [n for n, slot in enumerate(data["slots"]) if slot["active"]]
    assert [slot.area_offset for slot in details.keyslots] == [slot["key-offset"] for slot in data["slots"]]
    assert report.reads <= 2
    assert report.bytes_read <= HEAD_SIZE + TAIL_SIZE


@pytest.mark.parametrize("name", LUKS2)
def test_luks2_matches_luksdump(group, name):
    image = group / name
    report = introspect.inspect(image)
    details = report.details
    fields, _ = _dump(image)
    metadata = json.loads(recorded(image, "luksDump.json"))
    segment = metadata["segments"]["0"]
    digest = metadata["digests"]["0"]
    assert details.version == int(fields["Version"]) == 2
    assert details.seqid == int(fields["Epoch"])
    assert details.header_size == int(fields["Metadata area"].split()[0])
    assert details.config.keyslots_size == int(fields["Keyslots area"].split()[0])
    assert details.uuid == fields["UUID"]
    assert details.label == (None if fields["Label"] == "(no label)" else fields["Label"])
    assert details.subsystem == (None if fields["Subsystem"] == "(no subsystem)" else fields["Subsystem"])
    assert f"{details.cipher_name}-{details.cipher_mode}" == segment["encryption"]
    assert details.payload_offset == int(segment["offset"])
    assert details.sector_size == segment["sector_size"]
    assert details.hash == digest["hash"]
    assert details.active_key_slots == sorted(int(n) for n in metadata["keyslots"])
    assert details.key_bytes == metadata["keyslots"][digest["keyslots"][0]]["key_size"]
    assert [s.kdf for s in details.keyslots] == [k["kdf"]["type"] for k in metadata["keyslots"].values()]
    assert segment["size"] == "dynamic"
    assert report.virtual_size == image.stat().st_size - int(segment["offset"])
    # qemu cannot open LUKS2, and the report says so without rejecting the volume.
    assert "LUKS version 2 is not supported" in recorded(image, "qemu-img.err")
    assert report.verdict == "ok"
    [finding] = header_findings(report)
    assert (finding.code, finding.severity) == ("luks.qemu_unsupported", "warn")
    assert "opens LUKS1 only" in finding.message
    assert report.reads <= 4
    secondary = luks.Luks2BinaryHeader.SIZE
    assert report.bytes_read <= HEAD_SIZE + TAIL_SIZE + details.header_size + secondary


def test_reads_do_not_depend_on_the_virtual_size(group):
    small = introspect.inspect(group / "qemu-aes-xts-7m.luks")
    big = introspect.inspect(group / "qemu-serpent-1t.luks")
    assert big.virtual_size > 100_000 * small.virtual_size
    assert (small.reads, small.bytes_read) == (big.reads, big.bytes_read)


def test_luks2_checksum_is_the_one_cryptsetup_verifies(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks2-label.img")
    _rewrite_luks2(image, label=b"relabelled by the test")
    status, said = _tool("cryptsetup", "luksDump", str(image))
    assert status == 0, said
    assert re.search(r"^Label:\s*relabelled by the test$", said, re.MULTILINE)
    report = introspect.inspect(image)
    assert report.details.label == "relabelled by the test"
    assert [f.code for f in header_findings(report)] == ["luks.qemu_unsupported"]


def test_luks2_primary_changed_without_its_checksum_is_rejected(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks2.img")
    _rewrite_luks2(image, primary_only=True, checksum=False, label=b"tampered")
    report = introspect.inspect(image)
    assert report.verdict == "rejected"
    codes = {f.code: f for f in header_findings(report)}
    assert codes["luks.header_checksum"].severity == "reject"
    assert "sha256 checksum does not match its contents" in codes["luks.header_checksum"].message
    assert "cryptsetup repair" in codes["luks.header_checksum"].message
    assert codes["luks.secondary_header"].message.startswith(
        f"the secondary LUKS2 header at {report.details.header_size} differs from the primary (label)"
    )


def test_luks2_detached_header_is_rejected_without_a_virtual_size(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks2.img")
    _rewrite_luks2(image, json_change=lambda m: m["segments"]["0"].update(offset="0"))
    report = introspect.inspect(image)
    assert report.verdict == "rejected"
    assert report.virtual_size is None
    segment = [f for f in header_findings(report) if f.code == "luks.segment"]
    assert len(segment) == 1
    assert "detached LUKS header" in segment[0].message


def test_luks2_reencryption_is_rejected(group, tmp_path):
    def reencrypting(metadata):
        metadata["segments"]["1"] = dict(metadata["segments"]["0"], type="linear")
        metadata["config"]["requirements"] = {"mandatory": ["online-reencrypt-v2"]}

    image = _copy(group, tmp_path, "cs-luks2.img")
    _rewrite_luks2(image, json_change=reencrypting)
    report = introspect.inspect(image)
    assert report.verdict == "rejected"
    assert report.virtual_size is None
    messages = [f.message for f in header_findings(report) if f.code == "luks.segment"]
    assert "mandatory requirements (online-reencrypt-v2)" in messages[0]
    assert "data segments are [crypt, linear]" in messages[1]
    assert report.details.config.requirements == ["online-reencrypt-v2"]


def test_luks2_without_key_slots_warns(group, tmp_path):
    def no_keys(metadata):
        metadata["keyslots"] = {}
        metadata["digests"]["0"]["keyslots"] = []

    image = _copy(group, tmp_path, "cs-luks2.img")
    _rewrite_luks2(image, json_change=no_keys)
    report = introspect.inspect(image)
    assert report.details.active_key_slots == []
    finding = next(f for f in header_findings(report) if f.code == "luks.no_key_slot")
    assert finding.severity == "warn"
    assert "cryptsetup luksAddKey" in finding.message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m["segments"]["0"].update(offset="-1"),
            "segments.0.offset is \"'-1'\", expected a uint64 as a decimal string",
        ),
        (
            lambda m: m["config"].update(json_size="4096"),
            "config.json_size is 4096, expected hdr_size - 4096 = 12288",
        ),
        (
            lambda m: m.update(keyslots={str(n): {} for n in range(33)}),
            "keyslots is '33 entries', expected at most 32",
        ),
        (
            lambda m: m.update(segments=[]),
            "segments is '[]', expected a JSON object",
        ),
    ],
)
def test_luks2_json_that_cryptsetup_refuses_is_a_bad_field(group, tmp_path, change, message):
    image = _copy(group, tmp_path, "cs-luks2.img")
    _rewrite_luks2(image, json_change=change)
    report = introspect.inspect(image)
    assert report.verdict == "error"
    [finding] = header_findings(report)
    assert (finding.code, finding.message) == ("luks.bad_header", message)


def test_luks2_json_area_without_its_nul_is_a_bad_field(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks2.img")
    size = introspect.inspect(image).details.header_size

    def spaces(data):
        data[luks.LUKS2_HDR_BIN_LEN : size] = b" " * (size - luks.LUKS2_HDR_BIN_LEN)

    _edit(image, size, spaces)
    [finding] = header_findings(introspect.inspect(image))
    assert finding.code == "luks.bad_header"
    assert finding.message == (
        "JSON area is '12288 bytes without a NUL', expected JSON text ending with a NUL inside the area "
        "(at offset 4096)"
    )


def test_luks2_json_that_does_not_parse_is_a_bad_field(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks2.img")

    def garbage(data):
        data[luks.LUKS2_HDR_BIN_LEN : luks.LUKS2_HDR_BIN_LEN + 4] = b"{{{\0"

    _edit(image, METADATA, garbage)
    [finding] = header_findings(introspect.inspect(image))
    assert finding.code == "luks.bad_header"
    assert finding.message.startswith("JSON area is \"'Expecting property name")
    assert finding.message.endswith("expected valid JSON (at offset 4096)")


def test_luks2_header_size_outside_the_spec_is_a_bad_field(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks2.img")
    _rewrite_luks2(image, primary_only=True, hdr_size=1 << 40)
    [finding] = header_findings(introspect.inspect(image))
    assert finding.code == "luks.bad_header"
    assert finding.message == (
        "hdr_size is 1099511627776, expected a power of two from 16 KiB to 4 MiB: "
        "the JSON area is not read past the spec's largest size (at offset 0)"
    )


def test_unknown_version_is_a_bad_field(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks1.img")
    _rewrite_luks1(image, version=3)
    [finding] = header_findings(introspect.inspect(image))
    assert finding.code == "luks.bad_header"
    assert finding.message == "version is 3, expected 1 or 2 (at offset 0)"


@pytest.mark.qemu
def test_luks1_without_enabled_key_slots_warns_and_qemu_still_reads_it(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks1.img")
    _rewrite_luks1(image, {0: {"active": luks.LUKS_KEY_DISABLED}, 5: {"active": luks.LUKS_KEY_DISABLED}})
    status, said = _tool("qemu-img", "info", "-f", "luks", "--output=json", str(image))
    assert status == 0, said
    assert not any(slot["active"] for slot in json.loads(said)["format-specific"]["data"]["slots"])
    report = introspect.inspect(image)
    assert report.details.active_key_slots == []
    assert report.verdict == "ok"
    assert [f.code for f in header_findings(report)] == ["luks.no_key_slot"]


@pytest.mark.qemu
def test_luks1_corrupt_key_slot_state_is_a_bad_field_as_qemu_refuses_it(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks1.img")
    _rewrite_luks1(image, {3: {"active": 0x1234}})
    status, said = _tool("qemu-img", "info", "-f", "luks", str(image))
    assert status != 0
    assert "Keyslot 3 state (active/disable) is corrupted" in said
    [finding] = header_findings(introspect.inspect(image))
    assert finding.code == "luks.bad_header"
    assert finding.message == (
        "key slot 3 active is '0x1234', expected 0x00ac71f3 (enabled) or 0x0000dead (disabled)"
    )


@pytest.mark.qemu
def test_luks1_overlapping_key_material_is_a_bad_field_as_qemu_refuses_it(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks1.img")
    first = luks.Luks1Header.unpack(image.read_bytes()).slots()[0]
    _rewrite_luks1(image, {1: {"key_material_offset": first.key_material_offset}})
    status, said = _tool("qemu-img", "info", "-f", "luks", str(image))
    assert status != 0
    assert "Keyslots 0 and 1 are overlapping in the header" in said
    [finding] = header_findings(introspect.inspect(image))
    assert finding.code == "luks.bad_header"
    assert finding.message.startswith(
        "key slot 1 key material is 'sectors 8..508', expected apart from key slot 0"
    )


@pytest.mark.qemu
def test_luks1_cipher_qemu_cannot_decrypt_is_a_warning(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks1.img")
    _rewrite_luks1(image, cipher_name=b"camellia".ljust(32, b"\0"))
    status, said = _tool("qemu-img", "info", "-f", "luks", str(image))
    assert status != 0
    assert "Algorithm 'camellia' with key size 32 bytes not supported" in said
    report = introspect.inspect(image)
    assert report.verdict == "ok"
    [finding] = header_findings(report)
    assert (finding.code, finding.severity) == ("luks.qemu_unsupported", "warn")
    assert "cipher camellia with a 256-bit key" in finding.message


@pytest.mark.qemu
def test_luks1_payload_past_the_end_of_the_file_is_truncation(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks1.img")
    with image.open("r+b") as file:
        file.truncate(1024 * 1024)
    status, said = _tool("qemu-img", "info", "-f", "luks", str(image))
    assert status != 0, said
    [finding] = header_findings(introspect.inspect(image))
    assert finding.code == "image.truncated"
    assert finding.message.startswith(
        "the LUKS1 encrypted payload needs bytes 2097152..2097152 but the file ends at 1048576"
    )


def test_luks1_payload_offset_zero_is_a_detached_header(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks1.img")
    _rewrite_luks1(image, payload_offset=0)
    report = introspect.inspect(image)
    assert report.verdict == "rejected"
    assert report.virtual_size is None
    [finding] = header_findings(report)
    assert finding.code == "luks.segment"
    assert "detached LUKS header" in finding.message


def test_luks1_string_without_nul_is_a_bad_field(group, tmp_path):
    image = _copy(group, tmp_path, "cs-luks1.img")
    _rewrite_luks1(image, hash_spec=b"x" * 32)
    [finding] = header_findings(introspect.inspect(image))
    assert finding.code == "luks.bad_header"
    assert finding.message.startswith("hash-spec is \"b'xxxxxxxx")
    assert finding.message.endswith("expected a NUL-terminated string of under 32 bytes (at offset 0)")


def test_luks2_header_larger_than_the_budget_allows_is_refused_before_it_is_read(group):
    image = group / "cs-luks2-1m-meta.img"
    report = introspect.inspect(image, budget=Budget(max_read_size=256 * 1024))
    assert report.verdict == "error"
    [finding] = header_findings(report)
    assert finding.code == "image.read_budget"
    assert finding.message == (
        "reading the LUKS2 header and JSON area would exceed the inspection budget "
        f"({1024 * 1024} bytes in one read, at most {256 * 1024}); a well-formed image never needs this "
        "much, so the file is treated as hostile"
    )
