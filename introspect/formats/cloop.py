"""Compressed loopback (cloop) images, version 2.0, as `create_compressed_fs` (cloop-utils) writes them.

Spec: cloop's compressed_loop.h (the V2.0 layout qemu reads): a shell-script preamble padded to
CLOOP_HEADROOM (128) bytes, then `struct cloop_head` (big-endian block_size and num_blocks), then
num_blocks + 1 big-endian 64-bit offsets of the zlib-compressed blocks, then the blocks. qemu's
block/cloop.c (`cloop_open()`) adds the limits named below; the image is judged as qemu would
judge it. Only the header and the last offset are read: the offsets table itself is not.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from introspect.decode import MIB
from introspect.errors import BadField, TruncatedImage
from introspect.formats.base import Format, Head, Inspection
from introspect.model import Frozen, Severity
from introspect.properties import header_properties
from introspect.safety import Policy, rule
from introspect.sources import Reader
from introspect.structure import BigEndianStructure, u32, u64

BAD_HEADER = rule("cloop.bad_header", Severity.REJECT, "a cloop header field holds a value qemu refuses")
UNSUPPORTED_VERSION = rule(
    "cloop.unsupported_version", Severity.REJECT, "the cloop image is not version 2.0, which qemu reads"
)

CONVERT = "qemu cannot read such an image; upload the uncompressed ISO, or convert it to qcow2"

#: CLOOP_HEADROOM: the preamble, a shell script that mounts the image, padded with NULs.
PREAMBLE_SIZE = 128
#: How the preamble names its format version: "#V<major>.<minor> Format". qemu's cloop_probe()
#: wants the whole V2.0 script (the mount line too), but with `-f cloop` it opens any preamble.
VERSION_LINE = re.compile(rb"#!/bin/sh\n#V(\d{1,3})\.(\d{1,3}) Format\n")
SUPPORTED_VERSION = (2, 0)
SECTOR_SIZE = 512
#: qemu: MAX_BLOCK_SIZE, the largest uncompressed block it allocates.
MAX_BLOCK_SIZE = 64 * MIB


class CloopHead(BigEndianStructure):
    """`struct cloop_head` (compressed_loop.h), right after the preamble."""

    OFFSET: ClassVar[int] = PREAMBLE_SIZE

    block_size: int = u32()
    num_blocks: int = u32()


class BlockOffset(BigEndianStructure):
    """One entry of the offsets table: a 64-bit byte offset; there are num_blocks + 1 of them."""

    offset: int = u64()


OFFSET_SIZE = BlockOffset.SIZE
#: qemu: (num_blocks + 1) * 8 must fit in 32 bits, and "Prevent ridiculous offsets_size": 512 MiB.
MAX_OFFSETS_SIZE = 512 * MIB
MAX_BLOCKS = min((2**32 - 1 - 1) // OFFSET_SIZE, MAX_OFFSETS_SIZE // OFFSET_SIZE - 1)
#: The offsets table follows the head.
OFFSETS_START = CloopHead.OFFSET + CloopHead.SIZE


class CloopDetails(Frozen):
    """A cloop V2.0 header, as the image states it."""

    format: Literal["cloop"] = "cloop"
    version: int = Field(description="major format version from the preamble (qemu reads 2)")
    block_size: int = Field(description="uncompressed bytes per block")
    n_blocks: int = Field(description="blocks in the image (num_blocks)")
    data_end: int = Field(description="end of the last compressed block (the last offset)")


def probe(head: Head) -> bool:
    return VERSION_LINE.match(head.data, 0, PREAMBLE_SIZE) is not None


def inspect(reader: Reader, policy: Policy) -> Inspection[CloopDetails]:
    data = reader.read(0, OFFSETS_START + OFFSET_SIZE, "cloop header")
    version = _version(data)
    head = CloopHead.unpack(data)
    if head.block_size == 0 or head.block_size % SECTOR_SIZE or head.block_size > MAX_BLOCK_SIZE:
        raise BadField(
            BAD_HEADER,
            "block_size",
            head.block_size,
            f"a non-zero multiple of {SECTOR_SIZE} of at most {MAX_BLOCK_SIZE}",
            advice=CONVERT,
        )
    if head.num_blocks > MAX_BLOCKS:
        raise BadField(BAD_HEADER, "num_blocks", head.num_blocks, f"at most {MAX_BLOCKS}", advice=CONVERT)
    table_length = (head.num_blocks + 1) * OFFSET_SIZE
    if OFFSETS_START + table_length > reader.size:
        raise TruncatedImage(
            "cloop offsets table", offset=OFFSETS_START, length=table_length, size=reader.size
        )
    first = BlockOffset.unpack(data, OFFSETS_START).offset
    last_at = OFFSETS_START + head.num_blocks * OFFSET_SIZE
    last = BlockOffset.unpack(reader.read(last_at, OFFSET_SIZE, "cloop last block offset")).offset
    if last < first:
        raise BadField(
            BAD_HEADER,
            f"offsets[{head.num_blocks}]",
            last,
            f"at least offsets[0] ({first})",
            offset=last_at,
            advice=CONVERT,
        )
    if last > reader.size:
        raise TruncatedImage("cloop block data", offset=first, length=last - first, size=reader.size)
    details = CloopDetails(
        version=version, block_size=head.block_size, n_blocks=head.num_blocks, data_end=last
    )
    return Inspection(details, head.num_blocks * head.block_size)


def _version(data: bytes) -> int:
    """The preamble's format version; anything but 2.0 has another layout, which qemu misreads."""
    line = VERSION_LINE.match(data, 0, PREAMBLE_SIZE)
    if line is None:
        raise BadField(UNSUPPORTED_VERSION, "preamble", data[:32], "a cloop '#V2.0 Format' preamble")
    version = (int(line[1]), int(line[2]))
    if version != SUPPORTED_VERSION:
        raise BadField(
            UNSUPPORTED_VERSION,
            "preamble version",
            f"{version[0]}.{version[1]}",
            "2.0",
            advice="qemu reads only cloop V2.0 images: rebuild it with `create_compressed_fs` "
            "from cloop-utils, or upload the uncompressed ISO",
        )
    return version[0]


def properties(details: CloopDetails) -> dict[str, str]:
    """The preamble's major version and the uncompressed block size."""
    return header_properties(version=details.version, block_size=details.block_size)


FORMAT = Format(
    name="cloop",
    qemu_name="cloop",
    probe=probe,
    inspect=inspect,
    checks=None,
    no_checks_because="a cloop image names no other file and has no options to allow or refuse; "
    "its structural limits are enforced while parsing",
    details=CloopDetails,
    properties=properties,
)
