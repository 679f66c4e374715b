"""The Report: what every interface prints and every catalog stores (see README, "The report")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from introspect.containers.ova import OvaDetails
from introspect.formats import ALL
from introspect.guest.model import GuestDetails
from introspect.model import Finding, Frozen, Verdict

#: Bumped whenever a parser or a property mapping changes what it reports, so that
#: `introspect rerun --inspector-older-than N` can find images inspected by older code.
#: 2: a thin flat VMDK is vmware_disktype=preallocated (was thin), a BusLogic VMDK has no
#: hw_scsi_model (was buslogic), and a createType that is not a word is not written.
#: 3: OVA and OVF are containers (their disks inspected, the OVF's facts as properties); fixed VHDs
#: read their partition table as content; truncated and self-contradicting images are named.
#: 4: the guest pass: os_type, os_distro, os_version, architecture, hw_firmware_type... from the
#: guest's own filesystems, for every format with a guest view.
INSPECTOR_VERSION = 4

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
    container_format: str = Field(
        "bare", description="bare, ova, ovf (a bare descriptor), or the compression wrapper"
    )
    size: int = Field(description="bytes in the file")
    virtual_size: int | None = Field(description="guest-visible disk size in bytes, as qemu-img reports it")
    verdict: Verdict
    findings: list[Finding]
    properties: dict[str, str]
    details: Details | None
    bytes_read: int
    reads: int
    inspector_version: str = str(INSPECTOR_VERSION)
    container: OvaDetails | None = Field(
        None,
        description="what an OVA (or a bare OVF descriptor) says of itself: its entries, its descriptor, "
        "the boot disk and its controller, the manifest; left out of the JSON for other images",
    )
    guest: GuestDetails | None = Field(
        None,
        description="what the guest's own volumes and filesystems say (its operating systems, EFI loaders, "
        "firmware) and what reading them cost; left out of the JSON when the guest pass did not run",
    )
    members: list[Report] = Field(
        default_factory=list,
        description="every disk of an OVA, each inspected in place with its own Report (the boot disk's "
        "format, virtual_size and details are also this Report's); left out of the JSON when empty",
    )

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The Report's schema at the top (as before `members` made it recursive: pydantic would
        give only a `$ref`), its own definition kept in `$defs` for `members` to refer to."""
        schema = super().model_json_schema(*args, **kwargs)
        ref = schema.pop("$ref", None)
        if ref is None:
            return schema
        return {**schema["$defs"][ref.rsplit("/", 1)[-1]], "$defs": schema["$defs"]}

    @model_serializer(mode="wrap")
    def _leave_out_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A bare image's JSON is what it was before OVAs: `container` and `members` only when set."""
        data: dict[str, Any] = handler(self)
        if self.container is None:
            data.pop("container", None)
        if self.guest is None:
            data.pop("guest", None)
        if not self.members:
            data.pop("members", None)
        return data

    @property
    def ok(self) -> bool:
        return self.verdict == Verdict.OK
