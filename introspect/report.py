"""The Report: what every interface prints and every catalog stores (see README, "The report")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from introspect.formats.bochs import BochsDetails
from introspect.formats.cloop import CloopDetails
from introspect.formats.dmg import DmgDetails
from introspect.formats.iso import IsoDetails
from introspect.formats.luks import LuksDetails
from introspect.formats.parallels import ParallelsDetails
from introspect.formats.qcow import QcowDetails
from introspect.formats.qcow2 import Qcow2Details
from introspect.formats.qed import QedDetails
from introspect.formats.raw import RawDetails
from introspect.formats.vdi import VdiDetails
from introspect.formats.vhd import VhdDetails
from introspect.formats.vhdx import VhdxDetails
from introspect.formats.vmdk import VmdkDetails
from introspect.model import Finding, Frozen, Verdict

#: Bumped whenever a parser or a property mapping changes what it reports, so that
#: `introspect rerun --inspector-older-than N` can find images inspected by older code.
INSPECTOR_VERSION = 1

Details = Annotated[
    Qcow2Details
    | QcowDetails
    | QedDetails
    | VmdkDetails
    | VhdDetails
    | VhdxDetails
    | VdiDetails
    | ParallelsDetails
    | LuksDetails
    | IsoDetails
    | BochsDetails
    | CloopDetails
    | DmgDetails
    | RawDetails,
    Field(discriminator="format"),
]


class Report(Frozen):
    """One image's inspection. `properties` is exactly what would be written to the catalog."""

    source: str = Field(description="the path, URL or name the bytes came from")
    format: str | None = Field(
        description="Glance's disk_format word (qcow2 vmdk vhd vhdx vdi raw iso ploop), else qemu-img's "
        "(qed luks qcow cloop dmg bochs); null when nothing could be named (an empty file)"
    )
    container_format: str = Field("bare", description="bare, ova, or the compression wrapper")
    size: int = Field(description="bytes in the file")
    virtual_size: int | None = Field(description="guest-visible disk size in bytes, as qemu-img reports it")
    verdict: Verdict
    findings: list[Finding]
    properties: dict[str, str]
    details: Details | None
    bytes_read: int
    reads: int
    inspector_version: str = str(INSPECTOR_VERSION)

    @property
    def ok(self) -> bool:
        return self.verdict == Verdict.OK
