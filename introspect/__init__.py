"""introspect: read the metadata a VM disk image carries about itself, safely, in a few small reads.

>>> import introspect
>>> report = introspect.inspect("disk.vmdk")
>>> report.properties["vmware_adaptertype"]
'lsiLogic'
"""

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

__all__ = [
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
