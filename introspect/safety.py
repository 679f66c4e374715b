"""Safety rules: every finding has a registered rule with a stable code and a default severity.

Format modules declare their rules at import time with `rule(...)` and raise or return findings
made from them; the rules that hold for every image (truncation, polyglots, declared-format
mismatch, virtual size bounds...) are declared here. A `Policy` can move any code to another
severity, and a report-only policy records findings without rejecting.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from introspect.model import Finding, Frozen, Severity, Verdict

RULES: dict[str, Rule] = {}


class Rule(NamedTuple):
    """A named check. `summary` says what fired, for `introspect rules` and the README.
    `names_files`: the image names (or may name) a file outside itself, which qemu-img would open;
    a safety fact that no policy changes, so it alone decides whether qemu-img may look.
    `about`: the properties whose value the finding questions; when an outer layer states them
    instead (an OVF's controller over a VMDK's `ddb.adapterType`), the question is settled and the
    finding is left to the member's own Report."""

    code: str
    severity: Severity
    summary: str
    names_files: bool = False
    about: frozenset[str] = frozenset()

    def finding(self, message: str) -> Finding:
        return Finding(code=self.code, severity=self.severity, message=message)


def rule(
    code: str, severity: Severity, summary: str, *, names_files: bool = False, about: Iterable[str] = ()
) -> Rule:
    """Declare and register a rule; a code can be declared only once."""
    if code in RULES:
        raise ValueError(f"rule {code!r} is declared twice")
    declared = Rule(code, severity, summary, names_files, frozenset(about))
    RULES[code] = declared
    return declared


# Rules that hold for every image. Format-specific rules live beside their parser.
EMPTY = rule("image.empty", Severity.REJECT, "the file is empty")
TRUNCATED = rule("image.truncated", Severity.REJECT, "a structure runs past the end of the file")
READ_BUDGET = rule("image.read_budget", Severity.REJECT, "parsing would exceed the read budget")
POLYGLOT = rule("image.polyglot", Severity.REJECT, "the file is valid as two or more formats")
FORMAT_MISMATCH = rule(
    "image.format_mismatch", Severity.REJECT, "the declared disk_format differs from the content"
)
CONTAINER_MISMATCH = rule(
    "image.container_mismatch", Severity.REJECT, "the declared container_format differs from the content"
)
VIRTUAL_SIZE_ZERO = rule("image.virtual_size_zero", Severity.REJECT, "the virtual size is zero")
VIRTUAL_SIZE_LIMIT = rule(
    "image.virtual_size_limit", Severity.REJECT, "the virtual size is beyond the policy's limit"
)
NOT_A_DISK = rule(
    "raw.not_a_disk_image", Severity.REJECT, "libmagic names the content as something other than a disk"
)
INTERNAL_ERROR = rule(
    "introspect.internal_error", Severity.REJECT, "a bug in introspect; the image could not be judged"
)
QEMU_DISAGREES = rule(
    "qemu.disagrees", Severity.REJECT, "qemu-img info reads the image differently from introspect"
)
QEMU_SKIPPED = rule("qemu.skipped", Severity.INFO, "the cross-check with qemu-img was not run")
QEMU_FAILED = rule("qemu.failed", Severity.WARN, "qemu-img info could not read the image")

# The guest pass (introspect.guest): what it could not read. A guest fact alone never rejects an
# image, so every guest rule is info or warn by default; a policy may promote any of them.
GUEST_BUDGET = rule(
    "guest.budget", Severity.WARN, "the guest pass stopped at its read budget; facts may be incomplete"
)
GUEST_PARTIAL = rule(
    "guest.partial", Severity.INFO, "the guest's bytes lie past what a stream or a compressed head kept"
)
GUEST_ENCRYPTED = rule("guest.encrypted", Severity.INFO, "the guest's disk is encrypted: no guest facts")
GUEST_BACKING_MISSING = rule(
    "guest.backing_missing",
    Severity.INFO,
    "unallocated ranges belong to a backing file not read; facts may be incomplete",
)
GUEST_NO_VIEW = rule(
    "guest.no_view", Severity.INFO, "the guest's disk cannot be read through this image alone"
)
GUEST_UNREADABLE = rule(
    "guest.unreadable", Severity.WARN, "a volume or filesystem of the guest could not be read"
)
GUEST_LOOP = rule("guest.loop", Severity.WARN, "a loop in the guest's directories, extents or links")
GUEST_UNSUPPORTED_FS = rule("guest.unsupported_fs", Severity.INFO, "a filesystem introspect does not read")
GUEST_VOLUME_CUT = rule(
    "guest.volume_cut", Severity.WARN, "a partition runs past the end of the guest's disk, or begins after it"
)
GUEST_UNSUPPORTED_VOLUME = rule(
    "guest.unsupported_volume", Severity.INFO, "a volume named but not read (striped, mirrored or thin LVs)"
)
GUEST_NOT_READ = rule("guest.not_read", Severity.INFO, "a file named but not read (an NTFS compressed file)")
GUEST_MULTIPLE_ROOTS = rule(
    "guest.multiple_roots", Severity.INFO, "several operating systems: no OS property is written"
)
GUEST_INTERNAL_ERROR = rule(
    "guest.internal_error", Severity.WARN, "a bug in introspect's guest pass; the header facts stand"
)

