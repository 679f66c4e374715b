"""The decoders every format shares, and the binary size units.

Each decoder is lenient: a hostile byte becomes U+FFFD, never an exception, because its caller has
already capped the field's size (a fixed-size field, or a length clamped to a named maximum).
"""

from __future__ import annotations

import uuid
from typing import Literal

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


def guid(raw: bytes) -> str:
    """A Microsoft GUID (Data1..Data3 little-endian, Data4 as bytes), as GPT, VHDX and VDI (RTUUID)
    store it, in canonical lowercase form."""
    return str(uuid.UUID(bytes_le=raw))


def uuid_be(raw: bytes) -> str:
    """A UUID stored in network byte order (RFC 4122), as VHD and UDIF store it."""
    return str(uuid.UUID(bytes=raw))


def c_string(raw: bytes, encoding: str = "utf-8") -> str:
    """A NUL-terminated string in a fixed-size field: the bytes up to the first NUL (all of them
    when there is none), as qemu and C readers copy it."""
    return raw.split(b"\0", 1)[0].decode(encoding, errors="replace")


def utf16_c_string(raw: bytes, byteorder: Literal["little", "big"]) -> str:
    """A UTF-16 name up to its first NUL character (VHDX and GPT: little-endian; VHD: big-endian)."""
    encoding = "utf-16-le" if byteorder == "little" else "utf-16-be"
    return raw.decode(encoding, errors="replace").split("\0", 1)[0]


def padded_text(raw: bytes, encoding: str = "ascii", padding: str = "\0") -> str:
    """Text filling its field, padded at the end with the `padding` characters (VHD's NULs,
    ECMA-119's spaces)."""
    return raw.decode(encoding, errors="replace").rstrip(padding)


#: Zeros that a window of bytes is compared with (one memcmp) by `end_of_data`.
_ZEROS = bytes(4 * KIB)


def end_of_data(data: bytes) -> int:
    """`len(data.rstrip(b"\\0"))`: where the data ends before trailing zero bytes. Mapping tables and
    refcount blocks are mostly zeros after their last entry; 4 KiB windows are compared with zeros
    from the end, and the last one that is not is measured in one big-integer conversion: a few
    µs for a 64 KiB table, where `rstrip` tests each byte (~100 µs)."""
    end = len(data)
    while end:
        start = max(0, end - len(_ZEROS))
        window = data[start:end]
        if window != _ZEROS[: end - start]:
            return start + (int.from_bytes(window, "little").bit_length() + 7) // 8
        end = start
    return 0
