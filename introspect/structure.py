"""One way to declare an on-disk structure: its fields, named as in the spec, each beside its code.

    class QCowHeader(BigEndianStructure):  # qcow2.txt "Header", bytes 0-71
        OFFSET: ClassVar[int] = 0

        magic: bytes = chars(4)
        version: int = u32()
        backing_file_offset: int = u64()
        ...

Everything else is derived once, when the class is created: `STRUCT`, the one precompiled
`struct.Struct` (byte order from the base class, no alignment: the layout is the file's), `SIZE`,
`FIELDS` and each field's byte offset (`offset_of("size")`), and the class itself becomes a frozen
slots dataclass. `OFFSET`, declared where the structure has a fixed place in the file, is where
`unpack` looks by default.

A structure is a dataclass (`dataclasses.fields`, `replace` and `asdict` work on it) whose
`__init__`, `__repr__`, `__eq__`, `__hash__` and frozen `__setattr__` are `Structure`'s own, one
shared copy driven by `FIELDS`, rather than code `dataclasses` compiles for each class: ~150
structures at 0.3 ms each were a fifth of a cold `introspect inspect`, for methods that parsers
never call (they build structures with `unpack`; tests compare and print them).

- `Kind.unpack(data, offset)`: one `unpack_from` and one construction, nothing more per call;
  `Kind.read(reader, what, offset)` the same from one metered read of `SIZE` bytes.
- `pack(obj)`: the bytes of a structure, for tests that derive hostile images from real ones with
  `dataclasses.replace` (parsers only read).
- `pad(n)`: reserved bytes that nothing reads. They keep their place in the layout (and `pack`
  writes them as zeros) but are not attributes of the object.
- `unpack_array(Kind, data, count)`: consecutive structures (MBR partition records, LUKS1 key
  slots), at most `count` and at most what `data` holds; the enclosing structure keeps them as a
  `chars(count * Kind.SIZE)` field.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol, Self, TypeVar, dataclass_transform

#: What `unpack` reads from.
Buffer = bytes | bytearray | memoryview


class Reads(Protocol):
    """What `Structure.read` reads through: `introspect.sources.Reader`, metered."""

    def read(self, offset: int, length: int, what: str) -> bytes: ...


class _Field:
    """A field specifier: the struct code of one field, and whether it is an attribute."""

    __slots__ = ("code", "init")

    def __init__(self, code: str, *, init: bool = True) -> None:
        self.code = code
        self.init = init


# Field specifiers. Each returns Any so that `version: int = u32()` type-checks as an int field;
# the value is only read by the metaclass, which removes it from the class.


def u8() -> Any:
    """An unsigned 8-bit integer."""
    return _Field("B")


def u16() -> Any:
    """An unsigned 16-bit integer."""
    return _Field("H")


def u32() -> Any:
    """An unsigned 32-bit integer."""
    return _Field("I")


def u64() -> Any:
    """An unsigned 64-bit integer."""
    return _Field("Q")


def i8() -> Any:
    """A signed 8-bit integer."""
    return _Field("b")


def boolean() -> Any:
    """One byte read as a bool (0 is False)."""
    return _Field("?")


def char() -> Any:
    """One byte, as a bytes object of length 1."""
    return _Field("c")


def chars(size: int) -> Any:
    """`size` bytes, kept as they are (decode them with `introspect.decode`)."""
    return _Field(f"{size}s")


def pad(size: int, *, init: Literal[False] = False) -> Any:
    """`size` reserved bytes: part of the layout, not of the object. Declare them as
    `reserved: None = pad(n)`, named as the spec names them."""
    return _Field(f"{size}x", init=init)


@dataclass_transform(frozen_default=True, field_specifiers=(u8, u16, u32, u64, i8, boolean, char, chars, pad))
class _StructureType(type):
    """Turns a class body of field specifiers into a frozen slots dataclass with its Struct."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> Any:
        annotations: dict[str, Any] = namespace.get("__annotations__", {})
        if not any(hasattr(base, "BYTE_ORDER") for base in bases):  # the bases below: no layout
            return super().__new__(mcls, name, bases, namespace, **kwargs)
        specs = {key: value for key, value in namespace.items() if isinstance(value, _Field)}
        if any(hasattr(base, "FIELDS") for base in bases):
            raise TypeError(f"{name}: a structure cannot extend another; declare all its fields")
        if unannotated := specs.keys() - annotations.keys():
            raise TypeError(f"{name}: fields without a type annotation: {', '.join(sorted(unannotated))}")
        order = next(base.BYTE_ORDER for base in bases if hasattr(base, "BYTE_ORDER"))
        code = order
        offsets: dict[str, int] = {}
        fields: list[str] = []
        for key, annotation in list(annotations.items()):
            spec = namespace.get(key)
            if not isinstance(spec, _Field):
                if str(annotation).split("[", 1)[0].endswith("ClassVar"):
                    continue
                raise TypeError(f"{name}.{key} has no struct code (u32(), chars(n), pad(n)...)")
            del namespace[key]
            offsets[key] = struct.calcsize(code)
            code += spec.code
            if spec.init:
                fields.append(key)
            else:
                del annotations[key]
        layout = struct.Struct(code)
        namespace.update(
            __slots__=tuple(fields),
            STRUCT=layout,
            SIZE=layout.size,
            FIELDS=tuple(fields),
            _OFFSETS=offsets,
            _AT=namespace.get("OFFSET", 0),
            _GET_VALUES=_values_getter(fields),
        )
        made = super().__new__(mcls, name, bases, namespace, **kwargs)
        # Fields only: the methods are Structure's (see the module docstring).
        cls: Any = dataclasses.dataclass(init=False, repr=False, eq=False)(made)
        cls._make = _maker(cls, fields)
        return cls


