"""The errors of inspection, as one small tree.

    IntrospectError
     ├── ImageError              the image is bad; inspect() turns it into an `error` verdict
     │    ├── TruncatedImage     a structure runs past the end of the file
     │    ├── BadField           a field holds a value the spec (or our clamp) does not allow
     │    ├── BudgetExceeded     reading on would cost more than the inspection's byte/read budget
     │    └── BytesNotKept       the source cannot give those bytes again (a stream that passed them)
     ├── SourceError             the bytes could not be read (a disk, a network): nothing is known
     │                           of the image, so inspect() lets it through for the caller to retry
     └── UsageError              the caller asked for something we cannot do (no such file, bad argument)

Anything else that escapes a parser is our bug. `inspect()` still turns it into an `error` verdict
with the code `introspect.internal_error`, so that one image never stops a batch; tests make sure
no fixture, hostile or fuzzed, ever gets there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from introspect.safety import Rule


class IntrospectError(Exception):
    """Base of every error this library raises on purpose."""


class SourceError(IntrospectError):
    """A ByteSource could not deliver bytes for a reason outside the image (I/O error, dropped
    connection, a server's 5xx). Sources raise it (or a subclass); `inspect()` re-raises it, as
    it does OSError, instead of blaming the image."""


class UsageError(IntrospectError):
    """The caller misused the library: a path that does not exist, an unknown format name."""


class ImageError(IntrospectError):
    """The image is bad. `rule` names the finding it becomes; the rest says where and why."""

    def __init__(
        self,
        rule: Rule,
        message: str,
        *,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.offset = offset
        self.field = field

    def __str__(self) -> str:
        where = f" (at offset {self.offset})" if self.offset is not None else ""
        return f"{self.message}{where}"


class TruncatedImage(ImageError):
    """`what` needs bytes up to `end`, but the file stops at `size`."""

    def __init__(self, what: str, *, offset: int, length: int, size: int) -> None:
        from introspect.safety import TRUNCATED

        self.end = offset + length
        self.size = size
        super().__init__(
            TRUNCATED,
            f"the {what} needs bytes {offset}..{offset + length} but the file ends at {size}: "
            "the image was cut short; upload it again",
            offset=offset,
            field=what,
        )


class BadField(ImageError):
    """A field's value is outside what the spec allows (or what we accept before allocating)."""

    def __init__(
        self,
        rule: Rule,
        field: str,
        actual: object,
        expected: str,
        *,
        offset: int | None = None,
        advice: str = "",
    ) -> None:
        self.actual = actual
        self.expected = expected
        message = f"{field} is {actual!r}, expected {expected}"
        if advice:
            message = f"{message}: {advice}"
        super().__init__(rule, message, offset=offset, field=field)


class BudgetExceeded(ImageError):
    """The image asks us to read more than this inspection may."""

    def __init__(self, what: str, *, limit: str) -> None:
        from introspect.safety import READ_BUDGET

        super().__init__(
            READ_BUDGET,
            f"reading the {what} would exceed the inspection budget ({limit}); "
            "a well-formed image never needs this much, so the file is treated as hostile",
            field=what,
        )


class BytesNotKept(ImageError):
    """Bytes the source no longer holds: a stream passed them without keeping them. A parser that
    reads them only to check something it does not need for the facts (grain tables for a cut
    image) may let the check go; one that needs them lets the error make the Report partial."""
