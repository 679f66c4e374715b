"""LUKS1 and LUKS2 encrypted volumes.

LUKS1: "LUKS On-Disk Format Specification" (cryptsetup, version 1.2.3): the partition header
(phdr: magic, version, cipher-name, cipher-mode, hash-spec, payload-offset, key-bytes, mk-digest,
mk-digest-salt, mk-digest-iter, uuid) followed by 8 key slots (active, iterations, salt,
key-material-offset, stripes). Big-endian, 592 bytes.

LUKS2: "LUKS2 On-Disk Format Specification" (cryptsetup, version 1.1): a 4096-byte binary header
(magic, version, hdr_size, seqid, label, checksum_alg, salt, uuid, subsystem, hdr_offset, csum)
followed by the JSON area, hdr_size bytes in all; a secondary copy (magic "SKUL\\xba\\xbe") follows at
hdr_size. The checksum covers the whole hdr_size bytes with csum zeroed. The JSON names the
keyslots, tokens, segments (the encrypted data), digests and config.

qemu (crypto/block-luks.c, block/crypto.c) opens LUKS1 only, needs no key for `qemu-img info`,
and reports the file size minus the payload offset as the virtual size. Both headers sit in the
head for every size cryptsetup writes by default, so a parse usually costs no read of its own.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import fields, replace
from typing import ClassVar, Literal, NoReturn

from introspect.decode import c_string
from introspect.errors import BadField, ImageError, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.formats.luks2 import (
    BAD_HEADER,
    LUKS2_HDR_BIN_LEN,
    LUKS2_HDR_SIZES,
    LuksConfig,
    LuksDigest,
    LuksKeyslot,
    LuksSegment,
    read_metadata,
    show,
)
from introspect.model import Finding, Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import GUEST_ENCRYPTED, Policy, rule
from introspect.sources import Reader
from introspect.structure import BigEndianStructure, chars, pad, u16, u32, u64, unpack_array

HEADER_CHECKSUM = rule(
    "luks.header_checksum", Severity.REJECT, "the LUKS2 header checksum does not match its contents"
)
SECONDARY_HEADER = rule(
    "luks.secondary_header",
    Severity.WARN,
    "the LUKS2 secondary header is missing or differs from the primary",
)
NO_KEY_SLOT = rule("luks.no_key_slot", Severity.WARN, "no LUKS key slot is active: nothing can unlock it")
SEGMENT = rule(
    "luks.segment",
    Severity.REJECT,
    "the encrypted data is not one crypt segment in this file (detached header, reencryption, unknown type)",
)
QEMU_UNSUPPORTED = rule(
    "luks.qemu_unsupported",
    Severity.WARN,
    "qemu's luks driver cannot open this volume (LUKS2, or its cipher)",
)

#: Both versions start with this magic and a big-endian version number.
LUKS_MAGIC = b"LUKS\xba\xbe"
#: LUKS1: the sector the payload and key material offsets count in.
LUKS_SECTOR_SIZE = 512
#: LUKS1: key slot states and the anti-forensic stripe count every key slot uses.
LUKS_KEY_ENABLED = 0x00AC71F3
LUKS_KEY_DISABLED = 0x0000DEAD
LUKS_STRIPES = 4000
LUKS_NUMKEYS = 8

#: LUKS2: the secondary header's magic (the header sizes, which bound the JSON area, are in luks2.py).
LUKS2_MAGIC_2ND = b"SKUL\xba\xbe"
#: Binary header fields each copy has of its own; every other field must match between the copies
#: (magic and hdr_offset in the secondary are LUKS2_MAGIC_2ND and hdr_size).
LUKS2_PER_COPY = frozenset({"salt", "csum"})
#: Checksum algorithms we can verify (cryptsetup writes sha256).
CHECKSUM_ALGORITHMS = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})

#: What qemu's LUKS driver can decrypt (crypto/block-luks.c): ciphers with their key sizes in
#: bytes (doubled for xts), block modes, IV generators and hashes.
QEMU_CIPHER_KEY_BYTES = {"aes": {16, 24, 32}, "cast5": {16}, "serpent": {16, 24, 32}, "twofish": {16, 24, 32}}
QEMU_CIPHER_MODES = frozenset({"ecb", "cbc", "xts", "ctr"})
QEMU_IVGENS = frozenset({"plain", "plain64", "essiv"})
QEMU_HASHES = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160"})


class LuksPrefix(BigEndianStructure):
    """magic and version: the start of both the LUKS1 phdr and the LUKS2 binary header."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(6)
    version: int = u16()