def _values_getter(fields: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """`get(obj)`: the tuple of the fields' values, read in C (a VHD's footer and its copy, 18 fields
    each, are compared on every inspection)."""
    if len(fields) > 1:
        return operator.attrgetter(*fields)  # a tuple of the values
    if fields:
        one = operator.attrgetter(fields[0])  # the value itself: made a tuple of one
        return staticmethod(lambda obj: (one(obj),))
    return staticmethod(lambda obj: ())


def _maker(cls: type, fields: list[str]) -> Callable[[tuple[Any, ...]], Any]:
    """`make(values)`: an object of `cls` from unpacked values, each slot set through its own
    descriptor, one line per field. The frozen dataclass `__init__` goes through
    `object.__setattr__` by name for every field and takes twice as long, and `unpack` is on every
    inspection's path. The code is generated at the first unpack (so importing the formats costs
    nothing more) and kept: the class's `_make` is replaced by it."""
    made: list[Callable[[tuple[Any, ...]], Any]] = []

    def make(values: tuple[Any, ...]) -> Any:
        if not made:
            namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
            lines = ["def make(values):", "    obj = new(cls)"]
            for index, name in enumerate(fields):
                namespace[f"set{index}"] = cls.__dict__[name].__set__
                lines.append(f"    set{index}(obj, values[{index}])")
            lines.append("    return obj")
            exec("\n".join(lines), namespace)
            made.append(namespace["make"])
            type.__setattr__(cls, "_make", namespace["make"])
        return made[0](values)

    return make


class Structure(metaclass=_StructureType):
    """Base of every declared structure; subclass `BigEndianStructure` or `LittleEndianStructure`."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Fields by position or name, all of them, as a dataclass takes them."""
        name = type(self).__name__
        fields = self.FIELDS
        if len(args) > len(fields):
            raise TypeError(f"{name}() takes {len(fields)} positional arguments but {len(args)} were given")
        values = dict(zip(fields, args, strict=False))
        for key, value in kwargs.items():
            if key not in fields:
                raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            values[key] = value
        if missing := [key for key in fields if key not in values]:
            raise TypeError(f"{name}() missing required arguments: {', '.join(map(repr, missing))}")
        for key in fields:
            object.__setattr__(self, key, values[key])

    def _values(self) -> tuple[Any, ...]:
        return type(self)._GET_VALUES(self)

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.FIELDS)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Structure):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    STRUCT: ClassVar[struct.Struct]
    SIZE: ClassVar[int]
    FIELDS: ClassVar[tuple[str, ...]]
    _OFFSETS: ClassVar[dict[str, int]]
    _AT: ClassVar[int]
    _make: ClassVar[Callable[[tuple[Any, ...]], Any]]
    _GET_VALUES: ClassVar[Callable[[Any], tuple[Any, ...]]]

    @classmethod
    def unpack(cls, data: Buffer, offset: int | None = None) -> Self:
        """The structure at `offset` of `data` (by default at `OFFSET`, or 0)."""
        structure: Self = cls._make(cls.STRUCT.unpack_from(data, cls._AT if offset is None else offset))
        return structure

    @classmethod
    def read(cls, reader: Reads, what: str, offset: int | None = None) -> Self:
        """The structure at `offset` of the file (by default at `OFFSET`), in one metered read of
        `SIZE` bytes; `what` names it in errors."""
        structure: Self = cls._make(
            cls.STRUCT.unpack(reader.read(cls._AT if offset is None else offset, cls.SIZE, what))
        )
        return structure

    @classmethod
    def offset_of(cls, name: str) -> int:
        """The byte offset of field `name` (reserved bytes included) within the structure."""
        try:
            return cls._OFFSETS[name]
        except KeyError:
            raise KeyError(f"{cls.__name__} has no field {name!r}") from None


class BigEndianStructure(Structure):
    """A structure whose numbers are big-endian."""

    __slots__ = ()
    BYTE_ORDER: ClassVar[str] = ">"


class LittleEndianStructure(Structure):
    """A structure whose numbers are little-endian."""

    __slots__ = ()
    BYTE_ORDER: ClassVar[str] = "<"


StructureT = TypeVar("StructureT", bound=Structure)


def pack(value: Structure) -> bytes:
    """The bytes of `value`, reserved bytes zeroed: what `unpack` reads back."""
    kind = type(value)
    return kind.STRUCT.pack(*[getattr(value, name) for name in kind.FIELDS])


def unpack_array(kind: type[StructureT], data: Buffer, count: int, offset: int = 0) -> list[StructureT]:
    """Up to `count` consecutive `kind` structures from `offset`: fewer when `data` ends first."""
    count = max(0, min(count, (len(data) - offset) // kind.SIZE))
    window = memoryview(data)[offset : offset + count * kind.SIZE]
    return list(map(kind._make, kind.STRUCT.iter_unpack(window)))
