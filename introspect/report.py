"""The Report: what every interface prints and every catalog stores (see README, "The report")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import BaseModel, Field

from introspect.formats import ALL
from introspect.model import Finding, Frozen, Verdict

#: Bumped whenever a parser or a property mapping changes what it reports, so that
#: `introspect rerun --inspector-older-than N` can find images inspected by older code.
INSPECTOR_VERSION = 2

if TYPE_CHECKING:
    Details = BaseModel
else:
    #: Every registered format's details model, told apart by its `format` field.
    Details = Annotated[Union[tuple(f.details for f in ALL)], Field(discriminator="format")]  # noqa: UP007


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