class Luks1KeySlot(BigEndianStructure):
    """A LUKS1 key slot (LUKS1 spec, key slot layout)."""

    active: int = u32()
    iterations: int = u32()
    salt: bytes = chars(32)
    key_material_offset: int = u32()  # in sectors
    stripes: int = u32()


class Luks1Header(BigEndianStructure):
    """The LUKS1 partition header, phdr (LUKS1 spec), its 8 key slots kept as raw bytes."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(6)
    version: int = u16()
    cipher_name: bytes = chars(32)
    cipher_mode: bytes = chars(32)
    hash_spec: bytes = chars(32)
    payload_offset: int = u32()  # in sectors
    key_bytes: int = u32()
    mk_digest: bytes = chars(20)
    mk_digest_salt: bytes = chars(32)
    mk_digest_iter: int = u32()
    uuid: bytes = chars(40)
    key_slots: bytes = chars(LUKS_NUMKEYS * Luks1KeySlot.SIZE)

    def slots(self) -> list[Luks1KeySlot]:
        return unpack_array(Luks1KeySlot, self.key_slots, LUKS_NUMKEYS)


class Luks2BinaryHeader(BigEndianStructure):
    """The LUKS2 binary header (LUKS2 spec, "binary header"); zero padding follows to 4096 bytes."""

    OFFSET: ClassVar[int] = 0

    magic: bytes = chars(6)
    version: int = u16()
    hdr_size: int = u64()  # binary header + JSON area
    seqid: int = u64()
    label: bytes = chars(48)
    checksum_alg: bytes = chars(32)
    salt: bytes = chars(64)
    uuid: bytes = chars(40)
    subsystem: bytes = chars(48)
    hdr_offset: int = u64()  # where this copy is: 0 for the primary, hdr_size for the secondary
    padding: None = pad(184)
    csum: bytes = chars(64)


#: csum, which the checksum counts as zeros.
CSUM_OFFSET = Luks2BinaryHeader.offset_of("csum")
CSUM_SIZE = Luks2BinaryHeader.SIZE - CSUM_OFFSET


class LuksDetails(Frozen):
    """What a LUKS header states, without any key: cipher, layout and key slots (sizes in bytes)."""

    format: Literal["luks"] = "luks"
    version: int
    cipher_name: str | None
    cipher_mode: str | None
    hash: str | None  # LUKS1 hash-spec; LUKS2 the hash of the segment's digest
    payload_offset: int | None
    key_bytes: int | None
    uuid: str | None
    label: str | None  # LUKS2
    subsystem: str | None  # LUKS2
    header_size: int | None  # LUKS2 hdr_size
    seqid: int | None  # LUKS2
    checksum_alg: str | None  # LUKS2
    sector_size: int | None
    active_key_slots: list[int]
    keyslots: list[LuksKeyslot]
    segments: list[LuksSegment]
    digests: list[LuksDigest]
    config: LuksConfig | None


def probe(head: Head) -> bool:
    return head.data[: len(LUKS_MAGIC)] == LUKS_MAGIC


def inspect(reader: Reader, policy: Policy) -> Inspection[LuksDetails]:
    prefix = LuksPrefix.read(reader, "LUKS magic")
    if prefix.magic != LUKS_MAGIC:
        raise BadField(BAD_HEADER, "magic", prefix.magic, repr(LUKS_MAGIC), offset=0)
    if prefix.version == 1:
        return _luks1(reader)
    if prefix.version == 2:
        return _luks2(reader)
    raise BadField(BAD_HEADER, "version", prefix.version, "1 or 2", offset=0)


# LUKS1 -----------------------------------------------------------------------------------------


def _luks1(reader: Reader) -> Inspection[LuksDetails]:
    header = Luks1Header.read(reader, "LUKS1 header")
    cipher_name = _cstring(header.cipher_name, "cipher-name")
    cipher_mode = _cstring(header.cipher_mode, "cipher-mode")
    hash_spec = _cstring(header.hash_spec, "hash-spec")
    if header.key_bytes == 0:
        raise BadField(BAD_HEADER, "key-bytes", 0, "the volume key length, more than 0", offset=0)
    if header.mk_digest_iter == 0:
        raise BadField(BAD_HEADER, "mk-digest-iter", 0, "at least 1", offset=0)
    slots = header.slots()
    _check_luks1_slots(header, slots)
    keyslots = [
        LuksKeyslot(
            id=index,
            active=slot.active == LUKS_KEY_ENABLED,
            type=None,
            key_size=header.key_bytes,
            area_offset=slot.key_material_offset * LUKS_SECTOR_SIZE,
            area_size=None,
            encryption=None,
            kdf="pbkdf2",
            iterations=slot.iterations if slot.active == LUKS_KEY_ENABLED else None,
            stripes=slot.stripes,
        )
        for index, slot in enumerate(slots)
    ]
    payload = header.payload_offset * LUKS_SECTOR_SIZE
    details = LuksDetails(
        version=1,
        cipher_name=cipher_name,
        cipher_mode=cipher_mode,
        hash=hash_spec,
        payload_offset=payload,
        key_bytes=header.key_bytes,
        uuid=_uuid(c_string(header.uuid)),
        label=None,
        subsystem=None,
        header_size=None,
        seqid=None,
        checksum_alg=None,
        sector_size=LUKS_SECTOR_SIZE,
        active_key_slots=[slot.id for slot in keyslots if slot.active],
        keyslots=keyslots,
        segments=[],
        digests=[],
        config=None,
    )
    findings = [*_key_slot_findings(details), *_qemu_luks1_findings(details)]
    virtual_size = None
    if header.payload_offset == 0:
        findings.append(_detached())
    elif payload > reader.size:
        raise TruncatedImage("LUKS1 encrypted payload", offset=payload, length=0, size=reader.size)
    else:
        virtual_size = reader.size - payload
    return Inspection(details=details, virtual_size=virtual_size, findings=findings)


def _check_luks1_slots(header: Luks1Header, slots: list[Luks1KeySlot]) -> None:
    """Every slot is enabled or disabled, with its key material after the phdr, before the
    payload, and apart from every other slot's (what cryptsetup and qemu both refuse)."""
    first = -(-Luks1Header.SIZE // LUKS_SECTOR_SIZE)
    if 0 < header.payload_offset < first:
        raise BadField(
            BAD_HEADER,
            "payload-offset",
            header.payload_offset,
            f"at least {first} sectors, after the phdr",
            offset=0,
        )
    material = -(-header.key_bytes * LUKS_STRIPES // LUKS_SECTOR_SIZE)
    areas: list[tuple[int, int, int]] = []
    for index, slot in enumerate(slots):
        field = f"key slot {index}"
        if slot.active not in (LUKS_KEY_ENABLED, LUKS_KEY_DISABLED):
            raise BadField(
                BAD_HEADER,
                f"{field} active",
                hex(slot.active),
                f"{LUKS_KEY_ENABLED:#010x} (enabled) or {LUKS_KEY_DISABLED:#010x} (disabled)",
            )
        if slot.stripes != LUKS_STRIPES:
            raise BadField(BAD_HEADER, f"{field} stripes", slot.stripes, str(LUKS_STRIPES))
        if slot.active == LUKS_KEY_ENABLED and slot.iterations == 0:
            raise BadField(BAD_HEADER, f"{field} iterations", 0, "at least 1 for an enabled slot")
        start, end = slot.key_material_offset, slot.key_material_offset + material
        if start < first:
            raise BadField(
                BAD_HEADER, f"{field} key-material-offset", start, f"at least {first} sectors, after the phdr"
            )
        if header.payload_offset and end > header.payload_offset:
            raise BadField(
                BAD_HEADER,
                f"{field} key material end",
                end,
                f"at most payload-offset ({header.payload_offset} sectors)",
            )
        for other, other_start, other_end in areas:
            if start < other_end and other_start < end:
                raise BadField(
                    BAD_HEADER,
                    f"{field} key material",
                    f"sectors {start}..{end}",
                    f"apart from key slot {other}'s sectors {other_start}..{other_end}",
                )
        areas.append((index, start, end))


def _qemu_luks1_findings(details: LuksDetails) -> Iterator[Finding]:
    """What qemu's LUKS driver cannot decrypt: it would refuse to open the volume."""
    name, mode_spec, hash_spec = details.cipher_name or "", details.cipher_mode or "", details.hash or ""
    mode, _, ivgen_spec = mode_spec.partition("-")
    ivgen, _, ivhash = ivgen_spec.partition(":")
    key_bytes = (details.key_bytes or 0) // (2 if mode == "xts" else 1)
    reasons = []
    if key_bytes not in QEMU_CIPHER_KEY_BYTES.get(name, set()):
        reasons.append(f"cipher {name} with a {key_bytes * 8}-bit key")
    if mode not in QEMU_CIPHER_MODES or ivgen not in QEMU_IVGENS or (ivhash and ivhash not in QEMU_HASHES):
        reasons.append(f"cipher mode {mode_spec}")
    if hash_spec not in QEMU_HASHES:
        reasons.append(f"hash {hash_spec}")
    if reasons:
        yield QEMU_UNSUPPORTED.finding(
            f"qemu cannot decrypt this LUKS1 volume ({', '.join(reasons)}): attach it through dm-crypt, or "
            "re-encrypt it with `cryptsetup reencrypt --cipher aes-xts-plain64 --hash sha256`"
        )


# LUKS2 -----------------------------------------------------------------------------------------


def _luks2(reader: Reader) -> Inspection[LuksDetails]:
    header = Luks2BinaryHeader.read(reader, "LUKS2 binary header")
    if header.hdr_size not in LUKS2_HDR_SIZES:
        raise BadField(
            BAD_HEADER,
            "hdr_size",
            header.hdr_size,
            "a power of two from 16 KiB to 4 MiB",
            offset=0,
            advice="the JSON area is not read past the spec's largest size",
        )
    if header.hdr_offset != Luks2BinaryHeader.OFFSET:
        raise BadField(BAD_HEADER, "hdr_offset", header.hdr_offset, "0 in the primary header", offset=0)
    area = reader.read(Luks2BinaryHeader.OFFSET, header.hdr_size, "LUKS2 header and JSON area")
    findings = []
    checksum_alg = c_string(header.checksum_alg)
    if not _checksum_matches(header, area, checksum_alg):
        findings.append(
            HEADER_CHECKSUM.finding(
                f"the primary LUKS2 header's {checksum_alg} checksum does not match its contents: it was damaged "
                "or edited after cryptsetup wrote it; run `cryptsetup repair` (it restores the header from the "
                "secondary copy) or re-create the volume"
            )
        )
    findings.extend(_secondary_findings(reader, header))
    metadata = read_metadata(area[LUKS2_HDR_BIN_LEN:], header.hdr_size - LUKS2_HDR_BIN_LEN)
    keyslots, segments, digests, config = (
        metadata.keyslots,
        metadata.segments,
        metadata.digests,
        metadata.config,
    )
    if config.json_size != header.hdr_size - LUKS2_HDR_BIN_LEN:
        raise BadField(
            BAD_HEADER,
            "config.json_size",
            config.json_size,
            f"hdr_size - {LUKS2_HDR_BIN_LEN} = {header.hdr_size - LUKS2_HDR_BIN_LEN}",
        )
    segment = segments[0] if segments else None
    # The digest that unlocks the segment says the hash; one of its key slots the volume key size.
    digest = next((d for d in digests if segment and segment.id in d.segments), None)
    digest = digest or (digests[0] if digests else None)
    keyslot = next((k for k in keyslots if digest and k.id in digest.keyslots), None)
    keyslot = keyslot or (keyslots[0] if keyslots else None)
    cipher_name, _, cipher_mode = (segment.encryption or "").partition("-") if segment else ("", "", "")
    details = LuksDetails(
        version=2,
        cipher_name=cipher_name or None,
        cipher_mode=cipher_mode or None,
        hash=digest.hash if digest else None,
        payload_offset=segment.offset if segment else None,
        key_bytes=keyslot.key_size if keyslot else None,
        uuid=_uuid(c_string(header.uuid)),
        label=c_string(header.label) or None,
        subsystem=c_string(header.subsystem) or None,
        header_size=header.hdr_size,
        seqid=header.seqid,
        checksum_alg=checksum_alg,
        sector_size=segment.sector_size if segment else None,
        active_key_slots=[k.id for k in keyslots],
        keyslots=keyslots,
        segments=segments,
        digests=digests,
        config=config,
    )
    findings.extend(_key_slot_findings(details))
    findings.append(
        QEMU_UNSUPPORTED.finding(
            "qemu's luks driver opens LUKS1 only, so `qemu-img` and a qemu-attached disk cannot use this LUKS2 "
            "volume: attach it through dm-crypt, or convert it with `cryptsetup convert --type luks1` "
            "(possible when its key slots use pbkdf2)"
        )
    )
    virtual_size = _luks2_payload(reader, details, findings)
    return Inspection(details=details, virtual_size=virtual_size, findings=findings)


def _checksum_matches(header: Luks2BinaryHeader, area: bytes, algorithm: str) -> bool:
    """csum is the checksum_alg digest of the hdr_size bytes with csum itself zeroed."""
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadField(
            BAD_HEADER,
            "checksum_alg",
            algorithm,
            f"one of {', '.join(sorted(CHECKSUM_ALGORITHMS))}",
            offset=0,
        )
    digest = hashlib.new(algorithm)
    digest.update(area[:CSUM_OFFSET])
    digest.update(bytes(CSUM_SIZE))
    digest.update(area[CSUM_OFFSET + CSUM_SIZE :])
    computed = digest.digest()
    return header.csum[: len(computed)] == computed


def _secondary_findings(reader: Reader, primary: Luks2BinaryHeader) -> Iterator[Finding]:
    """The secondary binary header must be there and agree with the primary. Its checksum is not
    recomputed: that would read another hdr_size bytes."""
    raw = reader.read_upto(primary.hdr_size, Luks2BinaryHeader.SIZE, "LUKS2 secondary header")
    if len(raw) < Luks2BinaryHeader.SIZE:
        yield SECONDARY_HEADER.finding(
            f"the file ends before the secondary LUKS2 header at {primary.hdr_size}: the volume has no "
            "backup of its metadata; run `cryptsetup repair` or upload the whole volume"
        )
        return
    secondary = Luks2BinaryHeader.unpack(raw, 0)
    expected = replace(primary, magic=LUKS2_MAGIC_2ND, hdr_offset=primary.hdr_size)
    differ = [
        field.name
        for field in fields(Luks2BinaryHeader)
        if field.name not in LUKS2_PER_COPY
        and getattr(secondary, field.name) != getattr(expected, field.name)
    ]
    if differ:
        yield SECONDARY_HEADER.finding(
            f"the secondary LUKS2 header at {primary.hdr_size} differs from the primary "
            f"({', '.join(differ)}): cryptsetup may read either one; run `cryptsetup repair` and upload "
            "the volume again"
        )


def _luks2_payload(reader: Reader, details: LuksDetails, findings: list[Finding]) -> int | None:
    """The size of the one crypt segment, or None (with a finding) when there is no such thing."""
    config = details.config
    if config and config.requirements:
        findings.append(
            SEGMENT.finding(
                f"the volume has mandatory requirements ({', '.join(config.requirements)}), such as an "
                "unfinished reencryption: finish it with `cryptsetup reencrypt --resume-only` before uploading"
            )
        )
    if len(details.segments) != 1 or details.segments[0].type != "crypt":
        kinds = ", ".join(str(s.type) for s in details.segments) or "none"
        findings.append(
            SEGMENT.finding(
                f"the volume's data segments are [{kinds}], not one crypt segment: a reencryption is in progress "
                "or the layout is unknown; finish it with `cryptsetup reencrypt --resume-only` before uploading"
            )
        )
        return None
    segment = details.segments[0]
    keyslots_size = config.keyslots_size if config and config.keyslots_size else 0
    metadata_end = 2 * (details.header_size or 0) + keyslots_size
    if segment.offset == 0:
        findings.append(_detached())
        return None
    if segment.offset < metadata_end:
        raise BadField(
            BAD_HEADER,
            f"segments.{segment.id}.offset",
            segment.offset,
            f"at least {metadata_end}, after both headers and the keyslots area",
        )
    if segment.size is None:
        if segment.offset > reader.size:
            raise TruncatedImage("LUKS2 encrypted data", offset=segment.offset, length=0, size=reader.size)
        return reader.size - segment.offset
    if segment.offset + segment.size > reader.size:
        raise TruncatedImage(
            "LUKS2 encrypted data", offset=segment.offset, length=segment.size, size=reader.size
        )
    return segment.size


# Shared ----------------------------------------------------------------------------------------


def _key_slot_findings(details: LuksDetails) -> Iterator[Finding]:
    if not details.active_key_slots:
        yield NO_KEY_SLOT.finding(
            "no key slot is active, so no passphrase or key file can unlock the volume: add one with "
            "`cryptsetup luksAddKey --volume-key-file` from a volume key backup, or discard the image"
        )


def _detached() -> Finding:
    return SEGMENT.finding(
        "the encrypted data starts at offset 0: this is a detached LUKS header and the data lives on "
        "another device; upload the volume with its header attached "
        "(`cryptsetup luksFormat` without `--header`)"
    )


def _cstring(raw: bytes, field: str) -> str:
    """A LUKS1 string field: NUL-terminated within its size (qemu refuses it otherwise)."""
    if b"\0" not in raw:
        raise BadField(
            BAD_HEADER, field, show(raw), f"a NUL-terminated string of under {len(raw)} bytes", offset=0
        )
    return c_string(raw)


def _uuid(text: str) -> str | None:
    """The canonical form of the header's UUID text; None when it is not a UUID."""
    try:
        return str(uuid.UUID(text)) if text else None
    except ValueError:
        return None


def properties(details: LuksDetails) -> dict[str, str]:
    """The LUKS version, and that the disk is encrypted (with LUKS itself)."""
    return {**header_properties(version=details.version), "introspect_encryption": "luks"}


def guest_view(reader: Reader, details: LuksDetails) -> NoReturn:
    """The guest's bytes are the payload, encrypted: nothing can be read of them without a key,
    and introspect is never given one."""
    cipher = "-".join(part for part in (details.cipher_name, details.cipher_mode) if part) or "a cipher"
    raise ImageError(
        GUEST_ENCRYPTED,
        f"the disk is a LUKS{details.version} volume encrypted with {cipher}: its contents cannot be read "
        "without its key, so nothing is known of the guest (set os_* properties by hand)",
    )


FORMAT = Format(
    name="luks",
    qemu_name="luks",
    probe=probe,
    inspect=inspect,
    checks=None,
    no_checks_because="a LUKS header names no other file (a detached header is a finding of its own)",
    details=LuksDetails,
    properties=properties,
    guest=guest_view,
)
