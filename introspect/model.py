"""Pydantic models shared by every format: findings, severities, verdicts, geometry.

The Report itself lives in `introspect.report`, because its `details` field is validated by every
format's details model (the one its `format` names) and those models import from here.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Severity(StrEnum):
    """What a finding does to the verdict: `reject` rejects, `warn` and `info` only inform."""

    REJECT = "reject"
    WARN = "warn"
    INFO = "info"


class Verdict(StrEnum):
    """`ok`: parsed and safe. `rejected`: parsed, with a reject finding. `error`: could not be parsed."""

    OK = "ok"
    REJECTED = "rejected"
    ERROR = "error"


class Frozen(BaseModel):
    """Base of every output model: immutable, and unknown fields are a bug, not extra data."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Finding(Frozen):
    """One rule that fired: a stable code, its severity under the policy, and what to do about it."""

    code: str
    severity: Severity
    message: str


class Geometry(Frozen):
    """Cylinders/heads/sectors as the image states them (VMDK ddb.geometry, VHD CHS, VDI LCHS)."""

    cylinders: int
    heads: int
    sectors: int


class Firmware(Frozen):
    """Which firmware the image can boot with, and the evidence for each (a GPT EFI System
    Partition, an El Torito EFI entry, a BIOS boot partition, MBR boot code...)."""

    bios: bool
    uefi: bool
    evidence: list[str]

    @property
    def hw_firmware_type(self) -> str | None:
        """Nova's word, only when the evidence points one way: both or neither means say nothing."""
        if self.uefi and not self.bios:
            return "uefi"
        if self.bios and not self.uefi:
            return "bios"
        return None
