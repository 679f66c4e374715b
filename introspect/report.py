"""The Report: what every interface prints and every catalog stores (see README, "The report")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from introspect.formats import BY_NAME, every_format, imported
from introspect.guest.model import GuestDetails
from introspect.model import Finding, Frozen, Verdict

if TYPE_CHECKING:
    from introspect.containers.ova import OvaDetails

#: Bumped whenever a parser or a property mapping changes what it reports, so that
#: `introspect rerun --inspector-older-than N` can find images inspected by older code.
#: 2: a thin flat VMDK is vmware_disktype=preallocated (was thin), a BusLogic VMDK has no
#: hw_scsi_model (was buslogic), and a createType that is not a word is not written.
#: 3: OVA and OVF are containers (their disks inspected, the OVF's facts as properties); fixed VHDs
#: read their partition table as content; truncated and self-contradicting images are named.
#: 4: the guest pass: os_type, os_distro, os_version, architecture, hw_firmware_type... from the
#: guest's own filesystems, for every format with a guest view.
#: 5: what qemu's in-place CID rewrite leaves after a VMDK descriptor's NUL is no finding (1 in
#: about 100 of qemu-img's VMDKs were rejected, or an error, for it); a cut qed is image.truncated
#: (its L2 tables and data clusters are checked against the end of the file).
#: 6: a qcow2 cut inside its last data cluster, L2 table or refcount block is image.truncated; a
#: qed of many small L2 tables is no longer image.read_budget.
INSPECTOR_VERSION = 6

#: How a lazily typed field is serialized: as the model its value is (pydantic's `Any` does that).
_AS_ITS_OWN_MODEL = core_schema.simple_ser_schema("any")


class _ByFormat:
    """`details`: the details model of the format their `format` field names, imported only when
    a value names it (a Report of a qcow2 never builds the VMDK models). Serialized as the model
    they are; the JSON schema is the union of every registered format's model, told apart by
    `format` (every format loaded, only when a schema is asked for)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _details_of_named_format,
            serialization=_AS_ITS_OWN_MODEL,
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        models = {fmt.name: _core_schema(fmt.details) for fmt in every_format()}
        return handler(core_schema.tagged_union_schema(models, discriminator="format"))


class _Imported:
    """A field whose model lives in a module imported only when a value needs it (an OVA's
    `container`: the OVA reader and the OVF parser are not loaded for a bare qcow2)."""

    def __init__(self, module: str, model: str) -> None:
        self.module, self.model = module, model

    def load(self) -> type[BaseModel]:
        model: type[BaseModel] = getattr(imported(self.module), self.model)
        return model

    def validate(self, value: Any) -> BaseModel:
        model = self.load()
        return value if type(value) is model else model.model_validate(value)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=_AS_ITS_OWN_MODEL,
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        model = _core_schema(self.load())
        # As a definition and a reference to it: the model in `$defs`, as a model field's would be.
        reference = core_schema.definition_reference_schema(model["ref"])
        return handler(core_schema.definitions_schema(reference, [model]))


def _core_schema(model: type[BaseModel]) -> CoreSchema:
    """A model's core schema, built now if its build was deferred (`Frozen` defers it)."""
    model.model_rebuild()
    return model.__pydantic_core_schema__


def _details_of_named_format(value: Any) -> BaseModel:
    if isinstance(value, BaseModel):
        name = getattr(value, "format", None)
    elif isinstance(value, dict):
        name = value.get("format")
    else:  # a ValueError: pydantic makes it a ValidationError (a TypeError would escape)
        raise ValueError("details are an object with a `format` field")  # noqa: TRY004
    entry = BY_NAME.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"details of an unknown format {name!r}; known: {', '.join(sorted(BY_NAME))}")
    model: type[BaseModel] = entry.load().details
    return value if type(value) is model else model.model_validate(value)


if TYPE_CHECKING:
    Details = BaseModel
    Container = OvaDetails
else:
    Details = Annotated[BaseModel, _ByFormat()]
    Container = Annotated[BaseModel, _Imported("introspect.containers.ova", "OvaDetails")]


def _is_none(value: Any) -> bool:
    return value is None


def _is_empty(value: Any) -> bool:
    return not value


class Report(Frozen):
    """One image's inspection. `properties` is exactly what would be written to the catalog. A
    bare image's JSON is what it was before OVAs and the guest pass: `container`, `guest` and
    `members` are left out when they hold nothing (`exclude_if`, in the serializer's own pass)."""

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
    container: Container | None = Field(
        None,
        exclude_if=_is_none,
        description="what an OVA (or a bare OVF descriptor) says of itself: its entries, its descriptor, "
        "the boot disk and its controller, the manifest; left out of the JSON for other images",
    )
    guest: GuestDetails | None = Field(
        None,
        exclude_if=_is_none,
        description="what the guest's own volumes and filesystems say (its operating systems, EFI loaders, "
        "firmware) and what reading them cost; left out of the JSON when the guest pass did not run",
    )
    members: list[Report] = Field(
        default_factory=list,
        exclude_if=_is_empty,
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

    @property
    def ok(self) -> bool:
        return self.verdict == Verdict.OK
