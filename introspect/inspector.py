"""`inspect()`: one image in, one Report out, whatever the bytes are.

Order of work: read the head and tail once, detect, parse the detected format through the
metered reader, run its safety checks and the rules every image gets, apply the policy, map
the result to properties. An image that cannot be parsed yields an `error` verdict; only a
caller's mistake (a path that does not exist) raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from introspect import properties as props
from introspect import qemu
from introspect.detect import detect
from introspect.errors import ImageError, UsageError
from introspect.formats import BY_NAME, canonical_name
from introspect.formats.base import Format, Head, Inspection
from introspect.model import Finding, Severity, Verdict
from introspect.report import Report
from introspect.safety import (
    DEFAULT_POLICY,
    EMPTY,
    FORMAT_MISMATCH,
    INTERNAL_ERROR,
    POLYGLOT,
    QEMU_SKIPPED,
    VIRTUAL_SIZE_LIMIT,
    VIRTUAL_SIZE_ZERO,
    Policy,
)
from introspect.sources import Budget, ByteSource, FileSource, OpenFileSource, Reader

Source = str | os.PathLike[str] | IO[bytes] | ByteSource

#: Declared formats that the content may satisfy without being the same word: an ISO is a
#: raw image to everyone who reads it byte by byte.
SATISFIES: dict[str, frozenset[str]] = {"raw": frozenset({"raw", "iso"})}


def inspect(
    source: Source,
    *,
    expect: str | None = None,
    policy: Policy | None = None,
    budget: Budget | None = None,
    cross_check: bool = False,
    name: str | None = None,
) -> Report:
    """Inspect one image: a path, an open binary file, or a ByteSource.

    `expect` is the disk_format the image was declared with; a different content is a finding.
    `cross_check` also runs `qemu-img info` on a local path and reports any disagreement.
    """
    if expect is not None and canonical_name(expect) not in BY_NAME:
        raise UsageError(f"unknown format {expect!r}; known: {', '.join(sorted(BY_NAME))}")
    with _opened(source) as byte_source:
        reader = Reader(byte_source, budget)
        path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
        return _inspect(
            reader,
            name=name or byte_source.name,
            expect=canonical_name(expect) if expect else None,
            policy=policy or DEFAULT_POLICY,
            cross_check_path=path if cross_check else None,
        )


@contextmanager
def _opened(source: Source) -> Iterator[ByteSource]:
    if isinstance(source, ByteSource):
        yield source
    elif isinstance(source, str | os.PathLike):
        with FileSource(source) as opened:
            yield opened
    else:
        yield OpenFileSource(source)


def _inspect(
    reader: Reader, *, name: str, expect: str | None, policy: Policy, cross_check_path: str | None
) -> Report:
    if reader.size == 0:
        return Report(
            source=name,
            format=None,
            size=0,
            virtual_size=None,
            verdict=Verdict.ERROR,
            findings=policy.apply([EMPTY.finding("the file is empty: nothing was uploaded")]),
            properties={},
            details=None,
            bytes_read=0,
            reads=0,
        )
    head = Head(reader.head(), reader.tail(), reader.size)
    detection = detect(head)
    fmt = detection.format
    findings: list[Finding] = []
    if detection.polyglot:
        names = ", ".join(f.name for f in (fmt, *detection.others))
        findings.append(
            POLYGLOT.finding(
                f"the file carries the signatures of several formats ({names}); a polyglot can be read "
                "one way by the checker and another by the hypervisor: rebuild the image with one tool"
            )
        )
    if expect is not None and expect != fmt.name and fmt.name not in SATISFIES.get(expect, ()):
        findings.append(
            FORMAT_MISMATCH.finding(
                f"declared as {expect} but the content is {fmt.name}: set disk_format={fmt.name}, "
                f"or convert with `qemu-img convert -O {expect}`"
            )
        )
    inspection = _parse(fmt, reader, policy, findings)
    if inspection is not None:
        findings.extend(_size_findings(inspection.virtual_size, policy))
    findings = policy.apply(findings)
    if inspection is not None and cross_check_path is not None:
        findings.extend(policy.apply(_cross_check(cross_check_path, fmt, inspection, findings)))
    parsed = inspection is not None
    return Report(
        source=name,
        format=fmt.name,
        size=reader.size,
        virtual_size=inspection.virtual_size if inspection else None,
        verdict=policy.verdict(findings, parsed=parsed),
        findings=findings,
        properties=props.properties_of(fmt.name, inspection.details, inspection.virtual_size)
        if inspection
        else {},
        details=inspection.details if inspection else None,
        bytes_read=reader.bytes_read,
        reads=reader.reads,
    )


def _parse(
    fmt: Format[Any], reader: Reader, policy: Policy, findings: list[Finding]
) -> Inspection[Any] | None:
    """Parse and check; a bad image becomes findings and None, never an exception."""
    try:
        inspection = fmt.inspect(reader, policy)
        findings.extend(inspection.findings)
        for check in fmt.checks or ():
            findings.extend(check(inspection.details, policy))
    except ImageError as error:
        findings.append(error.rule.finding(str(error)))
        return None
    except Exception as error:
        findings.append(
            INTERNAL_ERROR.finding(
                f"introspect failed on this {fmt.name} image ({type(error).__name__}: {error}); "
                "please report it with the file"
            )
        )
        return None
    return inspection


def _cross_check(
    path: str, fmt: Format[Any], inspection: Inspection[Any], findings: list[Finding]
) -> list[Finding]:
    """qemu-img's opinion, asked only when nothing already rejects the image (it would follow
    the very backing files and extents we refuse)."""
    if fmt.qemu_name is None:
        return [QEMU_SKIPPED.finding(f"not cross-checked: qemu-img cannot read {fmt.name} images")]
    rejecting = [f.code for f in findings if f.severity == Severity.REJECT]
    if rejecting:
        return [
            QEMU_SKIPPED.finding(
                f"not cross-checked: {', '.join(rejecting)} already rejects it, and qemu-img would act on it"
            )
        ]
    return qemu.cross_check(path, fmt.qemu_name, inspection.virtual_size)


def _size_findings(virtual_size: int | None, policy: Policy) -> Iterator[Finding]:
    if virtual_size == 0:
        yield VIRTUAL_SIZE_ZERO.finding(
            "the image declares a virtual size of 0 bytes: nothing can boot from it"
        )
    elif virtual_size is not None and virtual_size > policy.max_virtual_size:
        yield VIRTUAL_SIZE_LIMIT.finding(
            f"the virtual size {virtual_size} bytes is beyond the policy's limit of "
            f"{policy.max_virtual_size} bytes"
        )
