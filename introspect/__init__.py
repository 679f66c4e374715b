"""introspect: read the metadata a VM disk image carries about itself, safely, in a few small reads.

>>> import introspect
>>> report = introspect.inspect("disk.vmdk")
>>> report.properties["vmware_adaptertype"]
'lsiLogic'

The names below are imported when first used (PEP 562): `import introspect.cli` for
`introspect --help` need not build every format's models, and `introspect.inspect` costs its
imports once, on first use, as it always did.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from introspect.errors import (
        BadField,
        BudgetExceeded,
        ImageError,
        IntrospectError,
        SourceError,
        TruncatedImage,
        UsageError,
    )
    from introspect.formats import satisfies
    from introspect.inspector import inspect
    from introspect.model import Finding, Geometry, Severity, Verdict
    from introspect.report import INSPECTOR_VERSION, Report
    from introspect.safety import Policy
    from introspect.sources import Budget, ByteSource, BytesSource, FileSource, Reader

#: The distribution's name on PyPI (`introspect` there is an unrelated project); the import
#: package and the command are `introspect`.
DISTRIBUTION = "introspect-images"

#: Each public name -> the module that defines it.
_HOMES = {
    **dict.fromkeys(
        (
            "BadField",
            "BudgetExceeded",
            "ImageError",
            "IntrospectError",
            "SourceError",
            "TruncatedImage",
            "UsageError",
        ),
        "introspect.errors",
    ),
    "satisfies": "introspect.formats",
    "inspect": "introspect.inspector",
    **dict.fromkeys(("Finding", "Geometry", "Severity", "Verdict"), "introspect.model"),
    **dict.fromkeys(("INSPECTOR_VERSION", "Report"), "introspect.report"),
    "Policy": "introspect.safety",
    **dict.fromkeys(("Budget", "ByteSource", "BytesSource", "FileSource", "Reader"), "introspect.sources"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'introspect' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # once: later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "DISTRIBUTION",
    "INSPECTOR_VERSION",
    "BadField",
    "Budget",
    "BudgetExceeded",
    "ByteSource",
    "BytesSource",
    "FileSource",
    "Finding",
    "Geometry",
    "ImageError",
    "IntrospectError",
    "Policy",
    "Reader",
    "Report",
    "Severity",
    "SourceError",
    "TruncatedImage",
    "UsageError",
    "Verdict",
    "inspect",
    "satisfies",
]