# The services that inspect images for a catalog (workers/pipeline.py): how an inspection can end
# there besides the image's own findings. Declared here, with the rest, so that every reader of a
# policy (`introspect inspect --policy`, the workers, Glance's import plugin) knows every code a
# policy may name, and `introspect rules` lists them.
WORKER_LOST = rule(
    "pipeline.worker_lost", Severity.REJECT, "inspecting the image killed the worker on every delivery"
)
VIRTUAL_SIZE_CHANGED = rule(
    "pipeline.virtual_size_changed",
    Severity.REJECT,
    "the content's virtual size differs from the one the catalog records",
)
DATA_MISSING = rule("pipeline.data_missing", Severity.REJECT, "the image's data cannot be read")
STORE_UNAVAILABLE = rule(
    "pipeline.store_unavailable", Severity.REJECT, "the image's store kept failing through every retry"
)
TIME_LIMIT = rule("pipeline.time_limit", Severity.REJECT, "the inspection ran out of time")
PIPELINE_INTERNAL_ERROR = rule(
    "pipeline.internal_error", Severity.REJECT, "the inspection stopped on an unexpected exception"
)

DEFAULT_VMDK_CREATE_TYPES = frozenset({"monolithicSparse", "streamOptimized"})
TIB = 1 << 40


class Policy(Frozen):
    """What the operator decided. Severities can be overridden by exact code or glob (`vmdk.*`)."""

    severity: dict[str, Severity] = Field(default_factory=dict)
    report_only: bool = False
    vmdk_create_types: frozenset[str] = DEFAULT_VMDK_CREATE_TYPES
    max_virtual_size: int = 64 * TIB
    #: Check an OVA's manifest digests: reads every file it lists once (`introspect inspect
    #: --verify-manifest`); otherwise the manifest is parsed and recorded, not checked.
    verify_manifest: bool = False
    #: Write os_distro from the guest's own files. False on a VMware cloud: Nova's VMware driver
    #: hands os_distro to vSphere as the guest id (nova/virt/vmwareapi/images.py), where a Linux
    #: distribution's word is no guest id; os_type, os_version and introspect_os_id are still written.
    guest_os_distro: bool = True

    def __init__(self, /, **data: Any) -> None:
        """An operator's decision, written in code: validated, as a policy file is (output models
        are built unvalidated: see `Frozen`)."""
        BaseModel.__init__(self, **data)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # (see Frozen.__init__)

    def severity_of(self, finding: Finding) -> Severity:
        if finding.code in self.severity:
            return self.severity[finding.code]
        for pattern, severity in self.severity.items():
            if fnmatch.fnmatchcase(finding.code, pattern):
                return severity
        return finding.severity

    def apply(self, findings: Iterable[Finding]) -> list[Finding]:
        """The findings with their severities under this policy, each code once, in order."""
        seen: set[tuple[str, str]] = set()
        applied = []
        for finding in findings:
            key = (finding.code, finding.message)
            if key in seen:
                continue
            seen.add(key)
            severity = self.severity_of(finding)
            applied.append(
                finding if severity == finding.severity else finding.model_copy(update={"severity": severity})
            )
        return applied

    def verdict(self, findings: Iterable[Finding], *, parsed: bool) -> Verdict:
        if not parsed:
            return Verdict.ERROR
        if not self.report_only and any(f.severity == Severity.REJECT for f in findings):
            return Verdict.REJECTED
        return Verdict.OK


DEFAULT_POLICY = Policy.model_construct()  # its own defaults: nothing to validate
