"""Untrusted text made safe to print. Image names, paths, property keys and values, and finding
messages come from images and users: printed as they are, an escape sequence would drive the
terminal (clear it, recolour it, move the cursor), a right-to-left override would reorder what
follows, and rich markup would be interpreted. `literal()` shows each such character as an escape
instead, so what is printed is what is there; rich callers also pass `markup=False` or `Text`."""

from __future__ import annotations

import unicodedata

#: Characters that change how the rest of a line reads: bidirectional embeddings, overrides and
#: isolates (Unicode TR9), and the zero-width and line/paragraph separators.
_REORDERING = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069\ufeff"
)


def literal(text: str) -> str:
    """`text` with every control, format and reordering character as a visible escape (`\\x1b`,
    `\\u202e`), as Python's repr() writes them (messages that quote a name with repr() stay as
    they are)."""
    if text.isprintable():
        return text  # the common case, in one C call
    out = []
    for char in text:
        if char in _REORDERING or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            code = ord(char)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
        else:
            out.append(char)
    return "".join(out)
