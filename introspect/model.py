"""Pydantic models shared by every format: findings, severities, verdicts, geometry.

The Report itself lives in `introspect.report`, because its `details` field is validated by every
format's details model (the one its `format` names) and those models import from here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from enum import Enum, StrEnum
from typing import Any

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
    """Base of every output model: immutable, and unknown fields are a bug, not extra data.

    Built from values introspect computed itself, an output model is constructed without
    validation, as `model_construct` constructs one (its fields, defaults and fields set): the
    types of those values are checked where they are passed, by mypy (pydantic's plugin with
    `init_typed` and `init_forbid_extra`); tests/test_registry.py checks that every fixture's Report
    validates back to itself, and the fuzzer that every Report does. A model costs about a
    microsecond either way (nested ones a little more this way: each is built in Python); what this
    saves is the validators: building each model's on its first use cost a single call ~20 ms
    (importlib.metadata with it, for pydantic's plugin loader). What comes from outside (JSON, a
    database row, a policy file) is validated still: `model_validate*` never calls `__init__`. A
    model an operator writes in code (`Policy`) validates in its own `__init__`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    def __init__(self, /, **fields: Any) -> None:
        try:
            template, required, fresh = _SHAPES[type(self)]
        except KeyError:
            template, required, fresh = _shape(type(self))
        if not required <= fields.keys() <= template.keys():
            missing, unknown = sorted(required - fields.keys()), sorted(fields.keys() - template.keys())
            raise TypeError(f"{type(self).__name__}: missing {missing}, unknown {unknown}") from None
        values = template | fields
        for name, make in fresh.items():
            if name not in fields:
                values[name] = make()
        _set_dict(self, values)
        _set_fields_set(self, set(fields))
        _set_extra(self, None)
        _set_private(self, None)

    # Validation builds its instances itself, as for BaseModel's own `__init__`: without this mark
    # pydantic would hand what it validates to this `__init__` unvalidated (pydantic-settings marks
    # BaseSettings' `__init__` the same way).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


#: A model's fields in order with their defaults (a required field's is None, and it is named in
#: the second item), and the fields whose default is made anew for each instance (a default
#: factory's, or a copy of a mutable default, as pydantic copies it).
_Shape = tuple[dict[str, Any], frozenset[str], dict[str, Callable[[], Any]]]
_SHAPES: dict[type[BaseModel], _Shape] = {}
_IMMUTABLE = (type(None), bool, int, float, str, bytes, tuple, frozenset, Enum)


#: What `model_construct` sets on an instance, set through BaseModel's own slots.
_set_dict, _set_fields_set, _set_extra, _set_private = (
    vars(BaseModel)[slot].__set__
    for slot in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
)


def _shape(model: type[BaseModel]) -> _Shape:
    shape = _SHAPES.get(model)
    if shape is None:
        template: dict[str, Any] = {}
        fresh: dict[str, Callable[[], Any]] = {}
        for name, field in model.model_fields.items():
            template[name] = None if field.is_required() or field.default_factory else field.default
            if field.default_factory is not None:
                fresh[name] = field.default_factory  # type: ignore[assignment]  # (takes no argument here)
            elif not field.is_required() and not isinstance(field.default, _IMMUTABLE):
                fresh[name] = _copies(field.default)
        required = frozenset(name for name, field in model.model_fields.items() if field.is_required())
        shape = _SHAPES[model] = (template, required, fresh)
    return shape


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


def _copies(default: Any) -> Callable[[], Any]:
    return lambda: copy.deepcopy(default)
